"""`nift sweep`: one run per value, upstream stages linked from the first point, one teacher store for all."""

from __future__ import annotations

import json

import yaml

from nift.cli import main


def test_sweep_over_data_size_shares_work(tmp_path, owt_corpus, smollm2, capsys):
    cfg = {
        "run_dir": str(tmp_path / "run"),
        "pipeline": {"stages": ["prepare", "distill"]},
        "prepare": {"input": [str(owt_corpus)], "n_docs": 4, "progress": False},
        "distill": {"teacher": {"backend": "hf", "model": smollm2, "max_tokens": 8, "batch_size": 4,
                                "context_tokens": 512}, "progress": False},
    }
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["sweep", str(path), "--param", "distill.limit", "--values", "2", "4"]) == 0
    base = tmp_path / "run" / "sweep-distill.limit"
    rows = json.loads((base / "sweep.json").read_text())["points"]
    assert [r["value"] for r in rows] == [2, 4]
    assert rows[0]["teacher_tokens"] < rows[1]["teacher_tokens"]
    assert (base / "4" / "prepare").is_symlink()  # upstream of the swept setting: linked, not recomputed
    second = json.loads((base / "4" / "distill" / "manifest.json").read_text())["cost"]
    assert second["cached_ids"] == 2 and second["this_run"]["requests"] == 2  # the first 2 prompts were stored
    assert (base / "sweep.png").stat().st_size > 10_000 and "| 4 |" in (base / "sweep.md").read_text()
    assert main(["sweep", str(path), "--param", "nope", "--values", "1", "2"]) == 2
    assert "SECTION.KEY" in capsys.readouterr().err
