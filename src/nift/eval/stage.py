"""`nift eval`: answer the benchmarks with one model, score them, and write `run_dir/eval/<name>/`.

Run as: nift eval --model runs/x/train --name after --benchmarks ifeval mt_bench --judge '{"model": "gpt-4-0613"}'

Written into `run_dir/eval/<name>/`:
- `answers/<benchmark>.jsonl`: one row per answer (question, answer, finish_reason stop|length, ended_by
  eos|stop_string|length, tokens, latency, model version, judge-free signals);
- `judgments/<benchmark>.jsonl`: one row per judgment (score or verdict, status, attempts, judge model and version,
  the judge's text, tokens, cost);
- `per_item.jsonl`: every metric per unit (the input of `nift compare`);
- `results.json`, `report.md`: the scores, the signals, the judge, the data files' hashes, tokens and cost;
- `lm_eval.json` with `--lm-eval TASKS`;
- `manifest.json`, last.
Generated answers and judgments live in the engine's stores under `run_dir/eval/_cache/`, shared by every eval of
the run: a second eval with another judge reuses the answers, and an interrupted eval resumes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from nift.artifacts import StageContext, read_manifest, run_stage, sha256_file, write_json, write_jsonl
from nift.config import scrub
from nift.errors import ConfigError
from nift.eval import alpaca_eval, arena_hard, data, ifeval, judging, mt_bench, mt_bench_run, signals
from nift.eval.generation import Generator, GenSettings
from nift.eval.judge import Judge
from nift.eval.judging import item_row
from nift.eval.target import Target, resolve_target
from nift.eval.templates import TEMPLATES

CACHE_DIR = "_cache"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
OFFICIAL_MAX_NEW_TOKENS = {"ifeval": ifeval.MAX_NEW_TOKENS, "mt_bench": mt_bench.MAX_NEW_TOKENS,
                           "arena_hard": arena_hard.MAX_NEW_TOKENS, "alpaca_eval": alpaca_eval.MAX_NEW_TOKENS}
JUDGED = ("mt_bench", "arena_hard", "alpaca_eval")


def eval_name(cfg: Any) -> str:
    if cfg.name:
        if not _NAME.match(cfg.name):
            raise ConfigError(f"--name {cfg.name!r}: use letters, digits, '.', '_' or '-' (not starting with one of "
                              "the last three)")
        return cfg.name
    base = Path(cfg.model.rstrip("/")).name if cfg.model else "model"
    if base in ("train", "model") and cfg.model:
        base = Path(cfg.model.rstrip("/")).parent.name + "-" + base
    return re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-._") or "model"


def _check(cfg: Any) -> None:
    if not cfg.model:
        raise ConfigError("--model is required: a model reference, a run_dir/train folder, a run_dir/merge/model "
                          "folder, or the model name of an OpenAI-compatible endpoint (with --backend openai)")
    if not cfg.benchmarks and not cfg.lm_eval:
        raise ConfigError("nothing to evaluate: give --benchmarks and/or --lm-eval TASKS")
    if cfg.template not in ("auto", *TEMPLATES) and "{prompt}" not in cfg.template:
        from nift.errors import did_you_mean

        raise ConfigError(f"--template {cfg.template!r} is not a template.{did_you_mean(cfg.template, TEMPLATES)} "
                          "(or give a template string containing {prompt})")


def _backend_config(cfg: Any, target: Target) -> Any:
    from nift.llm.config import BackendConfig

    return BackendConfig(
        backend=cfg.backend, model=target.load_ref, base_url=cfg.base_url, api_key_env=cfg.api_key_env,
        endpoint="completions", dtype=cfg.dtype, device=cfg.device, batch_size=cfg.batch_size,
        concurrency=cfg.concurrency, max_tokens=1024, temperature=0.0,
    )


def _pick_template(cfg: Any, target: Target, gen: Generator, log) -> tuple[str, str | None, str]:
    """(template, system prompt, why). `auto` asks the model as the paper did, in a conversation, whatever template
    it was trained with."""
    if cfg.template != "auto":
        return cfg.template, cfg.system_prompt, "set by eval.template"
    if gen.is_endpoint:
        return "chat", cfg.system_prompt, "an endpoint applies the model's own chat template"
    from nift.eval.templates import conversation_template

    ref = cfg.template_model or (target.meta.get("base_model") if target.kind == "train" and target.meta
                                 else target.load_ref)
    template, why = conversation_template(ref)
    if cfg.template_model:
        why += f", chosen for {cfg.template_model}"
    if template == "chat" and not getattr(gen.tokenizer, "chat_template", None):
        template, why = "one_shot", "FastChat's one_shot: the loaded tokenizer has no chat template"
    log(f"[eval] template {template!r}: {why}"
        + (f" (trained with {target.template!r})" if target.template else ""))
    return template, cfg.system_prompt, why


def _file_hashes(files: dict[str, str]) -> dict[str, str]:
    return {k: sha256_file(v) for k, v in sorted(files.items())}


def run(cfg: Any, run_dir: str | Path, force: bool = False, log=print):
    """Evaluate `cfg.model` into `run_dir/eval/<name>/`."""
    _check(cfg)
    run_dir = Path(run_dir)
    name = eval_name(cfg)
    stage_dir = run_dir / "eval" / name
    endpoint = cfg.backend not in ("hf", "vllm")
    target = resolve_target(cfg.model, endpoint=endpoint, log=log)

    # Load every benchmark's data and build the judge before anything is generated: a wrong path or a missing API
    # key should fail now, not after an hour of generation.
    bench_data: dict[str, Any] = {}
    for bench in cfg.benchmarks:
        if bench == "ifeval":
            bench_data[bench] = data.load_ifeval(cfg.ifeval_data)
        elif bench == "mt_bench":
            bench_data[bench] = data.load_mt_bench(cfg.mt_bench_data)
        elif bench == "arena_hard":
            bench_data[bench] = data.load_arena_hard(cfg.arena_hard_data, cfg.arena_baseline)
        elif bench == "alpaca_eval":
            bench_data[bench] = data.load_alpaca_eval(cfg.alpaca_eval_data, cfg.alpaca_eval_glm)
    needs_judge = any(b in cfg.benchmarks for b in JUDGED)
    if needs_judge:
        from nift.llm.backends import make_backend

        make_backend(cfg.judge, log=log).close()  # checks the judge's API key / package now

    # A model folder rewritten in place keeps its path: its weights fingerprint re-runs the stage.
    old = read_manifest(stage_dir)
    if old and old.get("stats", {}).get("target", {}).get("fingerprint") != target.fingerprint:
        force = True
    inputs = {target.stage_dir.name: target.stage_dir} if target.stage_dir else None
    cache = run_dir / "eval" / CACHE_DIR

    def body(ctx: StageContext) -> None:
        _evaluate(ctx, cfg, name, target, bench_data, cache, log)

    result = run_stage("eval", stage_dir, cfg, body, inputs=inputs, force=force, log=log)
    if not result.skipped:
        log(format_summary(json.loads((stage_dir / "results.json").read_text(encoding="utf-8"))))
        log(f"[eval] written to {stage_dir}")
    return result


def _evaluate(ctx: StageContext, cfg: Any, name: str, target: Target, bench_data: dict[str, Any], cache: Path,
              log) -> None:
    results: dict[str, Any] = {
        "name": name, "model": target.ref, "target": {"kind": target.kind, "load": target.load_ref,
                                                      "fingerprint": target.fingerprint},
        "benchmarks": {}, "signals": {}, "data": {},
    }
    per_item: list[dict[str, Any]] = []
    all_answers: list[dict[str, Any]] = []
    gen = judge = None
    gen_usage: dict[str, Any] = {}
    try:
        if cfg.benchmarks:
            bcfg = _backend_config(cfg, target)
            gen = Generator(bcfg, cache / f"answers-{target.fingerprint.replace(':', '-')[:40]}.sqlite",
                            progress=cfg.progress, log=log)
            template, system, why = _pick_template(cfg, target, gen, log)
            gen_usage = gen.usage
            results["template"] = template
            results["template_reason"] = why
            results["trained_template"] = target.template
            results["generation"] = {"backend": cfg.backend, "temperature": cfg.temperature,
                                     "max_new_tokens": cfg.max_new_tokens, "limit": cfg.limit}
        if any(b in cfg.benchmarks for b in JUDGED):
            judge = Judge(cfg.judge, cache / "judgments.sqlite", progress=cfg.progress, log=log,
                          budget_usd=cfg.judge_budget_usd)
            # the answer limits really sent, per benchmark (the judge config's own max_tokens is not sent as such)
            results["judge"] = {**judge.describe(), "max_tokens": {
                b: judging.judge_max_tokens(cfg, b) for b in cfg.benchmarks if b in JUDGED}}
        for bench in cfg.benchmarks:
            d = bench_data[bench]
            settings = GenSettings(template, cfg.max_new_tokens or OFFICIAL_MAX_NEW_TOKENS[bench], system)
            with ctx.timed(f"{bench}_s"):
                if bench == "ifeval":
                    items = d[: cfg.limit] if cfg.limit else d
                    results["data"][bench] = _file_hashes(data.resolve_files(bench, cfg.ifeval_data))
                    answers = gen.answer(bench, items, settings, lambda it: cfg.temperature or 0.0)
                    res, rows = _score_ifeval(items, answers)
                elif bench == "mt_bench":
                    items = d.questions[: cfg.limit] if cfg.limit else d.questions
                    results["data"][bench] = _file_hashes(d.files)
                    temp = (lambda it: cfg.temperature) if cfg.temperature is not None else \
                        (lambda it: mt_bench.temperature(it["category"]))
                    answers = mt_bench_run.generate(gen, items, settings, temp, cfg.mt_bench_runs, cfg.seed)
                    res, rows, judgments = judging.judge_mt_bench(items, answers, d, judge, cfg)
                    write_jsonl(ctx.path(f"judgments/{bench}.jsonl"), judgments)
                else:
                    items = d.questions[: cfg.limit] if cfg.limit else d.questions
                    results["data"][bench] = _file_hashes(d.files)
                    answers = gen.answer(bench, items, settings, lambda it: cfg.temperature or 0.0)
                    judge_fn = judging.judge_arena_hard if bench == "arena_hard" else judging.judge_alpaca_eval
                    res, rows, judgments = judge_fn(items, answers, d, judge, cfg)
                    write_jsonl(ctx.path(f"judgments/{bench}.jsonl"), judgments)
            for a in answers:
                if a["status"] == "ok":
                    a["signals"] = signals.answer_signals(a["answer"], a["question"], a["ended_by"],
                                                          cfg.repetition_ngram, cfg.echo_words)
            write_jsonl(ctx.path(f"answers/{bench}.jsonl"), answers)
            ok = [a for a in answers if a["status"] == "ok"]
            res["answers"] = {"n": len(answers), "failed": len(answers) - len(ok)}
            results["benchmarks"][bench] = res
            results["signals"][bench] = signals.summarize(ok)
            per_item.extend(rows)
            all_answers.extend(ok)
        if all_answers:
            results["signals"]["all"] = signals.summarize(all_answers)
            per_item.extend(_signal_items(all_answers))
        if cfg.lm_eval:
            from nift.eval.lm_eval_run import run_lm_eval

            if gen is not None:
                gen.close()
                gen = None  # free the model before lm-eval loads its own copy
            with ctx.timed("lm_eval_s"):
                lm = run_lm_eval(target.load_ref, cfg.lm_eval, include_path=cfg.lm_eval_include,
                                 num_fewshot=cfg.lm_eval_fewshot, limit=cfg.lm_eval_limit,
                                 batch_size=cfg.batch_size, device=cfg.device, dtype=cfg.dtype,
                                 base_url=cfg.base_url if cfg.backend == "openai" else None, seed=cfg.seed, log=log)
            write_json(ctx.path("lm_eval.json"), {t: {k: v for k, v in r.items() if k != "samples"}
                                                  for t, r in lm.items()})
            results["lm_eval"] = {t: r["results"].get(t, r["results"]) for t, r in lm.items()}
            per_item.extend(_lm_eval_items(lm))
        results["usage"] = {"generation": dict(gen_usage), "judge": judge.usage if judge else None}
    finally:
        if gen is not None:
            gen.close()
        if judge is not None:
            judge.close()
    ctx.cost.update({k: v for k, v in results["usage"].items() if v})
    write_jsonl(ctx.path("per_item.jsonl"), per_item)
    write_json(ctx.path("results.json"), results)
    ctx.path("report.md").write_text(scrub(format_summary(results)) + "\n", encoding="utf-8")
    ctx.stats.update({"target": results["target"], "template": results.get("template"),
                      "scores": headline(results), "signals": results["signals"].get("all", {})})


# ------------------------------------------------------------------------------------------------- scoring


def _unit(a: dict[str, Any]) -> str:
    # Run 0 keeps the plain unit, so a one-run evaluation pairs with the first run of a several-run one.
    return f"{a['id']}#t{a['turn'] + 1}" + (f"@run{a['run']}" if a.get("run") else "")


def _score_ifeval(items: list[dict[str, Any]], answers: list[dict[str, Any]]) -> tuple[dict, list[dict]]:
    by_id = {it["id"]: it for it in items}
    scores, rows = [], []
    for a in answers:
        if a["status"] != "ok":
            continue
        sc = ifeval.score_answer(by_id[a["id"]], a["answer"])
        a["ifeval"] = sc
        scores.append(sc)
        rows.append(item_row("ifeval/prompt_strict", a["id"], sc["prompt_strict"], "binary"))
        rows.append(item_row("ifeval/prompt_loose", a["id"], sc["prompt_loose"], "binary"))
        for i, (st, lo) in enumerate(zip(sc["strict"], sc["loose"], strict=True)):
            rows.append(item_row("ifeval/inst_strict", f"{a['id']}#{i}", st, "binary"))
            rows.append(item_row("ifeval/inst_loose", f"{a['id']}#{i}", lo, "binary"))
    res = ifeval.aggregate(scores)
    for m in ifeval.METRICS:
        if res.get(m) is not None:
            res[m] = round(res[m], 4)
    return res, rows


def _signal_items(answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for a in answers:
        unit = f"{a['benchmark']}:{_unit(a)}"
        for key, kind in signals.SIGNAL_KINDS.items():
            value = a.get(key) if key == "completion_tokens" else a["signals"].get(key)
            if value is not None:
                rows.append(item_row(f"signals/{key}", unit, value, kind, signals.SIGNAL_BETTER[key]))
    return rows


def _lm_eval_items(lm: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for _task, r in lm.items():
        for sub, docs in r.get("samples", {}).items():
            metrics = {k for d in docs for k in d if k != "doc_id"}
            for m in sorted(metrics):
                vals = [d[m] for d in docs if m in d]
                kind = "binary" if all(v in (0.0, 1.0) for v in vals) else "score"
                rows.extend(item_row(f"lm_eval/{sub}/{m}", str(d["doc_id"]), d[m], kind) for d in docs if m in d)
    return rows


# -------------------------------------------------------------------------------------------------- report


def headline(results: dict[str, Any]) -> dict[str, Any]:
    b = results.get("benchmarks", {})
    out: dict[str, Any] = {}
    if "ifeval" in b:
        out.update({f"ifeval_{m}": b["ifeval"].get(m) for m in ifeval.METRICS})
    if "mt_bench" in b:
        out["mt_bench_score"] = b["mt_bench"].get("score")
    if "arena_hard" in b:
        out["arena_hard_win_rate"] = b["arena_hard"].get("win_rate")
        if b["arena_hard"].get("style_control"):
            out["arena_hard_style_controlled"] = b["arena_hard"]["style_control"]["win_rate"]
    if "alpaca_eval" in b:
        out["alpaca_eval_win_rate"] = b["alpaca_eval"].get("win_rate")
        out["alpaca_eval_lc_win_rate"] = b["alpaca_eval"].get("length_controlled_winrate")
    return out


def format_summary(results: dict[str, Any]) -> str:
    lines = [f"# nift eval: {results['name']}", "", f"model: {results['model']} ({results['target']['kind']})"]
    if results.get("template"):
        lines.append(f"template: {results['template']}"
                     + (f" (trained with {results['trained_template']})" if results.get("trained_template") else ""))
    if results.get("judge"):
        j = results["judge"]
        lines.append(f"judge: {j['backend']}:{j['model']}")
    b = results.get("benchmarks", {})
    lines += ["", "| benchmark | metric | value |", "|---|---|---:|"]
    if "ifeval" in b:
        for m in ifeval.METRICS:
            lines.append(f"| IFEval | {m} | {b['ifeval'].get(m)} |")
    if "mt_bench" in b:
        r = b["mt_bench"]
        lines.append(f"| MT-Bench | score (1-10) | {r['score']} {r['ci95'] or ''} |")
        if len(r.get("runs", [])) > 1:
            lines.append(f"| MT-Bench | score per run | {', '.join(str(x['score']) for x in r['runs'])} |")
        for k, v in r["per_turn"].items():
            lines.append(f"| MT-Bench | {k} | {v} |")
        for k, v in r["per_category"].items():
            lines.append(f"| MT-Bench | {k} | {v} |")
        lines.append(f"| MT-Bench | unparseable judgments | {r['n_unparseable']} of {r['n_judgments']} |")
    if "arena_hard" in b:
        r = b["arena_hard"]
        lines.append(f"| Arena-Hard | win rate % vs {', '.join(r.get('baseline_models', []))} | {r['win_rate']} "
                     f"{r['ci95'] or ''} |")
        if r.get("style_control"):
            sc = r["style_control"]
            lines.append(f"| Arena-Hard | style-controlled win rate % | {sc['win_rate']} {sc['ci95'] or ''} |")
        lines.append(f"| Arena-Hard | unparseable judgments | {r['n_unparseable']} of {r['n_games']} |")
    if "alpaca_eval" in b:
        r = b["alpaca_eval"]
        vs = ", ".join(r.get("reference_generators", []))
        lines.append(f"| AlpacaEval | win rate % vs {vs} | {r['win_rate']} {r['ci95'] or ''} |")
        if "length_controlled_winrate" in r:
            lines.append(f"| AlpacaEval | length-controlled win rate % | {r['length_controlled_winrate']} "
                         f"{r.get('lc_ci95') or ''} |")
        lines.append(f"| AlpacaEval | unparseable judgments | {r['n_unparseable']} of {r['n_judgments']} |")
    for task, r in (results.get("lm_eval") or {}).items():
        for k, v in r.items():
            if isinstance(v, (int, float)) and "stderr" not in k:
                lines.append(f"| lm-eval {task} | {k} | {round(v, 4)} |")
    sig = results.get("signals", {})
    if sig:
        lines += ["", "| judge-free signals | answers | stopped (EOS) | stop string | token limit | empty "
                  "| repeated 4-grams | repeated sentences | echo | mean words |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for k, s in sig.items():
            if s.get("n"):
                lines.append(f"| {k} | {s['n']} | {s['stop_rate']} | {s.get('stop_string_rate', '')} | "
                             f"{s['hit_limit_rate']} | {s['empty_rate']} | "
                             f"{s['repeated_ngram_share']} | {s['repeated_sentence_share']} | {s['echo_rate']} | "
                             f"{s['words_mean']} |")
    u = results.get("usage", {})
    if u.get("judge"):
        lines += ["", f"judge: {u['judge']['requests']} requests ({u['judge']['cached']} cached), "
                  f"${u['judge']['cost_usd']:.4f}, {u['judge']['unparseable']} unparseable after "
                  f"{u['judge']['retried']} retries"]
    return "\n".join(lines)
