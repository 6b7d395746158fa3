"""IFEval: verifiable instructions, scored with lm-eval's maintained checkers.

Each prompt carries 1-3 instructions (`instruction_id_list`, `kwargs`); lm-eval's `test_instruction_following_strict`
and `_loose` (the loose variant also accepts the answer without its first/last line or without `*`) say which are
followed. Four numbers, as in lm-eval's `ifeval` task: prompt-level accuracy (all instructions followed) and
instruction-level accuracy (over all instructions), each strict and loose. Official generation settings: greedy,
1280 new tokens, no stop sequence. langdetect (the `language:response_language` check) is seeded so that a score
is reproducible, and so is Python's `random` for the checkers that draw missing arguments; lm-eval leaves both
unseeded.
"""

from __future__ import annotations

import random
from typing import Any

from nift.errors import missing_package

MAX_NEW_TOKENS = 1280
METRICS = ("prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc", "inst_level_loose_acc")


def _lm_eval_ifeval() -> Any:
    from nift.eval.nltk_setup import ensure_punkt_tab

    ensure_punkt_tab()  # before the import: lm-eval's module downloads punkt_tab at import time when it is missing
    try:
        import langdetect
        from lm_eval.tasks.ifeval import utils
    except ImportError as e:
        name = getattr(e, "name", None) or "lm_eval"
        raise missing_package(name, extra="eval", purpose="IFEval scoring (lm-eval's checkers)") from None
    # langdetect samples at random unless seeded: unseeded, the response_language check can flip between two
    # scorings of the same answer.
    langdetect.DetectorFactory.seed = 0
    return utils


def seed_for(key: int | str) -> str:
    return f"nift-ifeval:{key}"


def score_answer(item: dict[str, Any], response: str) -> dict[str, Any]:
    """Strict and loose results for one prompt: per-instruction booleans and the prompt-level verdicts."""
    u = _lm_eval_ifeval()
    inp = u.InputExample(key=item["key"], instruction_id_list=item["instruction_id_list"], prompt=item["prompt"],
                         kwargs=item["kwargs"])
    # A checker whose kwargs are unusable draws its own at random (the official prompt 1122 asks for the "letter"
    # '#': lm-eval picks a random letter); a per-prompt seed makes that draw, and so the score, reproducible.
    state = random.getstate()
    random.seed(seed_for(item["key"]))
    try:
        strict = u.test_instruction_following_strict(inp, response)
        loose = u.test_instruction_following_loose(inp, response)
    finally:
        random.setstate(state)
    return {
        "instruction_id_list": list(item["instruction_id_list"]),
        "strict": [bool(x) for x in strict.follow_instruction_list],
        "loose": [bool(x) for x in loose.follow_instruction_list],
        "prompt_strict": bool(strict.follow_all_instructions),
        "prompt_loose": bool(loose.follow_all_instructions),
    }


def aggregate(scores: list[dict[str, Any]]) -> dict[str, Any]:
    """lm-eval's four IFEval metrics plus per-instruction-type strict accuracy."""
    if not scores:
        return {m: None for m in METRICS} | {"n_prompts": 0, "n_instructions": 0}
    inst_strict = [x for s in scores for x in s["strict"]]
    inst_loose = [x for s in scores for x in s["loose"]]
    by_type: dict[str, list[bool]] = {}
    for s in scores:
        for iid, ok in zip(s["instruction_id_list"], s["strict"], strict=True):
            by_type.setdefault(iid, []).append(ok)
    return {
        "prompt_level_strict_acc": sum(s["prompt_strict"] for s in scores) / len(scores),
        "inst_level_strict_acc": sum(inst_strict) / len(inst_strict),
        "prompt_level_loose_acc": sum(s["prompt_loose"] for s in scores) / len(scores),
        "inst_level_loose_acc": sum(inst_loose) / len(inst_loose),
        "n_prompts": len(scores),
        "n_instructions": len(inst_strict),
        "by_instruction_strict": {k: round(sum(v) / len(v), 4) for k, v in sorted(by_type.items())},
    }
