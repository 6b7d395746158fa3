"""MT-Bench as the paper reports it: several generation runs, each judged, the score averaged over runs.

The paper: "The scores for subsequent experiments are averaged over three inference runs." With
`--mt-bench-runs N`, run r answers the sampled categories (FastChat's per-category temperatures: writing and
roleplay 0.7, stem and humanities 0.1) with seed `--seed` + r; the greedy categories (temperature 0: extraction,
math, coding, reasoning) would give the same answer N times, so they are generated and judged once and that
judgment counts in every run. Each run's score is the mean of its ratings; the reported score is the mean over
runs, its 95% CI a bootstrap over questions (`mt_bench.question_bootstrap_ci`). `--judge-repeats K` asks the judge
K times for every judgment (repeat k > 0 with seed k, so it is a new request, not the cached answer) and takes the
median rating: FastChat's maintainers report judge scores moving by 0.16-0.2 at temperature 0.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

from nift.eval import mt_bench
from nift.eval.generation import Generator, GenSettings
from nift.eval.judge import Judge, JudgeTask


def generate(gen: Generator, items: list[dict[str, Any]], settings: GenSettings,
             temperature: Callable[[dict[str, Any]], float], runs: int, seed: int) -> list[dict[str, Any]]:
    """Answer rows of every run; each row carries `run` (a greedy answer: run 0, `reused_in_runs` = runs)."""
    if runs == 1:
        answers = gen.answer("mt_bench", items, settings, temperature)
        for a in answers:
            a["run"] = 0
        return answers
    greedy = [it for it in items if temperature(it) == 0]
    sampled = [it for it in items if temperature(it) != 0]
    out = gen.answer("mt_bench", greedy, settings, temperature) if greedy else []
    for a in out:
        a.update(run=0, reused_in_runs=runs)
    base = gen.cfg
    try:
        for r in range(runs):
            if not sampled:
                break
            # The seed is part of the request key: each run is its own stored draw, and a re-run finds it again.
            gen.cfg = base.model_copy(update={"seed": seed + r})
            for a in gen.answer("mt_bench", sampled, settings, temperature):
                a.update(run=r, seed=seed + r)
                out.append(a)
    finally:
        gen.cfg = base
    return out


def judge(answers: list[dict[str, Any]], items: list[dict[str, Any]], d: Any, judge: Judge, max_tokens: int,
          runs: int, repeats: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """(aggregation rows, judgment rows, outcomes by task id) for every run's answers."""
    conv: dict[tuple[str, int], list[str | None]] = defaultdict(lambda: [None, None])
    reused: set[str] = set()
    for a in answers:
        if a["status"] == "ok":
            conv[(a["id"], a["run"])][a["turn"]] = a["answer"]
            if a.get("reused_in_runs"):
                reused.add(a["id"])
    tasks: dict[str, JudgeTask] = {}
    meta: dict[str, tuple[dict[str, Any], int, str, list[int]]] = {}
    for it in items:
        for run in ([0] if it["id"] in reused else range(runs)):
            ans = conv.get((it["id"], run))
            if ans is None or ans[0] is None:
                continue
            for turn in (0, 1):
                if turn == 1 and ans[1] is None:
                    continue
                pname, msgs = mt_bench.judge_messages(it, ans, turn, d.judge_prompts, d.references)
                tid = f"mt_bench:{it['id']}:turn{turn}" + (f":run{run}" if runs > 1 and it["id"] not in reused else "")
                tasks[tid] = JudgeTask(tid, msgs, mt_bench.parse_rating, mt_bench.FOLLOW_UP)
                meta[tid] = (it, turn, pname, list(range(runs)) if it["id"] in reused else [run])
    task_list = list(tasks.values())
    per_repeat = [judge.judge(task_list, max_tokens, "judge mt_bench" + (f" (repeat {k + 1}/{repeats})"
                                                                      if repeats > 1 else ""),
                              overrides={"seed": k} if k else None)
                  for k in range(repeats)]
    outcomes: dict[str, dict[str, Any]] = {}
    agg_rows, judgments = [], []
    for tid, (it, turn, pname, in_runs) in meta.items():
        o = dict(per_repeat[0][tid])
        if repeats > 1:
            values = [rep[tid]["value"] for rep in per_repeat]
            o["value"] = mt_bench.median_rating(values)
            o["repeat_scores"] = values
            if o["value"] is not None:
                o["status"] = "ok"
            o["cost_usd"] = None if any(rep[tid]["cost_usd"] is None for rep in per_repeat) else \
                round(sum(rep[tid]["cost_usd"] for rep in per_repeat), 6)
        outcomes[tid] = o
        judgments.append({"id": it["id"], "turn": turn, "runs": in_runs, "category": it["category"],
                          "judge_prompt": pname, "score": o["value"],
                          **{k: v for k, v in o.items() if k != "value"}})
        agg_rows.extend({"id": it["id"], "turn": turn, "category": it["category"], "run": run, "score": o["value"]}
                        for run in in_runs)
    return agg_rows, judgments, outcomes


def per_item_rows(agg_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Units for `nift compare`: each turn (mean over runs), each question (mean over its turns and runs)."""
    by_turn: dict[tuple[str, int], list[float]] = defaultdict(list)
    by_q: dict[str, list[float]] = defaultdict(list)
    for r in agg_rows:
        if r["score"] is not None:
            by_turn[(r["id"], r["turn"])].append(r["score"])
            by_q[r["id"]].append(r["score"])
    rows = []
    for (qid, turn), v in sorted(by_turn.items()):
        m = float(np.mean(v))
        rows.append(_row("mt_bench/score", f"{qid}#t{turn + 1}", m))
        rows.append(_row(f"mt_bench/turn{turn + 1}", qid, m))
    rows.extend(_row("mt_bench/question", qid, float(np.mean(v))) for qid, v in sorted(by_q.items()))
    return rows


def _row(metric: str, unit: str, value: float) -> dict[str, Any]:
    return {"metric": metric, "unit": unit, "value": value, "kind": "score", "better": "+"}
