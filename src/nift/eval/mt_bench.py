"""MT-Bench: 80 two-turn questions, single-answer grading 1-10 by an LLM judge (FastChat's `llm_judge`).

As FastChat does it: answers are generated turn by turn (turn 2 sees the model's own turn-1 answer), with
FastChat's per-category temperatures and 1024 new tokens; the judge gets the official prompt of
`judge_prompts.jsonl` — `single-v1` for turn 1, `single-v1-multi-turn` for turn 2, and the `single-math-v1*` variants
with GPT-4's reference answers for math, reasoning and coding — at temperature 0 with 2048 tokens; the rating is read
with FastChat's patterns (`[[8]]`, else `[8]`). FastChat scores an unreadable judgment -1 and drops it; nift asks the
judge once more to finish with a rating, and counts and reports what is still unreadable.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from typing import Any

import numpy as np

NEED_REF_CATS = ("math", "reasoning", "coding", "arena-hard-200")
# FastChat `llm_judge/common.py::temperature_config`; other categories: 0.7.
TEMPERATURE = {"writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0, "reasoning": 0.0,
               "stem": 0.1, "humanities": 0.1, "arena-hard-200": 0.0}
MAX_NEW_TOKENS = 1024
JUDGE_MAX_TOKENS = 2048
# FastChat's one_score_pattern and its backup.
ONE_SCORE = re.compile(r"\[\[(\d+\.?\d*)\]\]")
ONE_SCORE_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")
FOLLOW_UP = ('Please finish your evaluation: output your rating of the response on a scale of 1 to 10 by strictly '
             'following this format: "[[rating]]", for example: "Rating: [[5]]".')


def temperature(category: str) -> float:
    return TEMPERATURE.get(category, 0.7)


def judge_prompt_name(category: str, turn: int) -> str:
    base = "single-math-v1" if category in NEED_REF_CATS else "single-v1"
    return base + ("-multi-turn" if turn == 1 else "")


def judge_messages(question: dict[str, Any], answers: list[str], turn: int, prompts: dict[str, dict[str, Any]],
                   references: dict[str, list[str]]) -> tuple[str, list[dict[str, str]]]:
    """(judge prompt name, chat messages) for grading `turn` (0 or 1) of one question, as FastChat builds them."""
    name = judge_prompt_name(question["category"], turn)
    tmpl = prompts[name]
    kwargs: dict[str, str] = {}
    if question["category"] in NEED_REF_CATS:
        ref = references.get(question["id"])
        if ref is None:
            raise KeyError(f"MT-Bench question {question['id']} ({question['category']}) has no reference answer")
        kwargs["ref_answer_1"] = ref[0]
        if turn == 1:
            kwargs["ref_answer_2"] = ref[1]
    if turn == 1:
        user = tmpl["prompt_template"].format(question_1=question["turns"][0], question_2=question["turns"][1],
                                              answer_1=answers[0], answer_2=answers[1], **kwargs)
    else:
        user = tmpl["prompt_template"].format(question=question["turns"][0], answer=answers[0], **kwargs)
    return name, [{"role": "system", "content": tmpl["system_prompt"]}, {"role": "user", "content": user}]


def parse_rating(judgment: str) -> tuple[float | None, str]:
    """FastChat's rating parse. Returns (rating, status): status `ok`, `missing` (no rating: worth re-asking) or
    `out_of_range` (a number outside 1..10: not a rating)."""
    match = ONE_SCORE.search(judgment) or ONE_SCORE_BACKUP.search(judgment)
    if not match:
        return None, "missing"
    try:
        rating = float(ast.literal_eval(match.group(1)))
    except (ValueError, SyntaxError):
        return None, "missing"
    if not 1 <= rating <= 10:
        return None, "out_of_range"
    return rating, "ok"


def median_rating(ratings: list[float | None]) -> float | None:
    """`--judge-repeats K`: the median of the readable ratings of one judgment asked K times."""
    ok = [r for r in ratings if r is not None]
    return float(np.median(ok)) if ok else None


def question_bootstrap_ci(rows: list[dict[str, Any]], n_boot: int = 1000, level: float = 0.95,
                          seed: int = 0) -> tuple[float, float] | None:
    """Percentile CI of the mean over runs of each run's mean rating, resampling questions.

    The unit resampled is the question: its two turns (and its answers in every run) are judged on the same
    conversation and move together, so resampling the 160 judgments one by one makes the interval too narrow.
    """
    ok = [r for r in rows if r.get("score") is not None]
    if not ok:
        return None
    qids = sorted({r["id"] for r in ok})
    runs = sorted({r.get("run", 0) for r in ok})
    qi = {q: i for i, q in enumerate(qids)}
    ri = {r: i for i, r in enumerate(runs)}
    sums = np.zeros((len(qids), len(runs)))
    counts = np.zeros((len(qids), len(runs)))
    for r in ok:
        sums[qi[r["id"]], ri[r.get("run", 0)]] += r["score"]
        counts[qi[r["id"]], ri[r.get("run", 0)]] += 1
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(qids), size=(n_boot, len(qids)))
    s, c = sums[idx].sum(axis=1), counts[idx].sum(axis=1)  # (n_boot, runs)
    with np.errstate(invalid="ignore", divide="ignore"):
        stat = np.nanmean(np.where(c > 0, s / np.maximum(c, 1), np.nan), axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(stat, [alpha, 1 - alpha])
    return float(lo), float(hi)


def aggregate(rows: list[dict[str, Any]], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The MT-Bench score over one or more generation runs, with a question-level bootstrap CI.

    `rows`: {id, turn, category, run (default 0), score (None when unparseable)}; a greedy category's judgment
    appears once per run (its one answer reused). The score is the mean over runs of each run's mean rating (the
    paper: "averaged over three inference runs"); per turn and per category pool every run.
    """
    ok = [r for r in rows if r.get("score") is not None]
    runs = sorted({r.get("run", 0) for r in rows})
    per_run = []
    for run in runs:
        vals = [r["score"] for r in ok if r.get("run", 0) == run]
        per_run.append({"run": run, "score": round(float(np.mean(vals)), 4) if vals else None,
                        "n_scored": len(vals), "n_judgments": sum(1 for r in rows if r.get("run", 0) == run)})
    run_means = [float(np.mean([r["score"] for r in ok if r.get("run", 0) == run]))
                 for run in runs if any(r.get("run", 0) == run for r in ok)]
    per_turn: dict[int, list[float]] = defaultdict(list)
    per_cat: dict[str, list[float]] = defaultdict(list)
    for r in ok:
        per_turn[r["turn"]].append(r["score"])
        per_cat[r["category"]].append(r["score"])
    ci = question_bootstrap_ci(rows, n_boot=n_boot, seed=seed)
    return {
        "score": round(float(np.mean(run_means)), 4) if run_means else None,
        "ci95": [round(ci[0], 4), round(ci[1], 4)] if ci else None,
        "ci_method": "percentile bootstrap over questions (both turns and every run of a question together)",
        "runs": per_run,
        "per_turn": {f"turn_{t + 1}": round(float(np.mean(v)), 4) for t, v in sorted(per_turn.items())},
        "per_category": {c: round(float(np.mean(v)), 4) for c, v in sorted(per_cat.items())},
        "n_judgments": len(rows),
        "n_scored": len(ok),
        "n_unparseable": len(rows) - len(ok),
    }
