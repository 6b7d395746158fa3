"""Reading the rows to audit: a run's distill output joined to its prompts, or any dataset file.

Every input row becomes an `AuditRow`: the prompt the student sees, the target it is trained to produce
(`completion`), the original remainder where there is one (`reference`, for the paper's upper-case rule) and the
finish reason. The row as read is kept in `original`, so the filtered output (`audit/data.jsonl`) holds kept rows in
their input schema — for distill input, exactly the distill schema that `nift train` reads.

Formats (one per input; `auto` decides from the first row's fields and says which it chose):

- `distill`: `{id, completion, finish_reason, ...}`; prompt and reference come from the run's `prepare/data.jsonl`
  (joined by id through a byte-offset index, so memory stays small), unless the row carries a `prompt`.
- `prepare`: `{id, prompt, reference}`: the original document; the target is the reference (the paper's
  "undistilled" data, and the "Original text" row of its Table 8).
- `alpaca`: `{instruction, input?, output}` (the Table-8 comparison row).
- `text`: one text field (e.g. generated articles).
- `chat`: `messages: [{role, content}]` or ShareGPT `conversations: [{from, value}]`; the target is the last
  assistant turn (empty, and so flagged `empty`, when there is none).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nift.errors import BadRow, InputError
from nift.io import JsonlIndex, iter_records

FORMATS = ("distill", "prepare", "alpaca", "text", "chat")
_ROLES = {"human": "User", "user": "User", "gpt": "Assistant", "assistant": "Assistant", "system": "System",
          "chatgpt": "Assistant", "bing": "Assistant", "bard": "Assistant", "model": "Assistant"}


@dataclass
class AuditRow:
    id: str
    dataset: str
    completion: str
    prompt: str | None = None
    reference: str | None = None
    finish_reason: str | None = None
    judge_doc: str = ""  # what the judge reads as the full training example
    original: dict[str, Any] = field(default_factory=dict)
    where: str = ""


@dataclass(frozen=True)
class Dataset:
    """One audited input: a file (or hf: id) in one format, or this run's distill output."""

    name: str
    path: str
    format: str
    prepare: str | None = None  # the prepare/data.jsonl a distill file is joined to


def join_text(prompt: str, completion: str) -> str:
    """Prompt + continuation as one document; prepare cuts after a word, so add a space only where none is."""
    if not prompt or not completion or prompt[-1].isspace() or completion[0].isspace():
        return prompt + completion
    return prompt + " " + completion


# ----------------------------------------------------------------------------------------------- formats


def first_row(path: str) -> dict[str, Any]:
    for _where, obj in iter_records(path):
        if isinstance(obj, BadRow):
            raise InputError(f"{obj} (cannot tell the format of {path} from it; set format)")
        return obj
    raise InputError(f"{path}: no rows")


def detect_format(row: dict[str, Any], text_field: str, path: str) -> str:
    """The format of a dataset from its first row; explicit and logged by the caller, never silent."""
    keys = set(row)
    if "completion" in keys:
        return "distill"
    if {"instruction", "output"} <= keys:
        return "alpaca"
    if "messages" in keys or "conversations" in keys:
        return "chat"
    if {"prompt", "reference"} <= keys:
        return "prepare"
    if text_field in keys:
        return "text"
    raise InputError(
        f"{path}: cannot tell the format from the first row's fields ({', '.join(sorted(keys)[:12]) or 'none'}); "
        f"set format to one of {', '.join(FORMATS)} (and text_field for 'text')"
    )


def sibling_prepare(distill_file: str) -> str | None:
    """A distill/data.jsonl belongs to a run whose prepare/data.jsonl lies beside its folder."""
    cand = Path(distill_file).resolve().parent.parent / "prepare" / "data.jsonl"
    return str(cand) if cand.is_file() else None


# ---------------------------------------------------------------------------------------------- joining


def _prepare_id(row: Any, where: str) -> str:
    if not isinstance(row, dict) or "id" not in row:
        raise InputError(f"{where}: not a prepare row (no id); re-run nift prepare")
    return str(row["id"])


def prepare_index(path: str) -> JsonlIndex:
    """Prompt and reference of a run's prepare rows by id, read on demand (memory: one offset per row)."""
    return JsonlIndex(path, _prepare_id)


# ---------------------------------------------------------------------------------------------- normalising


def _str_field(obj: dict[str, Any], key: str, where: str, optional: bool = False) -> str | None:
    if key not in obj or obj[key] is None:
        if optional:
            return None
        if key in obj:
            raise BadRow("null_field", f"{where}: field {key!r} is null")
        fields = ", ".join(list(obj)[:12]) or "none"
        raise BadRow("missing_field", f"{where}: no field {key!r} (fields: {fields})")
    v = obj[key]
    if not isinstance(v, str):
        raise BadRow("not_a_string", f"{where}: field {key!r} is {type(v).__name__}, not a string")
    return v


def _chat(obj: dict[str, Any], where: str) -> tuple[str | None, str, str]:
    turns = obj.get("messages", obj.get("conversations"))
    if not isinstance(turns, list) or not turns:
        raise BadRow("bad_messages", f"{where}: 'messages'/'conversations' must be a non-empty list")
    rendered: list[tuple[str, str]] = []
    for i, t in enumerate(turns):
        if not isinstance(t, dict):
            raise BadRow("bad_messages", f"{where}: turn {i} is not an object")
        role = t.get("role", t.get("from"))
        content = t.get("content", t.get("value"))
        if not isinstance(role, str) or not isinstance(content, str):
            raise BadRow("bad_messages", f"{where}: turn {i} needs string role/content (or from/value)")
        rendered.append((_ROLES.get(role.lower(), role.capitalize()), content))
    lines = [f"{r}: {c}" for r, c in rendered]
    last = max((i for i, (r, _) in enumerate(rendered) if r == "Assistant"), default=None)
    if last is None:  # nothing to train on: an empty target, so the row is flagged `empty` (not kept unflagged)
        return "\n".join(lines), "", "\n".join(lines)
    prompt = "\n".join(lines[:last]) or None
    return prompt, rendered[last][1], "\n".join(lines)


def normalise(obj: dict[str, Any], fmt: str, where: str, dataset: str, text_field: str,
              prepare: JsonlIndex | None) -> AuditRow:
    """One input row as an AuditRow; raises BadRow naming the file, line and field."""
    row_id = str(obj["id"]) if obj.get("id") is not None else where
    if fmt == "distill":
        completion = _str_field(obj, "completion", where)
        prompt = _str_field(obj, "prompt", where, optional=True)
        reference = _str_field(obj, "reference", where, optional=True)
        if prepare is not None and (prompt is None or reference is None):
            prep = prepare.get(row_id)
            if prep is None:
                raise BadRow("not_in_prepare", f"{where}: id {row_id!r} is not in {prepare.path}")
            prompt = prompt if prompt is not None else prep.get("prompt")
            reference = reference if reference is not None else prep.get("reference")
        if prompt is None:
            raise BadRow("no_prompt", f"{where}: no prompt for id {row_id!r}: the row has no 'prompt' and no "
                         "prepare/data.jsonl was found beside its run")
        fr = obj.get("finish_reason")
        return AuditRow(row_id, dataset, completion, prompt, reference, fr if isinstance(fr, str) else None,
                        join_text(prompt, completion), obj, where)
    if fmt == "prepare":
        prompt = _str_field(obj, "prompt", where)
        reference = _str_field(obj, "reference", where)
        return AuditRow(row_id, dataset, reference, prompt, reference, None, prompt + reference, obj, where)
    if fmt == "alpaca":
        instruction = _str_field(obj, "instruction", where)
        inp = _str_field(obj, "input", where, optional=True) or ""
        output = _str_field(obj, "output", where)
        prompt = instruction + ("\n\n" + inp if inp.strip() else "")
        return AuditRow(row_id, dataset, output, prompt, None, None, prompt + "\n\n" + output, obj, where)
    if fmt == "text":
        text = _str_field(obj, text_field, where)
        return AuditRow(row_id, dataset, text, None, None, None, text, obj, where)
    if fmt == "chat":
        prompt, completion, doc = _chat(obj, where)
        return AuditRow(row_id, dataset, completion, prompt, None, None, doc, obj, where)
    raise ValueError(f"unknown format {fmt!r}")


def iter_rows(ds: Dataset, text_field: str, on_bad_row: str, skipped: Counter) -> Iterator[AuditRow]:
    """Stream one dataset's rows; a bad row stops with its file and line, or is counted when skipping."""
    prepare = prepare_index(ds.prepare) if ds.prepare else None
    try:
        for where, obj in iter_records(ds.path):
            try:
                if isinstance(obj, BadRow):
                    raise obj
                yield normalise(obj, ds.format, where, ds.name, text_field, prepare)
            except BadRow as e:
                if on_bad_row == "error":
                    raise InputError(f"{e} (set on_bad_row: skip to count and skip such rows)") from None
                skipped[e.reason] += 1
    finally:
        if prepare is not None:
            prepare.close()
