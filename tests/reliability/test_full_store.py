"""A full request store loses no answer already delivered (issue 13, item 5): when SQLite says 'database or disk is
full', the answers that reached the process are saved beside the store, the run stops sending, the error says how
many were saved and where, and the next run reads them back instead of paying for them again."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from nift.distill import run
from nift.distill.config import DistillConfig
from nift.llm.config import BackendConfig
from nift.llm.store import Store, StoreFull


def _teacher(url: str, key_env: str, concurrency: int) -> BackendConfig:
    return BackendConfig(backend="openai", model="fake-1", base_url=url, api_key_env=key_env, max_tokens=6,
                         concurrency=concurrency, max_retries=0)


def _fill_after(monkeypatch, n: int) -> None:
    """The store takes `n` rows, then every insert fails as on a full disk."""
    real = Store._insert
    taken = {"rows": 0}

    def insert(self, entries):
        if taken["rows"] + len(entries) > n:
            raise sqlite3.OperationalError("database or disk is full")
        taken["rows"] += len(entries)
        real(self, entries)

    monkeypatch.setattr(Store, "_insert", insert)


def _prompts_sent(fake) -> list[str]:
    return [c["messages"][-1]["content"] if "messages" in c else c["prompt"] for c in fake.chats]


@pytest.mark.parametrize("concurrency", [1, 3])
def test_a_full_store_loses_no_delivered_answer(prepared: Path, fake, monkeypatch, concurrency: int):
    teacher = _teacher(fake.openai_url, fake.key_env, concurrency)
    store = prepared / "distill" / "cache.sqlite"
    _fill_after(monkeypatch, 2)
    with pytest.raises(StoreFull) as e:
        run(DistillConfig(teacher=teacher, progress=False), prepared, log=lambda *_: None)
    first = _prompts_sent(fake)
    saved = len(first) - 2
    assert 2 < len(first) < 6  # it stopped sending once the store was full
    aside = store.with_name("cache.sqlite.unsaved.jsonl")
    assert f"{saved} answer(s) already delivered were saved to {aside}" in str(e.value)
    assert "database or disk is full" in str(e.value)
    assert len(aside.read_text().splitlines()) == saved

    monkeypatch.undo()
    fake.chats.clear()
    logs: list[str] = []
    res = run(DistillConfig(teacher=teacher, progress=False), prepared, log=logs.append)
    second = _prompts_sent(fake)
    assert len(second) == 6 - len(first) and not set(second) & set(first)  # only what was never delivered
    assert res.manifest["stats"]["written"] == 6
    assert res.manifest["cost"]["lost_in_transit"]["requests"] == 0  # saved answers are not counted as lost
    assert any(f"{saved} answer(s) an earlier run could not store" in line for line in logs)
    assert not aside.exists()
    with Store(store) as s:
        assert s.count() == 6


def test_saved_aside_in_the_temp_directory_when_beside_the_store_fails_too(tmp_path: Path, monkeypatch):
    from nift.llm.types import Result

    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    _fill_after(monkeypatch, 0)
    with Store(tmp_path / "cache.sqlite") as store:
        store.unsaved_path = tmp_path / "no-such-dir" / "cache.sqlite.unsaved.jsonl"  # cannot be written
        with pytest.raises(StoreFull) as e:
            store.put("k", "openai", "fake-1", Result(id="x", text="an answer", finish_reason="stop", prompt_tokens=3,
                                                completion_tokens=2, latency_s=0.1, model="fake-1"))
    kept = tmp_path / "tmp" / "nift-cache.sqlite.unsaved.jsonl"
    assert kept.is_file() and f"saved to {kept} (move that file to" in str(e.value)
