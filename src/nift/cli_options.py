"""Command-line options from config models: one `--flag` per field of a stage's config (its help and default taken
from the field), the values given turned back into config overrides, and `--set KEY=VALUE` for `nift run`.

Used by `nift.cli`; kept apart so that the parser there stays about commands, not about how a field becomes a flag.
"""

from __future__ import annotations

import argparse
import json
import types
import typing
from typing import Any

from pydantic import BaseModel

from nift.config import StageConfig

_NONE_WORDS = {"none", "null"}


def _unwrap(ann: Any) -> tuple[Any, bool]:
    """(inner type, allows None) for `X | None` annotations."""
    origin = typing.get_origin(ann)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        return (args[0] if len(args) == 1 else ann), len(args) < len(typing.get_args(ann))
    return ann, False


def _fmt_default(value: Any) -> str:
    if isinstance(value, (list, dict)):
        return json.dumps(value) if value else ("[]" if isinstance(value, list) else "{}")
    return "null" if value is None else str(value)


def _is_model(ann: Any) -> bool:
    return isinstance(ann, type) and issubclass(ann, BaseModel)


def add_config_options(parser: argparse.ArgumentParser, cls: type[StageConfig]) -> None:
    """One `--flag` per config field, its help and default taken from the field. A field that is itself a model
    (e.g. `teacher: BackendConfig`) gets one dotted flag per sub-field: `--teacher.model`, `--teacher.rpm`."""
    group = parser.add_argument_group(f"{cls.stage} settings (also settable under `{cls.stage}:` in --config)")
    for name, info in cls.model_fields.items():
        ann, _ = _unwrap(info.annotation)
        if _is_model(ann):
            parent_default = info.get_default(call_default_factory=True)
            sub = parser.add_argument_group(f"{cls.stage}.{name}: {(info.description or '').replace('%', '%%')} "
                                            f"(also settable under `{cls.stage}: {name}:` in --config)")
            for sub_name, sub_info in ann.model_fields.items():
                _add_option(sub, f"--{name.replace('_', '-')}.{sub_name.replace('_', '-')}", f"cfg__{name}__{sub_name}",
                            sub_info, getattr(parent_default, sub_name, None) if parent_default is not None
                            else sub_info.get_default(call_default_factory=True))  # optional model: its defaults
            continue
        _add_option(group, "--" + name.replace("_", "-"), f"cfg__{name}", info,
                    info.get_default(call_default_factory=True))


def _add_option(group: Any, flag: str, dest: str, info: Any, default: Any) -> None:
    ann, nullable = _unwrap(info.annotation)
    desc = (info.description or "").replace("%", "%%")
    kwargs: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS}
    origin = typing.get_origin(ann)
    if ann is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif origin is list:
        kwargs.update(nargs="+", metavar="VALUE")
    elif origin is dict or ann is dict:
        kwargs.update(type=_json_arg(flag), metavar="JSON")
    elif origin is typing.Literal:
        kwargs.update(choices=list(typing.get_args(ann)))
    else:
        kwargs["metavar"] = getattr(ann, "__name__", "VALUE").upper()
    if nullable and ann is not bool:
        desc += " Use 'null' for none."
    group.add_argument(flag, help=f"{desc} (default: {_fmt_default(default)})", **kwargs)


def _json_arg(flag: str):
    def parse(s: str) -> Any:
        try:
            return json.loads(s)
        except json.JSONDecodeError as e:
            raise argparse.ArgumentTypeError(f"{flag} expects JSON: {e}") from None

    return parse


def collect_overrides(args: argparse.Namespace, cls: type[StageConfig]) -> tuple[dict, dict]:
    """Values given on the command line for one stage, and the flag behind each (for error messages)."""
    vals: dict[str, Any] = {}
    names: dict[tuple[str, ...], str] = {}
    for key, value in vars(args).items():
        if not key.startswith("cfg__"):
            continue
        path = key[5:].split("__")
        info = cls.model_fields[path[0]]
        if len(path) == 2:
            info = _unwrap(info.annotation)[0].model_fields[path[1]]
        _, nullable = _unwrap(info.annotation)
        if nullable and isinstance(value, str) and value.lower() in _NONE_WORDS:
            value = None
        target = vals
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = value
        names[(cls.stage, *path)] = "--" + ".".join(p.replace("_", "-") for p in path)
    return vals, names


def parse_sets(sets: list[str]) -> tuple[dict[str, Any], dict[str, Any], dict[tuple[str, ...], str]]:
    """`--set a.b.c=VALUE` -> nested overrides (value read as YAML), top-level ones, and the flag behind each."""
    import yaml

    from nift.errors import ConfigError

    nested: dict[str, Any] = {}
    top: dict[str, Any] = {}
    names: dict[tuple[str, ...], str] = {}
    for item in sets:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.lr=1e-4")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        parts = key.strip().split(".")
        names[tuple(parts)] = f"--set {key}"
        if len(parts) == 1:
            top[parts[0]] = value
            continue
        node = nested.setdefault(parts[0], {})
        for part in parts[1:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested, top, names
