"""Training data for `nift train`: where (prompt, completion) pairs come from, and their token ids and labels
(`load_features`: load, hold out the eval split, encode with the template).

- `distill` / `audit`: `run_dir/<stage>/data.jsonl` (`{id, completion, ...}`) joined by `id` to
  `run_dir/prepare/data.jsonl` (`{id, prompt, ...}`), in that file's order.
- `reference`: `run_dir/prepare/data.jsonl` with its `reference` field as the completion (the paper's "undistilled"
  baseline: the original second half of each document).
- a file (`.jsonl`, or `.json` holding a list) in one of three formats, chosen with `data_format` (never guessed
  from the column names):
  - `prompt_completion`: `{prompt, completion}` (field names configurable);
  - `alpaca` (LLaMA-Factory): `{instruction, input?, output, system?, history?}`; the prompt is the instruction,
    then a newline and the input when there is one (as LLaMA-Factory joins them); `history` is a list of earlier
    `[instruction, output]` turns;
  - `sharegpt` (LLaMA-Factory): `{conversations: [{from: human|user, value}, {from: gpt|assistant, value}, ...],
    system?}`, or the OpenAI form `{messages: [{role, content}, ...]}`; a leading `system` message becomes the system
    prompt.

Rows whose completion is null, empty or only whitespace (a failed teacher call, say) are skipped and counted; a row
without the completion field at all, malformed JSON, an `id` missing from prepare — each is an error naming file and
line.

A distill / audit row whose `finish_reason` says the teacher hit max_tokens (`length`, `max_tokens`) holds a text
that did not end there. `cut_at_max_tokens` decides: `no_eos` trains on it without EOS, `drop` leaves it out; both
are counted. Every other example ends where the text ends (a teacher's own stop, prepare's `reference`, which runs to
the end of its document, a file's completion) and gets EOS.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nift.errors import InputError
from nift.io import JsonlIndex, enumerate_jsonl, iter_json_list
from nift.prompts.encoder import Conversation, TemplateEncoder
from nift.train.config import TrainConfig

STAGE_SOURCES = ("distill", "audit")
CUT_POLICIES = ("no_eos", "drop")
# finish_reason values of a teacher output cut at its token limit (OpenAI / vLLM / hf: length; Anthropic: max_tokens)
CUT_REASONS = ("length", "max_tokens")
SOURCES = (*STAGE_SOURCES, "reference")
FORMATS = ("prompt_completion", "alpaca", "sharegpt")
_USER_ROLES = {"human", "user"}
_ASSISTANT_ROLES = {"gpt", "assistant", "model"}


@dataclass
class DataSpec:
    """The resolved data source: the upstream stage folders or file it reads (for the manifest)."""

    source: str  # distill | audit | reference | file
    stage_inputs: dict[str, Path] = field(default_factory=dict)
    file: Path | None = None


def resolve_source(data: str, run_dir: str | Path) -> DataSpec:
    """Check that the chosen data exists, before anything expensive, with a message that says what to run."""
    run_dir = Path(run_dir)
    prepare = run_dir / "prepare"
    if data in SOURCES:
        needed = {"prepare": prepare} if data == "reference" else {data: run_dir / data, "prepare": prepare}
        for name, d in needed.items():
            if not (d / "manifest.json").is_file():
                hint = {"prepare": "run `nift prepare` first",
                        "distill": "run `nift distill` first (or train on the undistilled text with --data reference)",
                        "audit": "run `nift audit` first (or train on the unfiltered data with --data distill)"}[name]
                raise InputError(f"{d}/manifest.json is missing: {hint}")
        return DataSpec(data, needed)
    p = Path(data).expanduser()
    if not p.is_file():
        raise InputError(f"--data {data!r}: not one of {', '.join(SOURCES)} and not a file; give a .jsonl or .json "
                         "file of training pairs, or the name of a stage whose output to train on")
    if p.suffix not in (".jsonl", ".json"):
        raise InputError(f"--data {p}: expected a .jsonl or .json file")
    return DataSpec("file", {}, p)


def _rows(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, row) for a JSONL file (one object per line) or a JSON file holding a list."""
    if path.suffix == ".json":
        yield from iter_json_list(path)
        return
    for n, row in enumerate_jsonl(path):  # BadRow: an InputError naming the line
        yield f"{path}:{n}", row


def _field(row: Any, where: str, name: str, hint: str = "") -> Any:
    if not isinstance(row, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if name not in row:
        raise InputError(f"{where}: missing field {name!r} (fields: {', '.join(sorted(row)) or 'none'}){hint}")
    return row[name]


def _text(value: Any, where: str, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"{where}: field {name!r} must be a string, got {type(value).__name__}")
    return value


def _blank(completion: str | None) -> bool:
    """Nothing to learn: null, empty or only whitespace (an all-whitespace file once trained to loss 15)."""
    return not completion or not completion.strip()


def load_examples(spec: DataSpec, run_dir: str | Path, data_format: str = "prompt_completion",
                  prompt_field: str = "prompt", completion_field: str = "completion",
                  limit: int | None = None, cut_at_max_tokens: str = "no_eos") -> tuple[list[Conversation], Counter]:
    """All usable examples in source order (the first `limit`), and counts of what was skipped and why."""
    skipped: Counter = Counter()
    if spec.source in STAGE_SOURCES:
        it = _join_stage(spec.stage_inputs[spec.source] / "data.jsonl", Path(run_dir) / "prepare" / "data.jsonl",
                         skipped, cut_at_max_tokens)
    elif spec.source == "reference":
        it = _pairs(Path(run_dir) / "prepare" / "data.jsonl", "prompt", "reference", skipped)
    elif data_format == "prompt_completion":
        it = _pairs(spec.file, prompt_field, completion_field, skipped)
    elif data_format == "alpaca":
        it = _alpaca(spec.file, skipped)
    elif data_format == "sharegpt":
        it = _sharegpt(spec.file, skipped)
    else:  # pragma: no cover - the config restricts the choices
        raise InputError(f"unknown data format {data_format!r}")
    out: list[Conversation] = []
    for conv in it:
        if limit is not None and len(out) >= limit:
            break
        out.append(conv)
    return out, skipped


def _row_id(row: dict, where: str) -> str:
    rid = row.get("id")
    return str(rid) if rid is not None else where


def _pairs(path: Path, pf: str, cf: str, skipped: Counter) -> Iterator[Conversation]:
    hint = ""
    for where, row in _rows(path):
        if isinstance(row, dict) and cf not in row and not hint:
            if "output" in row and "instruction" in row:
                hint = "; this looks like alpaca data: use --data-format alpaca"
            elif "conversations" in row or "messages" in row:
                hint = "; this looks like sharegpt data: use --data-format sharegpt"
            else:
                hint = f"; name the field that holds it with --completion-field (the prompt's: --prompt-field {pf})"
        prompt = _text(_field(row, where, pf, hint), where, pf)
        completion = _text(_field(row, where, cf, hint), where, cf)
        if not prompt:
            raise InputError(f"{where}: field {pf!r} is empty")
        if _blank(completion):
            skipped["empty_completion"] += 1
            continue
        yield Conversation.single(prompt, completion, _row_id(row, where), where)


def _join_stage(data: Path, prepare: Path, skipped: Counter, cut_policy: str = "no_eos") -> Iterator[Conversation]:
    if cut_policy not in CUT_POLICIES:  # pragma: no cover - the config restricts the choices
        raise InputError(f"unknown cut_at_max_tokens {cut_policy!r}")
    with JsonlIndex(prepare, _prepare_id) as prompts:  # prepare's rows by id: offsets in memory, not prompts
        yield from _joined(data, prepare, prompts, skipped, cut_policy)


def _prepare_id(row: Any, where: str) -> str:
    _field(row, where, "prompt")  # a prepare row without a prompt fails here, before any training row is read
    return str(_field(row, where, "id"))


def _joined(data: Path, prepare: Path, prompts: JsonlIndex, skipped: Counter, cut_policy: str
            ) -> Iterator[Conversation]:
    seen: set[str] = set()
    for where, row in _rows(data):
        rid = str(_field(row, where, "id"))
        completion = _text(_field(row, where, "completion"), where, "completion")
        if rid in seen:
            raise InputError(f"{where}: id {rid!r} appears twice; the join with prepare/data.jsonl needs unique ids")
        seen.add(rid)
        if rid not in prompts:
            raise InputError(f"{where}: id {rid!r} is not in {prepare}; the two stages come from different runs "
                             "(re-run the stage that wrote it)")
        if _blank(completion):
            skipped["empty_completion"] += 1
            continue
        cut = row.get("finish_reason") in CUT_REASONS
        if cut and cut_policy == "drop":
            skipped["cut_at_max_tokens"] += 1
            continue
        yield Conversation.single(prompts.get(rid)["prompt"], completion, rid, where, ends=not cut)


def _alpaca(path: Path, skipped: Counter) -> Iterator[Conversation]:
    for where, row in _rows(path):
        instruction = _text(_field(row, where, "instruction"), where, "instruction") or ""
        extra = _text(row.get("input"), where, "input")
        prompt = "\n".join(x for x in (instruction, extra) if x)
        output = _text(_field(row, where, "output"), where, "output")
        if not prompt:
            raise InputError(f"{where}: 'instruction' and 'input' are both empty")
        if _blank(output):
            skipped["empty_completion"] += 1
            continue
        turns: list[tuple[str, str]] = []
        for i, pair in enumerate(row.get("history") or []):
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
                raise InputError(f"{where}: history[{i}] must be a [instruction, output] pair of strings")
            turns.append((pair[0], pair[1]))
        turns.append((prompt, output))
        yield Conversation(tuple(turns), _text(row.get("system"), where, "system") or None, _row_id(row, where),
                           where)


def _sharegpt(path: Path, skipped: Counter) -> Iterator[Conversation]:
    for where, row in _rows(path):
        if isinstance(row, dict) and "conversations" in row:
            msgs, rk, ck = row["conversations"], "from", "value"
        elif isinstance(row, dict) and "messages" in row:
            msgs, rk, ck = row["messages"], "role", "content"
        else:
            _field(row, where, "conversations")  # raises with the list of fields
            continue
        if not isinstance(msgs, list) or not msgs:
            raise InputError(f"{where}: the conversation must be a non-empty list of messages")
        system = _text(row.get("system"), where, "system") or None
        turns: list[tuple[str, str]] = []
        pending: str | None = None
        for i, m in enumerate(msgs):
            role = m.get(rk) if isinstance(m, dict) else None
            text = _text(m.get(ck), f"{where} message {i}", ck) if isinstance(m, dict) else None
            if role == "system" and i == 0:
                system = text
            elif role in _USER_ROLES and pending is None:
                pending = text or ""
            elif role in _ASSISTANT_ROLES and pending is not None:
                turns.append((pending, text or ""))
                pending = None
            else:
                raise InputError(f"{where}: message {i} has role {role!r} out of turn; expected user and "
                                 f"assistant turns alternating (roles: human/user, gpt/assistant; optional system "
                                 "first); tool and function messages are not supported")
        if pending is not None or not turns:
            raise InputError(f"{where}: the conversation must end with an assistant message")
        if _blank(turns[-1][1]):
            skipped["empty_completion"] += 1
            continue
        yield Conversation(tuple(turns), system, _row_id(row, where), where)


def split_eval(convs: list[Conversation], fraction: float, max_rows: int, seed: int
               ) -> tuple[list[Conversation], list[Conversation]]:
    """Hold out a reproducible sample for the eval loss: the examples with the smallest seeded hash of their id, so
    the split does not depend on file order."""
    n_eval = min(max_rows, round(len(convs) * fraction)) if fraction > 0 else 0
    if fraction > 0 and n_eval == 0 and len(convs) >= 4:
        n_eval = 1
    if n_eval <= 0:
        return list(convs), []

    def key(i: int) -> bytes:
        return hashlib.sha256(f"{seed}:eval:{convs[i].id}".encode()).digest()

    held = set(sorted(range(len(convs)), key=key)[:n_eval])
    train = [c for i, c in enumerate(convs) if i not in held]
    evals = [c for i, c in enumerate(convs) if i in held]
    return train, evals


# ------------------------------------------------------------------------------------------ token ids


def _encode(enc: TemplateEncoder, convs: list, truncation: str, skipped: Counter) -> tuple[list[dict], dict]:
    import numpy as np

    feats, prompt_toks, completion_toks, truncated, no_eos = [], 0, 0, 0, 0
    for e in enc.encode_many(convs, truncation):
        if e is None:
            skipped["completion_longer_than_max_length"] += 1
            continue
        feats.append({"input_ids": np.asarray(e.input_ids, dtype=np.int64),
                      "labels": np.asarray(e.labels, dtype=np.int64)})
        prompt_toks += e.prompt_tokens
        completion_toks += e.completion_tokens
        truncated += e.truncated
        no_eos += not e.eos
    return feats, {"prompt_tokens": prompt_toks, "completion_tokens": completion_toks, "truncated": truncated,
                   "without_eos": no_eos}


def load_features(cfg: TrainConfig, spec: DataSpec, run_dir: str | Path, encoder: TemplateEncoder, say
               ) -> tuple[list[dict], list[dict], dict[str, Any]]:
    """Token ids and labels of the training and held-out examples, and what was skipped or truncated."""
    convs, skipped = load_examples(spec, run_dir, cfg.data_format, cfg.prompt_field, cfg.completion_field,
                                   cfg.max_examples, cfg.cut_at_max_tokens)
    where = spec.file or spec.stage_inputs.get(spec.source, "")
    if not convs:
        raise InputError(f"no training examples in {where} (skipped: {dict(skipped) or 'none'})")
    train_convs, eval_convs = split_eval(convs, cfg.eval_fraction, cfg.eval_max, cfg.seed)
    train_feats, stats = _encode(encoder, train_convs, cfg.truncation, skipped)
    eval_feats, _ = _encode(encoder, eval_convs, cfg.truncation, Counter())
    if not train_feats:
        raise InputError(f"every example in {where} has a completion longer than --max-length {cfg.max_length} "
                         "tokens (with EOS and one prompt token): raise --max-length")
    if skipped.get("completion_longer_than_max_length"):
        say(f"[train] {skipped['completion_longer_than_max_length']} examples dropped: their completion alone does "
            f"not fit in --max-length {cfg.max_length}")
    return train_feats, eval_feats, {"skipped": dict(skipped), **stats}
