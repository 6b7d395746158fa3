"""Reading documents from a corpus: JSONL, Parquet, plain text, directories, globs, `datasets` ids, packaged corpora.

Documents stream one at a time with their location, so a corpus larger than memory can be sampled in one pass.
Bad rows (malformed JSON, missing field, non-UTF-8 bytes) raise an `InputError` naming file and line, or are
counted as skips when the caller asked for skipping. A location can be read back later (`Reader`), so the
sampler keeps only locations, not texts, for seekable sources. Files, lines and rows are read through `nift.io`;
this module adds what a document is (a text field, a text file, a line of a packaged corpus) and where it came from.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from nift.errors import BadRow, InputError
from nift.io import LineReader, Source, expand, iter_lines, iter_parquet, open_hf_dataset, open_parquet, parse_object

SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".txt": "txt"}


class Location(NamedTuple):
    """Where a document came from; `label()` is what the output's `source` field shows.
    (A NamedTuple, not a dataclass: one is made per document, and this is on the hot path.)"""

    kind: str  # jsonl | parquet | txt | lines | hf
    path: str
    line: int = 0  # 1-based line (jsonl, lines) or 0-based row (parquet, hf)
    offset: int = 0  # byte offset of the line (jsonl)

    def label(self) -> str:
        if self.kind in ("jsonl", "lines"):
            return f"{self.path}:{self.line}"
        if self.kind in ("parquet", "hf"):
            return f"{self.path}#row{self.line}"
        return self.path

    @property
    def seekable(self) -> bool:
        return self.kind in ("jsonl", "txt", "parquet")


@dataclass
class ReadStats:
    files: int = 0
    bytes: int = 0
    rows: int = 0
    skipped: Counter = field(default_factory=Counter)


def expand_inputs(inputs: list[str], log=print) -> list[Source]:
    """Expand files, directories, globs, `hf:` ids and `builtin:` names into a sorted list of sources."""
    if not inputs:
        raise InputError("no input given: name at least one file, directory, glob, hf: id or builtin: corpus")
    out: list[Source] = []
    for spec in inputs:
        if spec.startswith("builtin:"):  # a packaged corpus: plain text, one document per line
            from nift.assets import corpus_file

            out.append(Source("lines", str(corpus_file(spec.split(":", 1)[1], log=log))))
        else:
            out += expand([spec], SUFFIXES)
    return out


def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRow("non_utf8", f"{where}: not valid UTF-8 (byte {e.start}: {raw[e.start:e.start + 1]!r})") from None


def _jsonl_text(raw: bytes, where: str, text_field: str) -> str:
    obj = parse_object(raw, where)
    if obj.get(text_field, 0) is None:
        raise BadRow("null_field", f"{where}: field {text_field!r} is null")
    if text_field not in obj:
        fields = ", ".join(list(obj)[:10]) or "none"
        raise BadRow("missing_field", f"{where}: no field {text_field!r} (fields: {fields}); set text_field")
    text = obj[text_field]
    if not isinstance(text, str):
        raise BadRow("not_a_string", f"{where}: field {text_field!r} is {type(text).__name__}, not a string")
    return text


def iter_documents(
    sources: list[Source], text_field: str = "text", on_bad_row: str = "error", stats: ReadStats | None = None,
    progress: Any = None,
) -> Iterator[tuple[str, Location]]:
    """Yield (text, location) for every document. Bad rows raise `InputError`, or are counted when skipping."""
    stats = stats if stats is not None else ReadStats()

    def bad(err: BadRow) -> None:
        if on_bad_row == "error":
            raise InputError(f"{err} (set on_bad_row: skip to count and skip such rows)")
        stats.skipped[err.reason] += 1

    def advance(n: int) -> None:
        stats.bytes += n
        if progress is not None:
            progress.update(n)

    for src in sources:
        stats.files += 1
        if src.kind == "hf":
            yield from _iter_hf(src.path, text_field, stats)
            continue
        size = os.path.getsize(src.path)
        if size == 0:
            bad(BadRow("empty_file", f"{src.path}: empty file"))
            continue
        if src.kind == "parquet":
            yield from _iter_parquet(src.path, text_field, stats, bad)
            advance(size)
        elif src.kind == "txt":
            raw = Path(src.path).read_bytes()
            advance(size)
            stats.rows += 1
            try:
                yield _decode(raw, src.path), Location("txt", src.path)
            except BadRow as e:
                bad(e)
        else:
            yield from _iter_lines(src, size, text_field, stats, bad, advance)


def _iter_lines(src: Source, size: int, text_field: str, stats: ReadStats, bad: Callable[[BadRow], None],
                advance: Callable[[int], None]) -> Iterator[tuple[str, Location]]:
    """A jsonl or lines file, line by line, each location with its byte offset for read-back; every byte of the
    file (blank lines too) is counted as read."""
    read = 0
    for line in iter_lines(src.path):
        end = line.offset + len(line.raw)
        advance(end - read)  # this line and the blank lines before it
        read = end
        stats.rows += 1
        where = f"{src.path}:{line.lineno}"
        try:
            if src.kind == "jsonl":
                text = _jsonl_text(line.raw, where, text_field)
            else:
                text = _decode(line.raw.rstrip(b"\r\n"), where)
        except BadRow as e:
            bad(e)
            continue
        yield text, Location(src.kind, src.path, line.lineno, line.offset)
    advance(size - read)  # blank lines at the end


def _iter_parquet(path: str, text_field: str, stats: ReadStats, bad) -> Iterator[tuple[str, Location]]:
    pf = open_parquet(path)
    names = pf.schema_arrow.names
    if text_field not in names:
        raise InputError(f"{path}: no column {text_field!r} (columns: {', '.join(names)}); set text_field")
    for row, rec in enumerate(iter_parquet(pf, [text_field])):
        value = rec[text_field]
        stats.rows += 1
        if not isinstance(value, str):
            bad(BadRow("not_a_string", f"{path}: row {row}: column {text_field!r} is "
                       f"{'null' if value is None else type(value).__name__}, not a string"))
        else:
            yield value, Location("parquet", path, row)


def _iter_hf(spec: str, text_field: str, stats: ReadStats) -> Iterator[tuple[str, Location]]:
    for i, ex in enumerate(open_hf_dataset(spec)):
        stats.rows += 1
        if text_field not in ex:
            raise InputError(f"hf:{spec}: row {i}: no field {text_field!r} (fields: {', '.join(ex)})")
        yield ex[text_field], Location("hf", f"hf:{spec}", i)


class Reader:
    """Reads documents back at seekable locations, one at a time, in any order (memory: one document).

    JSONL lines are read by seeking to their byte offset; Parquet columns are loaded per file on first use
    (Parquet has no cheap row seek; the loaded column holds only the chosen rows)."""

    def __init__(self, locs: list[Location], text_field: str):
        self.text_field = text_field
        self._lines = LineReader()
        self._parquet: dict[Location, str] = {}
        wanted: dict[str, dict[int, Location]] = {}
        for loc in locs:
            if loc.kind == "parquet":
                wanted.setdefault(loc.path, {})[loc.line] = loc
        for path, rows in wanted.items():
            for row, rec in enumerate(iter_parquet(open_parquet(path), [text_field])):
                if row in rows:
                    self._parquet[rows[row]] = rec[text_field]

    def read(self, loc: Location) -> str:
        if loc.kind == "txt":
            return Path(loc.path).read_bytes().decode("utf-8")
        if loc.kind == "parquet":
            return self._parquet.pop(loc)
        return _jsonl_text(self._lines.line_at(loc.path, loc.offset), loc.label(), self.text_field)

    def close(self) -> None:
        self._lines.close()
