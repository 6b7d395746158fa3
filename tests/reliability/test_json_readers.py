"""Every reader of a JSON or JSONL file goes through `nift.io.parse_json_line` (issue 13, item 4): deep nesting, a
5,000-digit integer and a lone surrogate in a file nift reads back are an error naming the file (and the line of a
JSONL file), never a traceback (RecursionError, ValueError) and never text that fails later when written or sent."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from nift.errors import InputError

BAD = {  # a JSON object that json.loads cannot read, or reads into text that is not Unicode
    "too_deep": '{"id": "b", "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "bad_number": '{"id": "b", "x": ' + "7" * 5000 + "}",
    "not_unicode": '{"id": "b", "x": "cut inside an emoji \\ud800 here"}',
}
NEEDLE = {"too_deep": "nested too deeply", "bad_number": "a number longer than", "not_unicode": "lone surrogate"}
GOOD = '{"id": "a", "x": 1, "metric": "m", "unit": "u", "value": 1, "kind": "binary"}'


def _jsonl(tmp_path: Path, reason: str, name: str = "data.jsonl") -> Path:
    path = tmp_path / name
    path.write_text(f"{GOOD}\n{BAD[reason]}\n", encoding="utf-8")
    return path


def _prepare_index(path: Path) -> None:
    from nift.audit.rows import prepare_index

    prepare_index(str(path)).close()


def _benchmark_records(path: Path) -> None:
    from nift.eval.data import read_records

    read_records(path, {"id": str})


def _report_rows(path: Path) -> None:
    from nift.report.rundir import iter_jsonl

    list(iter_jsonl(path))


JSONL_READERS: dict[str, Callable[[Path], None]] = {
    "audit PrepareIndex": _prepare_index, "eval benchmark file": _benchmark_records, "report rows": _report_rows,
}


@pytest.mark.parametrize("reason", sorted(BAD))
@pytest.mark.parametrize("reader", sorted(JSONL_READERS))
def test_jsonl_readers_name_file_and_line(tmp_path: Path, reader: str, reason: str):
    path = _jsonl(tmp_path, reason)
    with pytest.raises(InputError) as e:
        JSONL_READERS[reader](path)
    assert f"{path}:2: " in str(e.value) and NEEDLE[reason] in str(e.value)


def _json_file(tmp_path: Path, reason: str, name: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(BAD[reason], encoding="utf-8")
    return path


def _report_json(tmp_path: Path, reason: str) -> Path:
    from nift.report.rundir import read_json

    path = _json_file(tmp_path, reason, "results.json")
    read_json(path)
    return path


def _checkpoint_json(tmp_path: Path, reason: str) -> Path:
    from nift.checkpoint import load_json

    path = _json_file(tmp_path, reason, "adapter_config.json")
    load_json(path)
    return path


def _safetensors_header(tmp_path: Path, reason: str) -> Path:
    from nift.checkpoint import read_header

    path = tmp_path / "model.safetensors"
    header = BAD[reason].encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    read_header(path)
    return path


def _sweep_results(tmp_path: Path, reason: str) -> Path:
    from nift.sweep import _point_row

    path = _json_file(tmp_path, reason, "run/eval/after/results.json")
    _point_row(tmp_path / "run", 3)
    return path


def _compare_results(tmp_path: Path, reason: str) -> Path:
    from nift.eval.compare import compare

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "per_item.jsonl").write_text(GOOD + "\n", encoding="utf-8")
        (tmp_path / name / "manifest.json").write_text("{}", encoding="utf-8")
    path = _json_file(tmp_path, reason, "b/results.json")
    compare(tmp_path / "a", tmp_path / "b", out=tmp_path / "out", n_boot=10, log=lambda *_: None)
    return path


JSON_READERS: dict[str, Callable[[Path, str], Path]] = {
    "report results.json": _report_json, "checkpoint config": _checkpoint_json,
    "safetensors header": _safetensors_header, "sweep results.json": _sweep_results,
    "compare results.json": _compare_results,
}


@pytest.mark.parametrize("reason", sorted(BAD))
@pytest.mark.parametrize("reader", sorted(JSON_READERS))
def test_json_file_readers_name_the_file(tmp_path: Path, reader: str, reason: str):
    with pytest.raises(InputError) as e:
        JSON_READERS[reader](tmp_path, reason)
    assert str(tmp_path) in str(e.value) and NEEDLE[reason] in str(e.value), str(e.value)


def test_malformed_json_file_names_its_line(tmp_path: Path):
    from nift.io import read_json

    path = tmp_path / "results.json"
    path.write_text('{\n  "a": 1,\n  "b": oops\n}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"results.json: malformed JSON at line 3, column 8"):
        read_json(path)


def test_a_damaged_manifest_is_an_incomplete_stage(tmp_path: Path):
    from nift.artifacts import read_manifest

    (tmp_path / "manifest.json").write_text(BAD["too_deep"], encoding="utf-8")
    assert read_manifest(tmp_path) is None
    (tmp_path / "manifest.json").write_text(json.dumps({"stage": "x"}), encoding="utf-8")
    assert read_manifest(tmp_path) == {"stage": "x"}
