"""`nift compare` on two evaluation folders: paired units, the right test per metric kind, table, JSON and PNG."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from nift.errors import InputError
from nift.eval.compare import compare


def _write_eval(folder: Path, rows: list[dict], model: str) -> None:
    folder.mkdir(parents=True)
    with open(folder / "per_item.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    (folder / "results.json").write_text(json.dumps({"model": model, "data": {"ifeval": {"q": "abc"}},
                                                     "judge": {"model": "j"}}))
    (folder / "manifest.json").write_text('{"stage": "eval"}')  # a finished eval


def test_compare_pairs_units_and_uses_fitting_tests(tmp_path: Path):
    rng = np.random.default_rng(0)
    n = 60
    before_pass = rng.random(n) < 0.3
    after_pass = before_pass | (rng.random(n) < 0.5)  # after passes everything before passed, and more
    before_score = rng.integers(1, 6, n).astype(float)
    after_score = np.minimum(10, before_score + rng.integers(0, 4, n))
    a_rows, b_rows = [], []
    for i in range(n):
        a_rows.append({"metric": "ifeval/prompt_strict", "unit": str(i), "value": float(before_pass[i]),
                       "kind": "binary"})
        b_rows.append({"metric": "ifeval/prompt_strict", "unit": str(i), "value": float(after_pass[i]),
                       "kind": "binary"})
        a_rows.append({"metric": "mt_bench/score", "unit": f"{i}#t1", "value": before_score[i], "kind": "score"})
        b_rows.append({"metric": "mt_bench/score", "unit": f"{i}#t1", "value": after_score[i], "kind": "score"})
    # An extra unit only in B and a metric only in A are reported, not paired.
    b_rows.append({"metric": "mt_bench/score", "unit": "extra#t1", "value": 9.0, "kind": "score"})
    a_rows.append({"metric": "signals/empty", "unit": "x", "value": 1.0, "kind": "binary", "better": "-"})
    _write_eval(tmp_path / "eval" / "before", a_rows, "base")
    _write_eval(tmp_path / "eval" / "after", b_rows, "tuned")
    logs: list[str] = []
    res = compare(tmp_path / "eval" / "before", tmp_path / "eval" / "after", n_boot=500, log=logs.append)
    by = {m["metric"]: m for m in res["metrics"]}
    ife = by["ifeval/prompt_strict"]
    assert ife["test"]["test"].startswith("mcnemar") and ife["n_paired"] == n
    assert ife["diff"] == pytest.approx(after_pass.mean() - before_pass.mean())
    assert ife["ci95"][0] <= ife["diff"] <= ife["ci95"][1]
    n01 = int(np.sum(~before_pass & after_pass))
    if ife["test"]["test"] == "mcnemar-exact":
        assert ife["test"]["p_value"] == pytest.approx(sps.binomtest(n01, n01, 0.5).pvalue, rel=1e-5)
    mt = by["mt_bench/score"]
    assert mt["test"]["test"] == "wilcoxon" and mt["unpaired_b"] == 1
    assert mt["test"]["p_value"] == pytest.approx(sps.wilcoxon(before_score, after_score).pvalue, rel=1e-5)
    assert res["only_in_one"] == ["signals/empty"]
    out = tmp_path / "eval" / "compare-before-vs-after"
    assert {p.name for p in out.iterdir()} == {"compare.json", "compare.md", "compare.png"}
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "compare.md").read_text()
    assert "| ifeval/prompt_strict | 60 |" in table and "▲" in table  # significant improvement marked
    assert any("mt_bench/score" in line for line in logs)


def test_compare_rejects_folders_that_are_not_evals(tmp_path: Path):
    (tmp_path / "run" / "eval").mkdir(parents=True)
    with pytest.raises(InputError, match="run_dir/eval/<name>"):
        compare(tmp_path / "run", tmp_path / "run")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "per_item.jsonl").write_text('{"metric": "m"}\n')
    (bad / "manifest.json").write_text('{"stage": "eval"}')
    with pytest.raises(InputError, match=r"per_item.jsonl:1: expected metric, unit, value and kind"):
        compare(bad, bad)


def test_compare_warns_when_data_differs(tmp_path: Path):
    row = {"metric": "m", "unit": "1", "value": 1.0, "kind": "score"}
    _write_eval(tmp_path / "a", [row], "x")
    _write_eval(tmp_path / "b", [row], "y")
    res_b = json.loads((tmp_path / "b" / "results.json").read_text())
    res_b["data"]["ifeval"] = {"q": "other"}
    (tmp_path / "b" / "results.json").write_text(json.dumps(res_b))
    res = compare(tmp_path / "a", tmp_path / "b", out=tmp_path / "cmp", n_boot=50, log=lambda s: None)
    assert res["warnings"] == ["ifeval: the two evaluations used different benchmark files"]
    assert res["metrics"][0]["test"]["p_value"] == 1.0  # identical: nothing to test
