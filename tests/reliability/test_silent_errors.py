"""Silently wrong results (issue 13, item 6): each case here used to run on and give a wrong answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nift.config import load_config
from nift.errors import ConfigError


def test_a_boolean_is_not_a_count(tmp_path: Path):
    """`n_docs: true` was read as 1 (one document sampled); a flag that holds a number refuses a boolean."""
    path = tmp_path / "c.yaml"
    path.write_text("prepare:\n  n_docs: true\ndistill:\n  teacher:\n    max_tokens: 64\n")
    with pytest.raises(ConfigError, match=r"c.yaml:2: prepare.n_docs: .*boolean true"):
        load_config(path)
    path.write_text("distill:\n  teacher:\n    max_tokens: false\n")
    with pytest.raises(ConfigError, match=r"distill.teacher.max_tokens: .*boolean false"):
        load_config(path)
    path.write_text("prepare:\n  n_docs: 3\n  dedup: false\n")
    cfg = load_config(path)
    assert cfg.prepare.n_docs == 3 and cfg.prepare.dedup is False


def test_sweep_checks_every_value_before_running_any(tmp_path: Path, monkeypatch):
    """`nift sweep --values 3 -5` ran the whole pipeline for 3, then rejected -5."""
    from nift import pipeline, sweep

    ran: list = []
    monkeypatch.setattr(pipeline, "run", lambda cfg, **kw: ran.append(cfg))
    path = tmp_path / "c.yaml"
    path.write_text(f"run_dir: {tmp_path / 'runs'}\n")
    with pytest.raises(ConfigError, match=r"--param distill.limit \(value -5\)"):
        sweep.run(str(path), "distill.limit", ["3", "-5"], log=lambda *_: None)
    assert ran == []


def test_whitespace_completions_are_not_trained_on(tmp_path: Path):
    """An all-whitespace file trained to loss 15 and wrote an adapter: whitespace-only completions count as empty."""
    from nift.train_data import DataSpec, load_examples

    data = tmp_path / "pairs.jsonl"
    rows = [{"prompt": "The cat", "completion": " \n\t "}, {"prompt": "A dog", "completion": " barked."},
            {"prompt": "Rain", "completion": "\u3000\n"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    convs, skipped = load_examples(DataSpec("file", {}, data), tmp_path)
    assert [c.id for c in convs] == [f"{data}:2"]
    assert skipped["empty_completion"] == 2

    run = tmp_path / "run"
    (run / "prepare").mkdir(parents=True)
    (run / "distill").mkdir()
    (run / "prepare" / "data.jsonl").write_text('{"id": "a", "prompt": "x"}\n{"id": "b", "prompt": "y"}\n')
    (run / "distill" / "data.jsonl").write_text('{"id": "a", "completion": "  "}\n{"id": "b", "completion": "ok"}\n')
    convs, skipped = load_examples(DataSpec("distill", {"distill": run / "distill", "prepare": run / "prepare"}), run)
    assert [c.id for c in convs] == ["b"] and skipped["empty_completion"] == 1
