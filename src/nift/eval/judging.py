"""Judging for the stage: each judged benchmark's tasks, the judge's outcomes turned into results, judgment rows and
the per-item rows `nift compare` pairs (MT-Bench over runs, Arena-Hard v0.1 / v2.0 with style control, AlpacaEval)."""

from __future__ import annotations

from typing import Any

from nift.eval import alpaca_eval, arena_hard, arena_style, mt_bench, mt_bench_run
from nift.eval.judge import Judge, JudgeTask

JUDGE_MAX_TOKENS = {"mt_bench": mt_bench.JUDGE_MAX_TOKENS, "arena_hard": arena_hard.JUDGE_MAX_TOKENS,
                    "alpaca_eval": alpaca_eval.JUDGE_MAX_TOKENS}


def judge_max_tokens(cfg: Any, bench: str) -> int:
    """The answer limit the judge is sent for `bench`: --judge-max-tokens (or --judge.max-tokens), else the
    benchmark's official one; AlpacaEval's judge always answers with one token (its log-probabilities score)."""
    if bench == "alpaca_eval":
        return JUDGE_MAX_TOKENS[bench]
    return cfg.judge_max_tokens or JUDGE_MAX_TOKENS[bench]


def item_row(metric: str, unit: str, value: float | bool, kind: str, better: str = "+") -> dict[str, Any]:
    return {"metric": metric, "unit": unit, "value": float(value), "kind": kind, "better": better}


def judge_mt_bench(items, answers, d, judge: Judge, cfg) -> tuple[dict, list[dict], list[dict]]:
    agg_rows, judgments, outcomes = mt_bench_run.judge(
        answers, items, d, judge, judge_max_tokens(cfg, "mt_bench"), cfg.mt_bench_runs,
        cfg.judge_repeats)
    res = mt_bench.aggregate(agg_rows, n_boot=cfg.n_boot, seed=cfg.seed)
    res.update(generation_runs=cfg.mt_bench_runs, judge_repeats=cfg.judge_repeats,
               judge_status=status_counts(outcomes))
    return res, mt_bench_run.per_item_rows(agg_rows), judgments


def judge_arena_hard(items, answers, d, judge: Judge, cfg) -> tuple[dict, list[dict], list[dict]]:
    settings = arena_hard.judge_settings(d.judge_config, d.version)
    if d.version == "v2.0":
        task_rules = {"parse": lambda text: arena_hard.parse_verdict_v2(text, settings["regex_patterns"]),
                      "retry_on": ()}  # v2.0 asks once
    else:
        task_rules = {"parse": lambda text: arena_hard.parse_verdict(text, settings["regex_pattern"])}
    by_q = {a["id"]: a["answer"] for a in answers if a["status"] == "ok"}
    tasks, meta = [], {}
    missing_baseline = 0
    for it in items:
        if it["id"] not in by_q:
            continue
        base = d.baselines.get(it["id"])
        if base is None:
            missing_baseline += 1
            continue
        for game in (1, 2):
            msgs = arena_hard.judge_messages(it["turns"][0], by_q[it["id"]], base["answer"], game, settings,
                                             it.get("category"))
            tid = f"arena_hard:{it['id']}:game{game}"
            tasks.append(JudgeTask(tid, msgs, follow_up=arena_hard.FOLLOW_UP, **task_rules))
            meta[tid] = (it, game, base["model"])
    outcomes = judge.judge(tasks, judge_max_tokens(cfg, "arena_hard"), "judge arena_hard")
    judgments, agg_rows = [], []
    for tid, o in outcomes.items():
        it, game, baseline_model = meta[tid]
        judgments.append({"id": it["id"], "game": game, "baseline_model": baseline_model, "verdict": o["value"],
                          **{k: v for k, v in o.items() if k != "value"}})
        agg_rows.append({"id": it["id"], "game": game, "verdict": o["value"]})
    counted = arena_hard.complete_questions(agg_rows) if d.version == "v2.0" else agg_rows
    res = arena_hard.aggregate(counted, n_boot=cfg.n_boot, seed=cfg.seed)
    res.update(version=d.version, baseline_models=sorted({m for _, _, m in meta.values()}),
               questions_without_baseline=missing_baseline, judge_status=status_counts(outcomes))
    if d.version == "v2.0":
        res["questions_dropped_incomplete"] = len({r["id"] for r in counted if not r["verdict"]})
    if cfg.arena_style_control:
        res["style_control"] = _arena_style(counted, by_q, d, cfg)
    rows = [item_row("arena_hard/score", q, s, "score") for q, s in arena_hard.question_scores(counted).items()]
    return res, rows, judgments


def _arena_style(rows: list[dict[str, Any]], by_q: dict[str, str], d: Any, cfg: Any) -> dict[str, Any]:
    meta: dict[tuple[str, str], dict[str, int]] = {}
    battles = []
    for r in rows:
        if not r["verdict"]:
            continue
        q = r["id"]
        for side, text in (("model", by_q[q]), ("baseline", d.baselines[q]["answer"])):
            if (q, side) not in meta:
                meta[(q, side)] = arena_style.style_metadata(text, d.version)
        out, weight = arena_hard.model_outcome(r["verdict"], r["game"])
        battles.extend([{"id": q, "outcome": out, "model_meta": meta[(q, "model")],
                         "baseline_meta": meta[(q, "baseline")]}] * weight)
    score = arena_style.style_controlled_score(battles, d.version)
    ci = arena_style.bootstrap_ci(battles, d.version, n_boot=cfg.n_boot, seed=cfg.seed)
    n = max(1, len({q for q, _ in meta}))
    mean = {side: {k: round(sum(v[k] for (_, s), v in meta.items() if s == side) / n, 2)
                   for k in arena_style.FEATURES} for side in ("model", "baseline")}
    return {"win_rate": None if score is None else round(score, 2),
            "ci95": [round(ci[0], 2), round(ci[1], 2)] if ci else None,
            "method": f"arena-hard-auto {d.version} style control (length and markdown)", "mean_style": mean}


def status_counts(outcomes: dict[str, dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for o in outcomes.values():
        key = o["status"] if o["status"] != "ok" or o["attempts"] == 1 else "ok_after_retry"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def judge_alpaca_eval(items, answers, d, judge: Judge, cfg) -> tuple[dict, list[dict], list[dict]]:
    res, rows, judgments = alpaca_eval.judge_answers(items, answers, judge, n_boot=cfg.n_boot, seed=cfg.seed,
                                                     gamed=d.gamed)
    res["judge_status"] = status_counts({j["id"]: j for j in judgments})
    return res, rows, judgments
