"""The one input layer: naming inputs, reading their rows, and joining a stage's rows to prepare's.

- `expand` turns files, directories, globs and `hf:` ids into `Source`s, in a stable order;
- `parse_json_line` is the one JSON parser for the files nift reads: whatever cannot be read is a `BadRow` naming
  file and line, never a traceback; `iter_lines`, `enumerate_jsonl`, `read_jsonl`, `read_json`, `iter_json_list`,
  `iter_parquet`, `open_hf_dataset` and `iter_records` (any input's rows as objects) are built on it;
- `JsonlIndex` finds a JSONL row by id through a byte-offset index, so a join keeps offsets in memory, not rows.

What a row means (a corpus document, an audit row, a training pair) stays with its stage; writing stays with the
stage contract (`nift.artifacts`: atomic writes, manifests).
"""

from __future__ import annotations

import glob
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from nift.errors import BadRow, InputError

# The files `iter_records` reads, by suffix (`.json`: a list of objects, or JSONL under that name).
RECORD_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet"}

# ------------------------------------------------------------------------------------------------ inputs


@dataclass(frozen=True)
class Source:
    """One input: a file of a known kind, or a `hf:` dataset (`path` is then `NAME[:CONFIG][@SPLIT]`)."""

    kind: str  # the value of the suffix table `expand` was given, or hf
    path: str

    @property
    def spec(self) -> str:
        """The input as the user names it: the file's path, or `hf:NAME`."""
        return f"hf:{self.path}" if self.kind == "hf" else self.path


def expand(specs: list[str], suffixes: dict[str, str], skip_other_files: bool = False) -> list[Source]:
    """Files, directories, globs and `hf:` ids as sources, each file's kind from `suffixes` (suffix -> kind).

    A named file of another type is an error; a glob's match of another type is one too, or is passed over with
    `skip_other_files` (audit's `runs/*/*` means the data files in them, prepare's `*.jsonl` means every match)."""
    names = ", ".join(suffixes)
    out: list[Source] = []
    for spec in specs:
        if spec.startswith("hf:"):
            out.append(Source("hf", spec[3:]))
            continue
        p = Path(spec).expanduser()
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in suffixes)
            if not files:
                raise InputError(f"{p}: directory holds no {names} files")
            out += [Source(suffixes[f.suffix.lower()], str(f)) for f in files]
        elif p.is_file():
            kind = suffixes.get(p.suffix.lower())
            if kind is None:
                raise InputError(f"{p}: unsupported file type {p.suffix!r}; use {names}")
            out.append(Source(kind, str(p)))
        elif any(ch in spec for ch in "*?["):
            out += _expand_glob(spec, suffixes, skip_other_files)
        else:
            raise InputError(f"input not found: {spec}")
    return out


def _expand_glob(spec: str, suffixes: dict[str, str], skip_other_files: bool) -> list[Source]:
    names = ", ".join(suffixes)
    matches = sorted(m for m in glob.glob(os.path.expanduser(spec), recursive=True) if Path(m).is_file())
    if skip_other_files:
        matches = [m for m in matches if Path(m).suffix.lower() in suffixes]
    if not matches:
        raise InputError(f"glob {spec!r} matches no {names} file" if skip_other_files
                         else f"glob {spec!r} matches no file")
    out: list[Source] = []
    for m in matches:
        kind = suffixes.get(Path(m).suffix.lower())
        if kind is None:
            raise InputError(f"{m} (matched by {spec!r}): unsupported file type; use {names}")
        out.append(Source(kind, m))
    return out


# ------------------------------------------------------------------------------------------------ parsing


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile("[\ud800-\udfff]")


def parse_json_line(raw: bytes | str, where: str) -> Any:
    """One JSON value from a line of a JSONL file (or a whole .json file); a `BadRow` naming `where` (file:line)
    for what cannot be read, never a bare traceback: bytes that are not UTF-8, malformed JSON, nesting too deep for
    the parser (RecursionError), an integer too long to convert (Python's 4,300-digit limit), and a lone surrogate
    escape (\\ud800: valid JSON, but not text that can be written or sent as UTF-8)."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadRow("non_utf8", f"{where}: not valid UTF-8 (byte {e.start}: {raw[e.start:e.start + 1]!r})"
                         ) from None
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as e:
        at = f"line {e.lineno}, column {e.colno}" if e.lineno > 1 else f"column {e.colno}"  # a whole .json file
        raise BadRow("malformed_json", f"{where}: malformed JSON at {at}: {e.msg}") from None
    except RecursionError:
        raise BadRow("too_deep", f"{where}: JSON nested too deeply to read") from None
    except ValueError as e:  # int('1' * 5000): the interpreter's limit on digits (CVE-2020-10735)
        digits = getattr(sys, "get_int_max_str_digits", lambda: 4300)()
        what = f"a number longer than {digits} digits" if "digits" in str(e) else str(e)
        raise BadRow("bad_number", f"{where}: {what}") from None
    if "\\u" in raw and _SURROGATE_ESCAPE.search(raw):  # a valid pair becomes one character; a lone half stays
        m = _SURROGATE.search(json.dumps(obj, ensure_ascii=False))
        if m:
            raise BadRow("not_unicode", f"{where}: a lone surrogate {m.group()!r} in a string: not valid Unicode "
                         "text (often scraped text cut inside an escaped emoji)")
    return obj


def as_object(value: Any, where: str) -> dict[str, Any]:
    """`value` if it is a JSON object; else a `BadRow` saying what it is."""
    if not isinstance(value, dict):
        raise BadRow("not_an_object", f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


def parse_object(raw: bytes | str, where: str) -> dict[str, Any]:
    """One JSON object from a line (`parse_json_line`, then `as_object`)."""
    return as_object(parse_json_line(raw, where), where)


# ------------------------------------------------------------------------------------------------ files


class Line(NamedTuple):
    lineno: int  # 1-based
    offset: int  # of the line's first byte: where `LineReader.line_at` finds it again
    raw: bytes


def iter_lines(path: str | Path) -> Iterator[Line]:
    """The non-blank lines of a file, as bytes (so that a non-UTF-8 byte is a `BadRow` naming its line)."""
    with open(path, "rb") as f:
        offset = 0
        for lineno, raw in enumerate(f, start=1):
            if raw.strip():
                yield Line(lineno, offset, raw)
            offset += len(raw)


def enumerate_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, value) for each row of a JSONL file; a damaged line is a `BadRow` naming file and line."""
    for line in iter_lines(path):
        yield line.lineno, parse_json_line(line.raw, f"{path}:{line.lineno}")


def read_jsonl(path: str | Path) -> Iterator[Any]:
    """Rows of a JSONL file that nift wrote; a damaged line is an `InputError` naming file and line."""
    for _lineno, row in enumerate_jsonl(path):
        yield row


def count_lines(path: str | Path) -> int:
    """The rows of a JSONL file (its non-blank lines)."""
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def read_json(path: str | Path) -> Any:
    """A whole JSON file (results.json, a model's config.json); what cannot be read is an `InputError` naming it."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot be read ({e.strerror})") from None
    return parse_json_line(raw, str(path))


def iter_json_list(path: str | Path) -> Iterator[tuple[str, Any]]:
    """(`file[i]`, item) for each item of a .json file holding a list of examples."""
    try:
        data = parse_json_line(Path(path).read_bytes(), str(path))
    except BadRow as e:
        raise InputError(f"not valid JSON: {e}") from None
    if not isinstance(data, list):
        raise InputError(f"{path}: a .json data file must hold a list of examples")
    for i, item in enumerate(data):
        yield f"{path}[{i}]", item


def open_parquet(path: str | Path) -> Any:
    """A `pyarrow.parquet.ParquetFile`; a file pyarrow cannot read is an `InputError` naming it."""
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a corrupt file
        raise InputError(f"{path}: not a readable Parquet file: {e}") from None


def iter_parquet(pf: Any, columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """The rows of an open Parquet file (only `columns`, when given), streamed in batches."""
    for batch in pf.iter_batches(columns=columns, batch_size=4096):
        yield from batch.to_pylist()


def open_hf_dataset(spec: str) -> Any:
    """`NAME[:CONFIG][@SPLIT]` (the part after `hf:`), streamed with `datasets` (needs the network)."""
    try:
        import datasets
    except ImportError:
        from nift.errors import missing_package

        raise missing_package("datasets", "hub", "reading hf: datasets") from None
    name, _, split = spec.partition("@")
    name, _, config = name.partition(":")
    try:
        return datasets.load_dataset(name, config or None, split=split or "train", streaming=True)
    except Exception as e:  # noqa: BLE001 - hub, network and schema errors all end here
        raise InputError(f"hf:{spec}: could not open the dataset: {e}") from None


def iter_records(path: str) -> Iterator[tuple[str, dict[str, Any] | BadRow]]:
    """(where, row-or-BadRow) for every row of a JSONL, .json, Parquet file or `hf:` id; bad rows are yielded, not
    raised, so the caller decides. `where` is `file:line`, `file[i]` or `file#row<i>`."""
    if path.startswith("hf:"):
        for i, ex in enumerate(open_hf_dataset(path[3:])):
            yield f"{path}#row{i}", dict(ex)
        return
    p = Path(path)
    if p.stat().st_size == 0:
        raise InputError(f"{p}: empty file")
    if p.suffix.lower() == ".parquet":
        for i, row in enumerate(iter_parquet(open_parquet(p))):
            yield f"{p}#row{i}", row
        return
    if p.suffix.lower() == ".json":
        with open(p, "rb") as f:
            head = f.read(4096).lstrip()
        if head.startswith(b"["):  # a list of objects; else JSONL under a .json name
            for where, obj in iter_json_list(p):
                yield where, _object_or_bad(as_object, obj, where)
            return
    for line in iter_lines(p):
        where = f"{p}:{line.lineno}"
        yield where, _object_or_bad(parse_object, line.raw, where)


def _object_or_bad(read: Callable[[Any, str], dict[str, Any]], value: Any, where: str) -> dict[str, Any] | BadRow:
    """`read(value, where)`, or the `BadRow` it raised (returned, for the caller to raise or count)."""
    try:
        return read(value, where)
    except BadRow as e:
        return e


# ------------------------------------------------------------------------------------------------ joins


class LineReader:
    """Lines read back at byte offsets (`Line.offset`), in any order; files stay open until `close`."""

    def __init__(self) -> None:
        self._files: dict[str, Any] = {}

    def line_at(self, path: str, offset: int) -> bytes:
        f = self._files.get(path)
        if f is None:
            f = self._files[path] = open(path, "rb")  # noqa: SIM115 - closed in close()
        f.seek(offset)
        return f.readline()

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()


class JsonlIndex:
    """The rows of a JSONL file by id, read on demand through a byte-offset index (memory: one offset per row).

    `key(row, where)` returns a row's id, or raises the caller's error for a row that has none; a later row with
    the same id replaces an earlier one. Use as a context manager, or `close()`."""

    def __init__(self, path: str | Path, key: Callable[[Any, str], str]):
        self.path = str(path)
        self._at: dict[str, tuple[int, int]] = {}  # id -> (byte offset, line number)
        for line in iter_lines(self.path):
            where = f"{self.path}:{line.lineno}"
            self._at[key(parse_json_line(line.raw, where), where)] = (line.offset, line.lineno)
        self._lines = LineReader()

    def __contains__(self, row_id: str) -> bool:
        return row_id in self._at

    def get(self, row_id: str) -> Any | None:
        at = self._at.get(row_id)
        if at is None:
            return None
        return parse_json_line(self._lines.line_at(self.path, at[0]), f"{self.path}:{at[1]}")

    def close(self) -> None:
        self._lines.close()

    def __enter__(self) -> JsonlIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
