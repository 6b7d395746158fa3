"""Arena-Hard: pairwise judgments against a baseline's answers, both orders, win rate with a bootstrap CI.

As arena-hard-auto v0.1 does it: for every question the judge sees the question, then assistant A's and B's
answers, in two games — game 1 with the baseline as A and the model as B, game 2 swapped — with the official system
prompt and template (`judge_config.yaml`: temperature 0, 4096 tokens); the verdict is read with
`\\[\\[([AB<>=]+)\\]\\]`: `[[A>>B]]`, `[[A>B]]`, `[[A=B]]`, `[[B>A]]`, `[[B>>A]]`. A judgment with no verdict gets a
second attempt ("continue your judgment and finish by outputting a final verdict label"); one with conflicting
verdicts is not retried (arena-hard's `get_score`). Both are counted and reported. The score: a decisive verdict
("significantly better") counts 3 times (arena-hard's WEIGHT = 3); ties count one half; with one model against the
baseline, arena-hard's Bradley-Terry fit reduces to this weighted win rate. The 95% CI resamples questions.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import numpy as np

from nift.eval.stats import bootstrap_grouped_mean_ci

MAX_NEW_TOKENS = 4096
JUDGE_MAX_TOKENS = 4096
WEIGHT = 3
VERDICT_PATTERN = r"\[\[([AB<>=]+)\]\]"
FOLLOW_UP = "continue your judgment and finish by outputting a final verdict label"

# The official arena-hard-auto v0.1 judge prompt (config/judge_config.yaml).
SYSTEM_PROMPT = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants to the "
    "user prompt displayed below. You will be given assistant A's answer and assistant B's answer. Your job is to "
    "evaluate which assistant's answer is better.\n\nBegin your evaluation by generating your own answer to the "
    "prompt. You must provide your answers before judging any answers.\n\nWhen evaluating the assistants' answers, "
    "compare both assistants' answers with your answer. You must identify and correct any mistakes or inaccurate "
    "information.\n\nThen consider if the assistant's answers are helpful, relevant, and concise. Helpful means the "
    "answer correctly responds to the prompt or follows the instructions. Note when user prompt has any ambiguity or "
    "more than one interpretation, it is more helpful and appropriate to ask for clarifications or more information "
    "from the user than providing an answer based on assumptions. Relevant means all parts of the response closely "
    "connect or are appropriate to what is being asked. Concise means the response is clear and not verbose or "
    "excessive.\n\nThen consider the creativity and novelty of the assistant's answers when needed. Finally, "
    "identify any missing important information in the assistants' answers that would be beneficial to include when "
    "responding to the user prompt.\n\nAfter providing your explanation, you must output only one of the following "
    "choices as your final verdict with a label:\n\n1. Assistant A is significantly better: [[A>>B]]\n2. Assistant "
    "A is slightly better: [[A>B]]\n3. Tie, relatively the same: [[A=B]]\n4. Assistant B is slightly better: "
    "[[B>A]]\n5. Assistant B is significantly better: [[B>>A]]\n\nExample output: \"My final verdict is tie: "
    "[[A=B]]\"."
)
PROMPT_TEMPLATE = (
    "<|User Prompt|>\n{question_1}\n\n<|The Start of Assistant A's Answer|>\n{answer_1}\n<|The End of Assistant A's "
    "Answer|>\n\n<|The Start of Assistant B's Answer|>\n{answer_2}\n<|The End of Assistant B's Answer|>"
)
# arena-hard v2.0 judges creative writing without asking for the judge's own answer first.
CREATIVE_SYSTEM_PROMPT = SYSTEM_PROMPT.replace(
    "Begin your evaluation by generating your own answer to the prompt. You must provide your answers before judging "
    "any answers.\n\nWhen evaluating the assistants' answers, compare both assistants' answers with your answer.",
    "When evaluating the assistants' answers, compare both assistants' answers.",
)
VERDICTS = ("A>>B", "A>B", "A=B", "B>A", "B>>A")


def judge_settings(judge_config: dict[str, Any] | None) -> dict[str, Any]:
    """System prompt, template and verdict pattern: from the data's judge_config.yaml when it has one."""
    cfg = judge_config or {}
    tmpl = cfg.get("prompt_template", PROMPT_TEMPLATE)
    if isinstance(tmpl, list):
        tmpl = tmpl[0]
    return {"system_prompt": cfg.get("system_prompt", SYSTEM_PROMPT), "prompt_template": tmpl,
            "regex_pattern": cfg.get("regex_pattern", VERDICT_PATTERN)}


def judge_messages(question: str, model_answer: str, baseline_answer: str, game: int, settings: dict[str, Any],
                   category: str | None = None) -> list[dict[str, str]]:
    """Game 1: A = baseline, B = model; game 2: A = model, B = baseline."""
    a, b = (baseline_answer, model_answer) if game == 1 else (model_answer, baseline_answer)
    system = settings["system_prompt"]
    if category == "creative_writing" and system == SYSTEM_PROMPT:
        system = CREATIVE_SYSTEM_PROMPT
    user = settings["prompt_template"].format(question_1=question, answer_1=a, answer_2=b)
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def parse_verdict(judgment: str, pattern: str = VERDICT_PATTERN) -> tuple[str | None, str]:
    """arena-hard's `get_score`: (verdict, status) with status `ok`, `missing` (retry) or `conflicting` (no retry).
    A label outside the five official ones counts as `invalid`."""
    matches = [m.strip("\n") for m in re.findall(pattern, judgment) if m != ""]
    if not matches:
        return None, "missing"
    if len(set(matches)) > 1:
        return None, "conflicting"
    if matches[0] not in VERDICTS:
        return None, "invalid"
    return matches[0], "ok"


def model_outcome(verdict: str, game: int) -> tuple[float, int]:
    """(model's outcome 1 / 0.5 / 0, weight) for one game's verdict, from the model's side."""
    strong = verdict in ("A>>B", "B>>A")
    weight = WEIGHT if strong else 1
    if verdict == "A=B":
        return 0.5, 1
    a_wins = verdict.startswith("A")
    model_is_a = game == 2
    return (1.0 if a_wins == model_is_a else 0.0), weight


def question_scores(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Per question: the weighted outcome over its parsed games (for paired comparisons)."""
    acc: dict[str, list[float]] = {}
    for r in rows:
        if r.get("verdict"):
            out, w = model_outcome(r["verdict"], r["game"])
            s = acc.setdefault(r["id"], [0.0, 0.0])
            s[0] += out * w
            s[1] += w
    return {q: s[0] / s[1] for q, s in acc.items()}


def aggregate(rows: list[dict[str, Any]], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Win rate against the baseline (%), its bootstrap 95% CI, and the verdict counts.

    `rows`: {id, game (1|2), verdict (None when unparseable)}.
    """
    values, groups = [], []
    for r in rows:
        if r.get("verdict"):
            out, w = model_outcome(r["verdict"], r["game"])
            values.extend([out] * w)
            groups.extend([r["id"]] * w)
    counts = Counter()
    for r in rows:
        v = r.get("verdict")
        if v:
            # From the model's side: "model>>baseline" etc., independent of the order of the game.
            counts[_model_side(v, r["game"])] += 1
        else:
            counts["unparseable"] += 1
    result: dict[str, Any] = {"n_games": len(rows), "n_questions": len({r["id"] for r in rows}),
                              "n_unparseable": counts.get("unparseable", 0), "verdicts": dict(counts)}
    if not values:
        return result | {"win_rate": None, "ci95": None}
    ci = bootstrap_grouped_mean_ci(values, groups, n_boot=n_boot, seed=seed)
    return result | {"win_rate": round(100 * float(np.mean(values)), 2),
                     "ci95": [round(100 * ci.low, 2), round(100 * ci.high, 2)]}


def _model_side(verdict: str, game: int) -> str:
    if verdict == "A=B":
        return "tie"
    model_is_a = game == 2
    a_wins = verdict.startswith("A")
    strong = ">>" in verdict
    if a_wins == model_is_a:
        return "model_much_better" if strong else "model_better"
    return "baseline_much_better" if strong else "baseline_better"
