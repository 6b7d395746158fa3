"""The study table (`nift.study`): arms pooled over seeds per unit, paired differences with the right test, the
headline sentence against the paper's claim; and `nift sweep` driven by a config's `sweep:` section."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from nift import study
from nift.artifacts import write_json, write_jsonl
from nift.cli import main
from nift.eval import stats


def _eval(folder: Path, values: dict[str, list[float]], kinds: dict[str, str] | None = None) -> Path:
    rows = [{"metric": m, "unit": f"u{i}", "value": v, "kind": (kinds or {}).get(m, "binary")}
            for m, vs in values.items() for i, v in enumerate(vs)]
    write_jsonl(folder / "per_item.jsonl", rows)
    write_json(folder / "results.json", {"template": "one_shot"})
    return folder


def test_arms_pool_seeds_per_unit_and_pairs_use_the_fitting_test(tmp_path):
    rng = np.random.default_rng(0)
    base_v = rng.integers(0, 2, 200).astype(float)
    s1 = np.where(rng.random(200) < 0.3, 1.0, base_v)  # more passes than base
    s2 = np.where(rng.random(200) < 0.3, 1.0, base_v)
    base = study.Arm("base", {"-": _eval(tmp_path / "b", {"ifeval/inst_loose": list(base_v)})})
    one = study.Arm("one", {"1": _eval(tmp_path / "s1", {"ifeval/inst_loose": list(s1)})})
    two = study.Arm("two", {"1": tmp_path / "s1", "2": _eval(tmp_path / "s2", {"ifeval/inst_loose": list(s2)})})
    pooled = two.units("ifeval/inst_loose")
    assert pooled["u7"] == (s1[7] + s2[7]) / 2 and len(pooled) == 200
    assert two.seed_values("ifeval/inst_loose") == {"1": s1.mean(), "2": s2.mean()}

    single = study.pair(base, one)[0]
    assert single["test"]["test"].startswith("mcnemar")  # one pass/fail outcome per unit in both arms
    assert single["test"] == stats.mcnemar(base_v, s1).as_dict()
    assert single["diff"] == pytest.approx(s1.mean() - base_v.mean())
    multi = study.pair(base, two)[0]
    assert multi["test"]["test"] == "wilcoxon"  # seed means (0, 0.5, 1) are scores, not pass/fail
    assert multi["test"] == stats.wilcoxon(base_v, (s1 + s2) / 2).as_dict()
    assert multi["ci95"][0] > 0 and study.significant(multi) == 1

    table = study.arm_table([base, two], n_boot=500)
    row = next(r for r in table if r["arm"] == "two")
    assert row["ci95"][0] < row["value"] < row["ci95"][1] and row["n"] == 200


def test_headline_states_the_result_against_the_claim_with_the_control(tmp_path):
    def row(metric, a, b, p, better="+"):
        return {"metric": metric, "a": "x", "b": "y", "better": better, "mean_a": a, "mean_b": b, "diff": b - a,
                "ci95": [b - a - 0.05, b - a + 0.05], "test": {"test": "wilcoxon", "p_value": p}, "n": 100}

    up = study.headline([row("ifeval/inst_loose", 0.25, 0.31, 0.01), row("signals/stopped", 0.0, 0.4, 1e-6)],
                        [row("ifeval/inst_loose", 0.26, 0.31, 0.3)], "one_shot", "vanilla")
    assert up.startswith("Against the paper's claim") and " reproduces it" in up
    assert "25.0% → 31.0% (+6.0 pt" in up and "answers ending by EOS 0.0% → 40.0%" in up
    assert "undistilled control" in up and "no different from it" in up and "'one_shot' template" in up
    flat = study.headline([row("ifeval/inst_loose", 0.25, 0.24, 0.6)])
    assert "does not reproduce it" in flat and "control" not in flat
    down = study.headline([row("ifeval/inst_loose", 0.25, 0.10, 0.001)])
    assert "contradicts it" in down
    assert "no IFEval comparison" in study.headline([row("signals/stopped", 0.0, 0.4, 1e-6)])


def test_sweep_section_runs_every_value_and_seed(tmp_path, owt_corpus, smollm2, capsys):
    """`nift sweep CONFIG` with no --param takes the config's sweep section (values x seeds); mistakes in its shape
    are reported before anything runs."""
    cfg = {
        "run_dir": str(tmp_path / "run"),
        "pipeline": {"stages": ["prepare", "distill"]},
        "prepare": {"input": [str(owt_corpus)], "n_docs": 2, "progress": False},
        "distill": {"teacher": {"backend": "hf", "model": smollm2, "max_tokens": 4, "batch_size": 2,
                                "context_tokens": 256}, "progress": False},
        "sweep": {"param": "distill.limit", "values": [1, 2], "labels": ["one", "two"], "seeds": [3, 4]},
    }
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["sweep", str(path)]) == 0
    base = tmp_path / "run" / "sweep-distill.limit"
    points = json.loads((base / "sweep.json").read_text())["points"]
    assert [(p["label"], p["seed"]) for p in points] == [("one", 3), ("one", 4), ("two", 3), ("two", 4)]
    assert sorted(p.name for p in base.iterdir() if p.is_dir()) == ["1-seed3", "1-seed4", "2-seed3", "2-seed4"]
    assert (base / "2-seed4" / "prepare").is_symlink()
    for bad, msg in [({"labels": ["only-one"]}, "1 labels for 2 values"), ({"control": "nope"}, "not one of"),
                     ({"values": [1], "seeds": []}, "at least two values")]:
        path.write_text(yaml.safe_dump({**cfg, "sweep": {**cfg["sweep"], **bad}}))
        assert main(["sweep", str(path)]) == 2
        assert msg in capsys.readouterr().err


def test_study_table_from_finished_points(tmp_path):
    """What `nift sweep` writes once every point is evaluated: base + arms, pairs against base and control."""
    from nift.sweep import _study

    rng = np.random.default_rng(1)
    n = 120
    base_dir = tmp_path / "first"
    _eval(base_dir / "eval" / "before", {"ifeval/inst_loose": list(rng.integers(0, 2, n).astype(float)),
                                         "signals/stopped": [0.0] * n})
    write_json(base_dir / "train" / "manifest.json", {"config": {"template": "vanilla"}})
    points = {}
    for label, p_pass, p_stop in (("distilled", 0.5, 0.6), ("undistilled", 0.4, 0.5)):
        for seed in (1, 2):
            d = tmp_path / f"{label}-{seed}"
            _eval(d / "eval" / "after", {"ifeval/inst_loose": list((rng.random(n) < p_pass).astype(float)),
                                         "signals/stopped": list((rng.random(n) < p_stop).astype(float))})
            points.setdefault(label, {})[str(seed)] = d
    _study(tmp_path, base_dir, points, "undistilled", log=lambda *_: None)
    out = json.loads((tmp_path / "study.json").read_text())
    assert out["arms"] == {"base": ["-"], "distilled": ["1", "2"], "undistilled": ["1", "2"]}
    assert [(p[0]["a"], p[0]["b"]) for p in out["pairs"]] == [("base", "distilled"), ("base", "undistilled"),
                                                              ("undistilled", "distilled")]
    md = (tmp_path / "study.md").read_text()
    assert md.splitlines()[2].startswith("Against the paper's claim") and "undistilled control" in md
    assert "**distilled vs undistilled**" in md and "(seeds " in md
