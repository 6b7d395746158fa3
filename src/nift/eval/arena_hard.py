"""Arena-Hard: pairwise judgments against a baseline's answers, both orders, win rate with a bootstrap CI.

As arena-hard-auto v0.1 does it: for every question the judge sees the question, then assistant A's and B's
answers, in two games — game 1 with the baseline as A and the model as B, game 2 swapped — with the official system
prompt and template (`judge_config.yaml`: temperature 0, 4096 tokens); the verdict is read with
`\\[\\[([AB<>=]+)\\]\\]`: `[[A>>B]]`, `[[A>B]]`, `[[A=B]]`, `[[B>A]]`, `[[B>>A]]`. A judgment with no verdict gets a
second attempt ("continue your judgment and finish by outputting a final verdict label"); one with conflicting
verdicts is not retried (arena-hard's `get_score`). Both are counted and reported. The score: a decisive verdict
("significantly better") counts 3 times (arena-hard's WEIGHT = 3); ties count one half; with one model against the
baseline, arena-hard's Bradley-Terry fit reduces to this weighted win rate. The 95% CI resamples questions.

Arena-Hard v2.0 data (questions with `uid` and `prompt`) is judged and scored with v2.0's own rules: two verdict
patterns on the upper-cased judgment, the last match, ten labels (`A<<B` etc. too), no second attempt, and a
question counts only when both of its games have a verdict. Style control: `arena_style`.
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
# arena-hard v2.0 (`gen_judgment.py`, `show_result.py`): two patterns tried in turn on the upper-cased judgment, the
# last match wins, and ten labels count: assistant A's score and the label's weight.
V2_PATTERNS = (r"\[\[([AB<>=]+)\]\]", r"\[([AB<>=]+)\]")
V2_LABELS = {"A>B": (1.0, 1), "A>>B": (1.0, WEIGHT), "A=B": (0.5, 1), "A<<B": (0.0, WEIGHT), "A<B": (0.0, 1),
             "B>A": (0.0, 1), "B>>A": (0.0, WEIGHT), "B=A": (0.5, 1), "B<<A": (1.0, WEIGHT), "B<A": (1.0, 1)}


def judge_settings(judge_config: dict[str, Any] | None, version: str = "v0.1") -> dict[str, Any]:
    """System prompt, template and verdict rules: from the data's judge config when it has one (v0.1's
    judge_config.yaml, or v2.0's arena-hard-v2.0.yaml with {QUESTION}/{ANSWER_A}/{ANSWER_B} and regex_patterns)."""
    cfg = judge_config or {}
    tmpl = cfg.get("prompt_template", PROMPT_TEMPLATE)
    if isinstance(tmpl, list):
        tmpl = tmpl[0]
    tmpl = tmpl.replace("{QUESTION}", "{question_1}").replace("{ANSWER_A}", "{answer_1}").replace(
        "{ANSWER_B}", "{answer_2}")
    patterns = cfg.get("regex_patterns") or ([cfg["regex_pattern"]] if "regex_pattern" in cfg else None)
    if patterns is None:
        patterns = list(V2_PATTERNS) if version == "v2.0" else [VERDICT_PATTERN]
    return {"system_prompt": cfg.get("system_prompt", SYSTEM_PROMPT), "prompt_template": tmpl,
            "regex_pattern": patterns[0], "regex_patterns": patterns, "version": version}


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


def parse_verdict_v2(judgment: str, patterns: list[str] | tuple[str, ...] = V2_PATTERNS) -> tuple[str | None, str]:
    """arena-hard v2.0's `get_score`: the first pattern with a match on the upper-cased judgment gives its last
    match; conflicting labels are not an error there. (verdict, status) with status `ok`, `missing` or `invalid`
    (a label v2.0's scoring does not know)."""
    for pattern in patterns:
        matches = [m for m in re.findall(pattern, judgment.upper()) if m != ""]
        if matches:
            label = matches[-1].strip("\n")
            return (label, "ok") if label in V2_LABELS else (None, "invalid")
    return None, "missing"


def model_outcome(verdict: str, game: int) -> tuple[float, int]:
    """(model's outcome 1 / 0.5 / 0, weight) for one game's verdict, from the model's side: A is the baseline in
    game 1 and the model in game 2."""
    a_score, weight = V2_LABELS[verdict]
    return (a_score if game == 2 else 1.0 - a_score), weight


def complete_questions(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """arena-hard v2.0 drops a question unless both of its games have a verdict."""
    games: dict[str, list[bool]] = {}
    for r in rows:
        games.setdefault(r["id"], []).append(bool(r.get("verdict")))
    keep = {q for q, v in games.items() if len(v) == 2 and all(v)}
    return [r if r["id"] in keep else {**r, "verdict": None} for r in rows]


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
    out, weight = model_outcome(verdict, game)
    if out == 0.5:
        return "tie"
    if out == 1.0:
        return "model_much_better" if weight > 1 else "model_better"
    return "baseline_much_better" if weight > 1 else "baseline_better"
