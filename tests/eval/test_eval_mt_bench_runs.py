"""MT-Bench over several runs, through the engine over real HTTP: the sampled categories are answered once per run
with their own seed, the greedy ones once and reused; every run is judged; the score is the mean over runs with a
question-level interval; `--judge-repeats` takes the median of K judgments."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from nift.eval import mt_bench
from nift.eval.config import EvalConfig
from nift.eval.stage import run
from tests.helpers.chat_server import chat_server


def _reply(mode: str, body: dict) -> str:
    if mode == "answer":
        return f"An answer at T={body.get('temperature')} seed={body.get('seed')}."
    # The rating depends on the answer's run (its seed) and on the judge request's own seed, so the test can tell
    # every run and every repeat apart.
    seeds = re.findall(r"seed=(\d+)", body["messages"][-1]["content"])
    return f"Fine. Rating: [[{4 + (int(seeds[-1]) if seeds else 0) + (body.get('seed') or 0)}]]"


@pytest.fixture
def server():
    with chat_server(_reply) as s:
        yield s


@pytest.fixture
def two_questions(tmp_path: Path, shared_data: Path) -> Path:
    """One writing question (sampled, T=0.7) and one math question (greedy), in FastChat's layout."""
    src = shared_data / "mt_bench"
    qs = [json.loads(x) for x in (src / "question.jsonl").open()]
    pick = [next(q for q in qs if q["category"] == "writing"), next(q for q in qs if q["category"] == "math")]
    out = tmp_path / "mt_bench"
    (out / "reference_answer").mkdir(parents=True)
    (out / "question.jsonl").write_text("".join(json.dumps(q) + "\n" for q in pick))
    shutil.copy(src / "judge_prompts.jsonl", out / "judge_prompts.jsonl")
    shutil.copy(src / "reference_answer" / "gpt-4.jsonl", out / "reference_answer" / "gpt-4.jsonl")
    return out


def _cfg(base: str, data: Path, **kw) -> EvalConfig:
    return EvalConfig(
        model="answer-model", backend="openai", base_url=f"{base}/answer/v1", api_key_env="NIFT_TEST_OPENAI_KEY",
        benchmarks=["mt_bench"], max_new_tokens=16, progress=False, mt_bench_data=str(data),
        judge={"backend": "openai", "model": "fake-1", "base_url": f"{base}/judge/v1",
               "api_key_env": "NIFT_TEST_OPENAI_KEY"}, **kw)


def test_three_runs_reuse_greedy_answers_and_average_the_runs(tmp_path, server, two_questions, monkeypatch):
    monkeypatch.setenv("NIFT_TEST_OPENAI_KEY", "sk-test")
    base, seen = server
    run(_cfg(base, two_questions, mt_bench_runs=3, name="three"), tmp_path, log=lambda s: None)
    out = tmp_path / "eval" / "three"
    answered = Counter((r["temperature"], r.get("seed")) for r in seen if r["mode"] == "answer")
    # math (greedy): 2 turns once, no seed; writing (0.7): 2 turns in each of 3 runs with seeds 0, 1, 2.
    assert answered == {(0.0, None): 2, (0.7, 0): 2, (0.7, 1): 2, (0.7, 2): 2}
    judged = [r for r in seen if r["mode"] == "judge"]
    assert len(judged) == 2 + 3 * 2  # the greedy question is judged once, not once per run
    res = json.loads((out / "results.json").read_text())["benchmarks"]["mt_bench"]
    # Run r: writing turns rated 4 + r, math turns 4  ->  4 + r/2; the score is the mean over runs.
    assert [x["score"] for x in res["runs"]] == [4.0, 4.5, 5.0]
    assert res["score"] == 4.5 and res["generation_runs"] == 3
    assert res["n_judgments"] == 12 and res["n_scored"] == 12
    answers = [json.loads(x) for x in (out / "answers" / "mt_bench.jsonl").open()]
    assert len(answers) == 8 and {a["run"] for a in answers} == {0, 1, 2}
    assert all(a["reused_in_runs"] == 3 for a in answers if a["temperature"] == 0)
    per_item = [json.loads(x) for x in (out / "per_item.jsonl").open()]
    q = {r["unit"]: r["value"] for r in per_item if r["metric"] == "mt_bench/question"}
    assert sorted(q.values()) == [4.0, 5.0]  # math 4; writing the mean of 4, 5 and 6
    signal_units = [r["unit"] for r in per_item if r["metric"] == "signals/stopped"]
    assert len(signal_units) == len(set(signal_units)) == 8  # one unit per answer, runs kept apart
    # A second eval with the same settings finds every answer and judgment stored.
    n = len(seen)
    run(_cfg(base, two_questions, mt_bench_runs=3, name="again"), tmp_path, log=lambda s: None)
    assert len(seen) == n


def test_judge_repeats_take_the_median(tmp_path, server, two_questions, monkeypatch):
    monkeypatch.setenv("NIFT_TEST_OPENAI_KEY", "sk-test")
    base, seen = server
    run(_cfg(base, two_questions, judge_repeats=3, name="rep"), tmp_path, log=lambda s: None)
    judged = Counter(r.get("seed") for r in seen if r["mode"] == "judge")
    assert judged == {None: 4, 1: 4, 2: 4}
    out = tmp_path / "eval" / "rep"
    rows = [json.loads(x) for x in (out / "judgments" / "mt_bench.jsonl").open()]
    # One run (seed None for every answer): ratings 4, 5, 6 over the repeats; the median is 5.
    assert all(r["repeat_scores"] == [4.0, 5.0, 6.0] and r["score"] == 5.0 for r in rows)
    res = json.loads((out / "results.json").read_text())["benchmarks"]["mt_bench"]
    assert res["score"] == 5.0 and res["judge_repeats"] == 3


def test_question_bootstrap_keeps_a_question_together():
    """Two questions whose turns agree perfectly: a judgment-level bootstrap would see 4 independent points, the
    question-level one only 2, so its interval is the wider and matches the resampling of the question means."""
    rows = [{"id": q, "turn": t, "category": "writing", "run": r, "score": s}
            for q, s in (("a", 2.0), ("b", 8.0)) for t in (0, 1) for r in (0, 1)]
    lo, hi = mt_bench.question_bootstrap_ci(rows, n_boot=4000, seed=3)
    rng = np.random.default_rng(3)
    idx = rng.integers(0, 2, size=(4000, 2))
    means = np.array([2.0, 8.0])[idx].mean(axis=1)
    assert (lo, hi) == tuple(np.quantile(means, [0.025, 0.975]))
    assert (lo, hi) == (2.0, 8.0)
    agg = mt_bench.aggregate([*rows, {"id": "a", "turn": 0, "category": "writing", "run": 1, "score": None}])
    assert agg["score"] == 5.0 and [r["score"] for r in agg["runs"]] == [5.0, 5.0] and agg["n_unparseable"] == 1
