"""The report's evaluation section: before/after scores with confidence intervals and paired tests, and the
summary that opens the report (the example answers are `report/examples.py`).

Scores are the evaluations' own (`eval/<name>/results.json`). Intervals: the evaluation's own where it computed one
(MT-Bench, Arena-Hard), else a percentile bootstrap over the units of `per_item.jsonl` (IFEval prompts or
instructions, answers). Differences, their paired bootstrap intervals and the paired tests (McNemar for pass/fail,
Wilcoxon for scores) come from `nift compare`; when the run holds no comparison of the two, the report runs the
same code into `report/compare/`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nift.report import charts
from nift.report import formatting as F
from nift.report.document import Card, Details, Figure, Para, Section, Table
from nift.report.rundir import RunDir, Stage, iter_jsonl, read_json


@dataclass(frozen=True)
class Metric:
    group: str  # panel of the bar chart
    bench: str
    label: str
    path: str  # dotted path into results.json
    unit: str | None  # metric name in per_item.jsonl / compare.json
    scale: str  # prop: a proportion shown in %; pct: already in %; score: as is
    ci_path: str | None = None
    better: str = "+"


METRICS = [
    *(Metric("IFEval accuracy (%)", "IFEval", label, f"benchmarks.ifeval.{key}", unit, "prop")
      for label, key, unit in [("prompt-level strict", "prompt_level_strict_acc", "ifeval/prompt_strict"),
                               ("instruction-level strict", "inst_level_strict_acc", "ifeval/inst_strict"),
                               ("prompt-level loose", "prompt_level_loose_acc", "ifeval/prompt_loose"),
                               ("instruction-level loose", "inst_level_loose_acc", "ifeval/inst_loose")]),
    Metric("MT-Bench (1-10)", "MT-Bench", "score (1-10)", "benchmarks.mt_bench.score", "mt_bench/score", "score",
           "benchmarks.mt_bench.ci95"),
    Metric("Arena-Hard win rate (%)", "Arena-Hard", "win rate vs baseline", "benchmarks.arena_hard.win_rate",
           "arena_hard/score", "pct", "benchmarks.arena_hard.ci95"),
    Metric("Arena-Hard win rate (%)", "Arena-Hard", "style-controlled", "benchmarks.arena_hard.style_control.win_rate",
           None, "pct", "benchmarks.arena_hard.style_control.ci95"),
    Metric("AlpacaEval 2 win rate (%)", "AlpacaEval", "win rate vs reference", "benchmarks.alpaca_eval.win_rate",
           "alpaca_eval/preference", "pct", "benchmarks.alpaca_eval.ci95"),
    Metric("AlpacaEval 2 win rate (%)", "AlpacaEval", "length-controlled",
           "benchmarks.alpaca_eval.length_controlled_winrate", None, "pct", "benchmarks.alpaca_eval.lc_ci95"),
    Metric("judge-free signals (%)", "signals", "stopped by itself (EOS)", "signals.all.stop_rate",
           "signals/stopped", "prop"),
    Metric("judge-free signals (%)", "signals", "cut at the template's stop string", "signals.all.stop_string_rate",
           "signals/stop_string", "prop", better=""),
    Metric("judge-free signals (%)", "signals", "hit the token limit", "signals.all.hit_limit_rate",
           "signals/hit_limit", "prop", better="-"),
    Metric("judge-free signals (%)", "signals", "empty answer", "signals.all.empty_rate", "signals/empty", "prop",
           better="-"),
    Metric("judge-free signals (%)", "signals", "repeated 4-grams", "signals.all.repeated_ngram_share",
           "signals/repeated_ngram_share", "prop", better="-"),
    Metric("judge-free signals (%)", "signals", "echoes the prompt", "signals.all.echo_rate", "signals/echo", "prop",
           better="-"),
    Metric("answer length", "signals", "mean words", "signals.all.words_mean", "signals/words", "score", better=""),
    Metric("answer length", "signals", "mean tokens", "signals.all.tokens_mean", "signals/completion_tokens",
           "score", better=""),
]


BENCH_NAMES = {"ifeval": "IFEval", "mt_bench": "MT-Bench", "arena_hard": "Arena-Hard"}


def _get(d: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


@dataclass
class Evaluation:
    name: str
    stage: Stage
    results: dict[str, Any]
    per_item: dict[str, list[float]]

    @classmethod
    def load(cls, name: str, stage: Stage) -> Evaluation:
        results = read_json(stage.dir / "results.json")
        per_item: dict[str, list[float]] = defaultdict(list)
        p = stage.dir / "per_item.jsonl"
        if p.is_file():
            for row in iter_jsonl(p):
                per_item[row["metric"]].append(float(row["value"]))
        return cls(name, stage, results, dict(per_item))


def _value(m: Metric, ev: Evaluation) -> float | None:
    v = _get(ev.results, m.path)
    return None if v is None else float(v)


def _interval(m: Metric, ev: Evaluation, n_boot: int, seed: int) -> tuple[float | None, float | None]:
    ci = _get(ev.results, m.ci_path) if m.ci_path else None
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci:
        return float(ci[0]), float(ci[1])
    vals = ev.per_item.get(m.unit or "")
    if m.scale == "pct" or not vals:
        return None, None
    from nift.eval.stats import bootstrap_mean_ci

    iv = bootstrap_mean_ci(vals, n_boot=n_boot, seed=seed)
    return iv.low, iv.high


def _show(m: Metric, v: float | None, lo: float | None = None, hi: float | None = None) -> str:
    if v is None:
        return F.DASH
    if m.scale == "prop":
        s, ci = F.pct(v), F.interval(lo, hi, as_pct=True)
    elif m.scale == "pct":
        s, ci = f"{v:.1f}%", (f"[{lo:.1f}, {hi:.1f}]" if lo is not None and hi is not None else "")
    else:
        s, ci = F.num(v), F.interval(lo, hi)
    return f"{s} {ci}".strip()


def _diff_scale(m: Metric) -> float:
    """Paired differences are over per-item units in [0, 1] for proportions and Arena-Hard question scores."""
    return 100.0 if m.scale in ("prop", "pct") else 1.0


def compare_result(run: RunDir, before: str, after: str, out: Path, n_boot: int, seed: int
                   ) -> tuple[dict[str, Any] | None, Path | None, bool]:
    """(compare.json, its folder, computed here?) for BEFORE vs AFTER: the run's `nift compare` output when it
    is there, else the same comparison computed into `out`."""
    d = run.compare_dir(before, after)
    if d is not None:
        return read_json(d / "compare.json"), d, False
    evals = run.done_evals()
    if before in evals and after in evals:
        from nift.eval.compare import compare

        result = compare(evals[before].dir, evals[after].dir, out=out, n_boot=n_boot, seed=seed, log=lambda s: None)
        return result, out, True
    return None, None, False


# ------------------------------------------------------------------------------------------------- results


def results(run: RunDir, before: str, after: str, report_dir: Path, n_boot: int, seed: int
            ) -> tuple[Section, list[Card], Para | None]:
    """The results section, the overview's cards, and the summary sentence (also shown in the overview)."""
    done = run.done_evals()
    if not done:
        blocks = [Para(f"No finished evaluation in `{run.path / 'eval'}`, so there are no results. Evaluate the model "
                       f"before and after fine-tuning: `{run.command('eval', before)}` and "
                       f"`{run.command('eval', after)}`.", "missing")]
        return Section("results", "Before / after results", blocks, missing=True), [], None
    names = [n for n in dict.fromkeys([before, after, *sorted(done)]) if n in done]
    evals = {n: Evaluation.load(n, done[n]) for n in names}
    blocks: list[Any] = []
    for n in (before, after):
        if n not in done:
            blocks.append(Para(f"The evaluation `{n}` is not in this run: run `{run.command('eval', n)}` for the "
                               "before/after comparison.", "missing"))
    info = []
    for n, ev in evals.items():
        r = ev.results
        g = r.get("generation") or {}
        benches = ", ".join(f"{BENCH_NAMES.get(b, b)} ({F.count((v.get('answers') or {}).get('n'))} answers)"
                            for b, v in (r.get("benchmarks") or {}).items())
        judge = r.get("judge")
        info.append([n, f"`{r.get('model')}` ({(r.get('target') or {}).get('kind')})", str(r.get("template")),
                     F.count(g.get("max_new_tokens")) if g.get("max_new_tokens") else "official",
                     benches or F.DASH, f"`{judge.get('backend')}:{judge.get('model')}`" if judge else F.DASH])
    blocks.append(Table(["evaluation", "model", "template", "max new tokens", "benchmarks", "judge"], info,
                        align="llllll"))
    train = run.done("train")
    used = {str(ev.results.get("template")) for ev in evals.values() if ev.results.get("template")}
    if used:
        why = next((ev.results.get("template_reason") for ev in evals.values() if ev.results.get("template_reason")),
                   None)
        blocks.append(Para(
            f"Questions were asked with the template {', '.join(f'`{t}`' for t in sorted(used))}"
            + (f" ({why})" if why else "")
            + (f"; the student was trained with `{train.config.get('template')}`" if train else "")
            + ". As in the paper, a model is asked questions in a conversation, not as the start of a document: "
            "the training template is not the evaluation template. An answer ends in one of three ways, counted "
            "apart below: the model's own end token (EOS: *stopped by itself*), the template's stop string (the "
            "model went on to write the next turn, which the template cuts off), or the token limit."))

    cmp, cmp_dir, computed = compare_result(run, before, after, report_dir / "compare", n_boot, seed) \
        if before in evals and after in evals else (None, None, False)
    by_unit = {r["metric"]: r for r in (cmp or {}).get("metrics", [])}

    cols = ["benchmark", "metric", *[f"{n} [95% CI]" for n in names]]
    paired = cmp is not None
    if paired:
        cols += [f"Δ {after} − {before} [95% CI]", "test", "p"]
    rows, classes = [], []
    bars: dict[str, list[tuple[str, dict[str, charts.Bar]]]] = defaultdict(list)
    for m in METRICS:
        vals = {n: _value(m, ev) for n, ev in evals.items()}
        if all(v is None for v in vals.values()):
            continue
        ivs = {n: _interval(m, ev, n_boot, seed) if vals[n] is not None else (None, None) for n, ev in evals.items()}
        row = [m.bench, m.label, *(_show(m, vals[n], *ivs[n]) for n in names)]
        cls = ""
        if paired:
            c = by_unit.get(m.unit or "")
            if c:
                k = _diff_scale(m)
                pv = c["test"].get("p_value")
                lo, hi = c["ci95"]
                unit = " pt" if k == 100 else ""
                row += [f"{k * c['diff']:+.1f}{unit} [{k * lo:+.1f}, {k * hi:+.1f}]" if k == 100 else
                        f"{c['diff']:+.3g} [{lo:+.3g}, {hi:+.3g}]", f"{c['test']['test']} (n={c['n_paired']})",
                        F.p_value(pv)]
                if pv is not None and pv < 0.05 and m.better:
                    cls = "good" if (c["diff"] > 0) == (m.better == "+") else "bad"
            else:
                row += [F.DASH, F.DASH, F.DASH]
        rows.append(row)
        classes.append(cls)
        k = 100.0 if m.scale == "prop" else 1.0
        bars[m.group].append((m.label, {n: (None if vals[n] is None else k * vals[n],
                                            None if ivs[n][0] is None else k * ivs[n][0],
                                            None if ivs[n][1] is None else k * ivs[n][1]) for n in names}))
    blocks.append(Table(cols, rows, align="ll" + "r" * (len(cols) - 2), row_classes=classes, caption=(
        "Scores from each evaluation's results.json. Intervals: the evaluation's own bootstrap where it has one "
        "(MT-Bench, Arena-Hard), else a percentile bootstrap over the prompts / instructions / answers in "
        f"per_item.jsonl ({n_boot} resamples, seed {seed}). "
        + ("Δ: the paired difference over the units both evaluations share, with a paired bootstrap 95% CI and "
           "McNemar's test (pass/fail) or the Wilcoxon signed-rank test (scores), from `nift compare`"
           + (" (run by this report)" if computed else f" (`{cmp_dir}`)") + "; green / red rows: p < 0.05 for "
           "the better / worse. " if paired else "")
        + "Proportions in %, differences in percentage points (pt).")))
    groups = [(g, "%" if "%" in g else ("score" if "MT" in g else "mean per answer"), metrics)
              for g, metrics in bars.items()]
    if groups:
        blocks.append(Figure("results.png", charts.before_after(groups, names), "before/after results",
                             "Each evaluation's scores with 95% confidence intervals (error bars)."))
    for n, ev in evals.items():
        for task, res in (ev.results.get("lm_eval") or {}).items():
            vals = [(k, v) for k, v in res.items() if isinstance(v, (int, float)) and "stderr" not in k]
            if vals:
                blocks.append(Para(f"lm-eval `{task}` ({n}): " + ", ".join(
                    f"{k} {F.num(v)} ± {F.num(1.96 * res[k.replace(',', '_stderr,', 1)], 2)}"
                    if isinstance(res.get(k.replace(",", "_stderr,", 1)), (int, float)) else f"{k} {F.num(v)}"
                    for k, v in vals)))
    if paired:
        for w in cmp.get("warnings") or []:
            blocks.append(Para(f"warning from `nift compare`: {w}", "note"))
        all_rows = [[r["metric"], F.count(r["n_paired"]), F.num(r["mean_a"]), F.num(r["mean_b"]), f"{r['diff']:+.4g}",
                     f"[{r['ci95'][0]:+.4g}, {r['ci95'][1]:+.4g}]", r["test"]["test"], F.p_value(r["test"]["p_value"])]
                    for r in cmp["metrics"]]
        inner: list[Any] = [Table(["metric", "n paired", before, after, "diff", "95% CI", "test", "p"], all_rows,
                                  align="lrrrrlll")]
        if cmp_dir is not None and (cmp_dir / "compare.png").is_file():
            inner.append(Figure("compare.png", (cmp_dir / "compare.png").read_bytes(), "paired differences",
                                "`nift compare`: each metric's paired difference with its 95% bootstrap CI."))
        blocks.append(Details(f"Every paired comparison ({len(all_rows)} metrics, `nift compare`)", inner))
    train = run.done("train")
    summary = _summary(evals, before, after, by_unit, train.config.get("template") if train else None) \
        if paired else None  # shown in the overview
    return Section("results", "Before / after results", blocks), _cards(evals, before, after), summary


# Headline metrics of the summary sentence, in this order: the paper's claims (the model stops by itself and
# follows instructions more often), then what a judge measured.
SUMMARY_UNITS = ("signals/stopped", "signals/stop_string", "ifeval/prompt_strict", "ifeval/inst_loose",
                 "signals/repeated_ngram_share", "signals/empty", "mt_bench/score", "arena_hard/score")


def _summary(evals: dict[str, Evaluation], before: str, after: str, by_unit: dict[str, Any],
             trained_with: str | None = None) -> Para | None:
    """The headline (the result against the paper's claim, in one sentence), then one clause per headline metric:
    both values, the paired difference, its CI and p, and whether that is significant at 5% — so the report says
    what the run shows, whatever it shows."""
    from nift.study import headline

    claim = headline(list(by_unit.values()), template=evals[after].results.get("template"),
                     trained_with=trained_with)
    parts = []
    for unit in SUMMARY_UNITS:
        m = next(m for m in METRICS if m.unit == unit)
        c = by_unit.get(unit)
        vb, va = _value(m, evals[before]), _value(m, evals[after])
        if c is None or vb is None or va is None:
            continue
        k = _diff_scale(m)
        lo, hi = c["ci95"]
        p = c["test"].get("p_value")
        diff = f"{k * c['diff']:+.1f} pt, 95% CI [{k * lo:+.1f}, {k * hi:+.1f}]" if k == 100 else \
            f"{c['diff']:+.3g}, 95% CI [{lo:+.3g}, {hi:+.3g}]"
        verdict = "not significant at 5%" if p is None or p >= 0.05 else "significant at 5%"
        name = m.label if m.bench == "signals" else f"{m.bench} {m.label}"
        parts.append(f"{name} {_show(m, vb)} → {_show(m, va)} ({diff}; {c['test']['test']} p = {F.p_value(p)}, "
                     f"{verdict}, n = {c['n_paired']})")
    if not parts:
        return None
    return Para(f"**{claim}** What this run shows ({before} → {after}, paired over the same prompts): "
                + "; ".join(parts) + ".", "note")


def _cards(evals: dict[str, Evaluation], before: str, after: str) -> list[Card]:
    out = []
    for m in (m for m in METRICS if m.unit in ("ifeval/prompt_strict", "signals/stopped")):
        vb = _value(m, evals[before]) if before in evals else None
        va = _value(m, evals[after]) if after in evals else None
        if vb is None and va is None:
            continue
        label = f"{m.bench} {m.label}" if m.bench != "signals" else m.label
        out.append(Card(label, f"{_show(m, vb)} → {_show(m, va)}", f"{before} → {after}"))
    return out


# ------------------------------------------------------------------------------------------------ examples

# Kinds of change between the two answers to one prompt, in the order they are shown (improvements first, then
# the same changes for the worse; the paper's Tables 10-14 show the first four).














