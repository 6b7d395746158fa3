"""Silently wrong results (issue 13, item 6): each case here used to run on and give a wrong answer."""

from __future__ import annotations

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
