"""Configuration: the `StageConfig` base class, config hashing, redaction of secrets, and loading one YAML file
with CLI overrides (YAML < CLI) into one pydantic model per stage.

Every field carries its own description, which becomes its `--help` text; unknown keys, wrong types and
out-of-range values are errors that name the key, the file and the line. Defaults are the paper's.

A YAML file may hold any or all stages:

    run_dir: runs/quickstart
    prepare:
      input: [corpus.jsonl]
      n_docs: 80000
    train:
      lr: 5.0e-5

Each stage's config class sits beside its stage (`nift.audit.config.AuditConfig`, `nift.prepare.PrepareConfig`,
...; `TrainConfig` is still here); the teacher/judge settings are `nift.llm.config`. The stages, their names, their
order and where their config classes live are `nift.stages`: `stage_configs()` imports the classes from there and
`nift_config_model()` builds the whole-file model from them, so this module imports no stage.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

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


class NoBoolNumbers(BaseModel):
    """pydantic reads `true` as 1 for an int field: `n_docs: true` would sample one document. Refuse it."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, v: Any, info: Any) -> Any:
        if isinstance(v, bool) and info.field_name in cls.model_fields and \
                _numbers_only(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"expected a number, got the boolean {str(v).lower()}")
        return v


class StageConfig(NoBoolNumbers):
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


@functools.cache
def stage_configs() -> dict[str, type[StageConfig]]:
    """Every stage's config class by name, in the registry's (pipeline) order. Each class sits beside its stage and
    is imported now, by the name `nift.stages` gives it; it names its stage in `StageConfig.stage`."""
    classes = {name: s.config_class() for name, s in stages.STAGES.items()}
    wrong = {name: cls.stage for name, cls in classes.items() if cls.stage != name}
    if wrong:
        raise RuntimeError(f"stage configs name other stages than the registry does: {wrong}")
    return classes


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
    for name, cls in stage_configs().items():
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
