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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

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
        """The part of the config that determines the stage's output."""
        out = {}
        for name, info in type(self).model_fields.items():
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            if not extra.get("volatile"):
                out[name] = getattr(self, name)
        return redact(json.loads(json.dumps(out, default=str)))

    def config_hash(self) -> str:
        return hash_obj(self.hashable())


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


# Stage configs by name, in pipeline order (prepare, distill, audit, train, merge, eval). Later stages register here.
STAGE_CONFIGS: dict[str, type[StageConfig]] = {
    "prepare": PrepareConfig,
    "merge": MergeConfig,
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
        data[stage] = {**section, **vals}
    data.update(top_overrides or {})
    return validate(data, source, lines, cli_names)


def config_from_file(path: str | Path) -> Any:
    """Load and validate a config file without overrides (used by tests that check shipped configs)."""
    return load_config(path)
