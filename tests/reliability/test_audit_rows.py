"""Audit input rows that were silently misread (issue 13, item 6): each case used to run on with a wrong answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nift.audit.config import AuditConfig
from nift.audit.stage import run
from nift.errors import InputError
from nift.io import read_jsonl

QUIET = {"log": lambda *_: None}


def _audit(tmp_path: Path, name: str, rows: list, **kw) -> tuple[Path, AuditConfig]:
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path, AuditConfig(input=[str(path)], benchmarks=[], language=None, progress=False, **kw)


def test_a_chat_row_without_an_assistant_turn_is_flagged_empty(tmp_path: Path):
    """Such a row was kept unflagged, its whole conversation taken for the target."""
    rows = [{"id": "a", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]},
            {"id": "b", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}]
    _, cfg = _audit(tmp_path, "chat.jsonl", rows, drop=["empty"])
    res = run(cfg, tmp_path / "run", **QUIET)
    flags = {f["id"]: f for f in read_jsonl(tmp_path / "run" / "audit" / "flags.jsonl")}
    assert "empty" in flags["b"]["flags"] and "empty" not in flags["a"]["flags"]
    assert [r["id"] for r in read_jsonl(tmp_path / "run" / "audit" / "data.jsonl")] == ["a"]
    assert res.manifest["stats"]["datasets"]["chat"]["dropped"] == 1


def test_a_null_field_is_called_null(tmp_path: Path):
    """{"text": null} said "no field 'text' (fields: text)"."""
    _, cfg = _audit(tmp_path, "t.jsonl", [{"text": "fine"}, {"text": None}], format="text")
    with pytest.raises(InputError, match=r"t\.jsonl:2: field 'text' is null") as e:
        run(cfg, tmp_path / "run", **QUIET)
    assert "no field" not in str(e.value)
