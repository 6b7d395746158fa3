"""bench/teachers.py, the teacher study behind the embedded default, run small on the real SmolLM2-135M: every way of
asking gives a measured arm with rates in [0, 1], the table names each arm, and an interrupted study keeps the arms
it measured (the results file is written after each arm)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO.parent / "shared" / "data" / "corpus" / "openwebtext_800.jsonl"


def test_teacher_study_measures_each_way_of_asking(smollm2, tmp_path):
    assert CORPUS.is_file(), f"{CORPUS}: the shared data must sit beside the checkout"
    out = tmp_path / "teachers.json"
    cmd = [sys.executable, str(REPO / "bench" / "teachers.py"), "--n", "3", "--max-tokens", "6", "--batch-size", "3",
           "--teachers", smollm2, "--modes", "chat+system", "completions", "--work", str(tmp_path / "w"),
           "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert set(res["arms"]) == {f"{smollm2}--chat+system", f"{smollm2}--completions"}
    for arm in res["arms"].values():
        assert arm["n"] == 3 and arm["tokens_per_s"] > 0 and len(arm["load_average_after"]) == 3
        assert all(0 <= arm[f"{f}_rate"] <= 1 for f in ("echo", "uppercase_start", "preamble", "truncated"))
        assert arm["samples"] and all("completion" in s for s in arm["samples"])
    # 6 tokens: raw completion of web text never ends by itself that soon
    assert res["arms"][f"{smollm2}--completions"]["truncated_rate"] == 1.0
    assert f"| {smollm2} | completions |" in proc.stdout
