"""Reading documents from a corpus: JSONL, Parquet, plain text, directories, globs, `datasets` ids, packaged corpora.

Documents stream one at a time with their location, so a corpus larger than memory can be sampled in one pass.
Bad rows (malformed JSON, missing field, non-UTF-8 bytes) raise an `InputError` naming file and line, or are
counted as skips when the caller asked for skipping. A location can be read back later (`read_at`), so the
sampler keeps only locations, not texts, for seekable sources.
"""

from __future__ import annotations

import glob
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from nift.artifacts import parse_json_line
from nift.errors import BadRow, InputError

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


@dataclass(frozen=True)
class Source:
    kind: str
    path: str


def expand_inputs(inputs: list[str], log=print) -> list[Source]:
    """Expand files, directories, globs, `hf:` ids and `builtin:` names into a sorted list of sources."""
    if not inputs:
        raise InputError("no input given: name at least one file, directory, glob, hf: id or builtin: corpus")
    out: list[Source] = []
    for spec in inputs:
        if spec.startswith("builtin:"):
            from nift.assets import corpus_file

            out.append(Source("lines", str(corpus_file(spec.split(":", 1)[1], log=log))))
            continue
        if spec.startswith("hf:"):
            out.append(Source("hf", spec[3:]))
            continue
        p = Path(spec).expanduser()
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUFFIXES)
            if not files:
                raise InputError(f"{p}: directory holds no {', '.join(SUFFIXES)} files")
            out += [Source(SUFFIXES[f.suffix.lower()], str(f)) for f in files]
        elif p.is_file():
            kind = SUFFIXES.get(p.suffix.lower())
            if kind is None:
                raise InputError(f"{p}: unsupported file type {p.suffix!r}; use {', '.join(SUFFIXES)}")
            out.append(Source(kind, str(p)))
        elif any(ch in spec for ch in "*?["):
            matches = sorted(m for m in glob.glob(os.path.expanduser(spec), recursive=True) if Path(m).is_file())
            if not matches:
                raise InputError(f"glob {spec!r} matches no file")
            for m in matches:
                kind = SUFFIXES.get(Path(m).suffix.lower())
                if kind is None:
                    raise InputError(f"{m} (matched by {spec!r}): unsupported file type; use {', '.join(SUFFIXES)}")
                out.append(Source(kind, m))
        else:
            raise InputError(f"input not found: {spec}")
    return out


def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRow("non_utf8", f"{where}: not valid UTF-8 (byte {e.start}: {raw[e.start:e.start + 1]!r})") from None


def _jsonl_text(raw: bytes, where: str, text_field: str) -> str:
    obj = parse_json_line(raw, where)
    if not isinstance(obj, dict):
        raise BadRow("not_an_object", f"{where}: expected a JSON object, got {type(obj).__name__}")
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
            if progress is not None:
                progress.update(size)
            stats.bytes += size
            continue
        if src.kind == "txt":
            with open(src.path, "rb") as f:
                raw = f.read()
            stats.bytes += size
            stats.rows += 1
            if progress is not None:
                progress.update(size)
            try:
                yield _decode(raw, src.path), Location("txt", src.path)
            except BadRow as e:
                bad(e)
            continue
        # jsonl or lines: stream line by line, tracking byte offsets for read-back
        with open(src.path, "rb") as f:
            offset = 0
            for lineno, raw in enumerate(f, start=1):
                n = len(raw)
                stats.bytes += n
                if progress is not None:
                    progress.update(n)
                start, offset = offset, offset + n
                if not raw.strip():
                    continue
                stats.rows += 1
                where = f"{src.path}:{lineno}"
                try:
                    if src.kind == "jsonl":
                        text = _jsonl_text(raw, where, text_field)
                    else:
                        text = _decode(raw.rstrip(b"\r\n"), where)
                except BadRow as e:
                    bad(e)
                    continue
                yield text, Location(src.kind, src.path, lineno, start)


def _iter_parquet(path: str, text_field: str, stats: ReadStats, bad) -> Iterator[tuple[str, Location]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a corrupt file
        raise InputError(f"{path}: not a readable Parquet file: {e}") from None
    names = pf.schema_arrow.names
    if text_field not in names:
        raise InputError(f"{path}: no column {text_field!r} (columns: {', '.join(names)}); set text_field")
    row = 0
    for batch in pf.iter_batches(columns=[text_field], batch_size=4096):
        for value in batch.column(0).to_pylist():
            stats.rows += 1
            if not isinstance(value, str):
                bad(BadRow("not_a_string", f"{path}: row {row}: column {text_field!r} is "
                           f"{'null' if value is None else type(value).__name__}, not a string"))
            else:
                yield value, Location("parquet", path, row)
            row += 1


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
        self._files: dict[str, Any] = {}
        self._parquet: dict[Location, str] = {}
        wanted: dict[str, dict[int, Location]] = {}
        for loc in locs:
            if loc.kind == "parquet":
                wanted.setdefault(loc.path, {})[loc.line] = loc
        for path, rows in wanted.items():
            import pyarrow.parquet as pq

            row = 0
            for batch in pq.ParquetFile(path).iter_batches(columns=[text_field], batch_size=4096):
                col = batch.column(0)
                for i in range(len(col)):
                    if row + i in rows:
                        self._parquet[rows[row + i]] = col[i].as_py()
                row += len(col)

    def read(self, loc: Location) -> str:
        if loc.kind == "txt":
            return Path(loc.path).read_bytes().decode("utf-8")
        if loc.kind == "parquet":
            return self._parquet.pop(loc)
        f = self._files.get(loc.path)
        if f is None:
            f = self._files[loc.path] = open(loc.path, "rb")  # noqa: SIM115 - closed in close()
        f.seek(loc.offset)
        return _jsonl_text(f.readline(), loc.label(), self.text_field)

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
