"""The report's sections about the run's making: overview, config, data, audit, timings (cost: `spending.py`;
training and merge: `training.py`).

Each builder reads the run's own files (manifests first, data files where the manifest has no distribution) and
returns a `Section`; a section whose stage is not in the run says so and names the command that makes it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import yaml

from nift.config import redact
from nift.report import charts
from nift.report import formatting as F
from nift.report.document import Card, Cards, Code, Details, Figure, Para, Section, Table
from nift.report.rundir import PIPELINE, RunDir, Stage, iter_jsonl


def missing(run: RunDir, stage: str, what: str) -> Para:
    s = run.stages.get(stage)
    if s is not None and not s.done:
        return Para(f"`{stage}/` has no manifest.json: the stage did not finish (or is still running), so {what} "
                    f"is not shown. Run `{run.command(stage)}` again to resume it.", "missing")
    return Para(f"No `{stage}/` in this run, so {what} is not shown. Run `{run.command(stage)}` to add it.",
                "missing")


def _get(d: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def describe(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=float)
    q = np.quantile(v, [0.1, 0.5, 0.9])
    return {"n": int(v.size), "min": float(v.min()), "p10": float(q[0]), "median": float(q[1]),
            "p90": float(q[2]), "max": float(v.max()), "mean": float(v.mean())}


def _dist_row(name: str, d: dict[str, Any] | None, digits: int | None = None) -> list[str]:
    d = d or {}
    f = F.measure if digits is None else (lambda v: F.num(v, digits))
    return [name, F.count(d.get("n")), *(f(d.get(k)) for k in ("min", "p10", "median", "p90", "max", "mean"))]


DIST_COLUMNS = ["quantity", "n", "min", "p10", "median", "p90", "max", "mean"]


# ----------------------------------------------------------------------------------------------- overview


def overview(run: RunDir, extra_cards: list[Card], before: str, after: str, summary: Para | None = None) -> Section:
    """Cards with the run's headline numbers, the before/after summary, and the state of every stage."""
    cards: list[Card] = []
    if p := run.done("prepare"):
        st = p.stats
        cards.append(Card("documents", F.count(st.get("documents_written")),
                          f"sampled from {F.count(st.get('rows_read'))} rows"))
    if d := run.done("distill"):
        tot = d.cost.get("total", {})
        written = d.stats.get("written")
        if a := run.done("audit"):
            cards.append(Card("training pairs", F.count(a.stats.get("kept")),
                              f"of {F.count(written)} distilled; {F.count(a.stats.get('dropped'))} dropped by audit"))
        else:
            cards.append(Card("training pairs", F.count(written), "distilled (no audit)"))
        cards.append(Card("teacher cost", F.usd(tot.get("cost_usd")),
                          f"{F.count(tot.get('prompt_tokens'))} in + {F.count(tot.get('completion_tokens'))} out "
                          "tokens"))
    cards += extra_cards

    rows, classes = [], []
    for name in PIPELINE[:-1]:
        s = run.stages.get(name)
        rows.append(_status_row(run, name, s))
        classes.append("" if s and s.done else "bad")
    evals = run.evals
    for name in dict.fromkeys([before, after, *evals]):
        s = evals.get(name)
        if s is None and name not in (before, after):
            continue
        row = _status_row(run, "eval", s, name)
        row[0] = f"eval/{name}"
        rows.append(row)
        classes.append("" if s and s.done else "bad")
    blocks: list[Any] = []
    if cards:
        blocks.append(Cards(cards))
    if summary is not None:
        blocks.append(summary)
    blocks.append(Table(["stage", "state", "rows written", "finished (UTC)", "wall time"], rows, align="llrll",
                        row_classes=classes, caption="A stage counts as finished when its manifest.json is there "
                        "(it is written last)."))
    todo = [r[0] for r, c in zip(rows, classes, strict=True) if c]
    if todo:
        blocks.append(Para(f"Not in this report: {', '.join(todo)} (see the state column for how to add them). "
                           "The sections below cover the finished stages only.", "note"))
    return Section("overview", "Overview", blocks)


def _status_row(run: RunDir, stage: str, s: Stage | None, name: str = "") -> list[str]:
    if s is None:
        return [stage, f"not run: `{run.command(stage, name)}`", F.DASH, F.DASH, F.DASH]
    if not s.done:
        return [stage, f"interrupted or running (no manifest): run `{run.command(stage, name)}` to resume",
                F.DASH, F.DASH, F.DASH]
    m = s.manifest or {}
    rows = m.get("rows", {})
    main = {k: v for k, v in rows.items() if "/" not in k or k.startswith("answers/")}
    rows_s = ", ".join(f"{F.count(v)} {k}" for k, v in main.items()) or F.DASH
    when = str(m.get("created_at", "")).replace("T", " ").replace("+00:00", "") or F.DASH
    return [stage, "finished", rows_s, when, F.seconds(s.timings.get("seconds"))]


# -------------------------------------------------------------------------------------------------- config

# The settings shown at a glance per stage (dotted paths into the manifest's config); the whole config is folded.
KEY_SETTINGS = {
    "prepare": ["input", "n_docs", "seed", "cut_low", "cut_high"],
    "distill": ["teacher.backend", "teacher.model", "teacher.endpoint", "teacher.max_tokens", "teacher.temperature",
                "limit"],
    "audit": ["drop", "judge.model", "judge_sample", "benchmarks", "ngram"],
    "train": ["model", "data", "method", "template", "lora_r", "lora_alpha", "epochs", "max_steps", "lr",
              "per_device_batch_size", "grad_accum", "max_length", "precision"],
    "merge": ["method", "target", "adapter_scale", "dtype", "verify"],
    "eval": ["model", "benchmarks", "template", "max_new_tokens", "limit", "lm_eval"],
}


def short(v: Any) -> str:
    if isinstance(v, list):
        return ", ".join(str(x) for x in v) if v else "[]"
    if v is None:
        return "null"
    return str(v)


def config(run: RunDir) -> Section:
    rows, folded = [], []
    for s in run.finished():
        stage = s.name.split("/")[0]
        cfg = redact(s.config)  # manifests are already redacted; a second fence costs nothing
        keys = [f"{k} = {short(_get(cfg, k))}" for k in KEY_SETTINGS.get(stage, []) if _get(cfg, k) is not None
                or k in ("n_docs", "max_steps", "limit")]
        rows.append([s.name, "; ".join(keys), f"`{str((s.manifest or {}).get('config_hash', ''))[:12]}`"])
        text = yaml.safe_dump({stage: cfg}, sort_keys=False, allow_unicode=True, width=110)
        folded.append(Details(f"{s.name}: the resolved config (nift {s.manifest.get('nift_version', '?')})",
                              [Code(text, "yaml")]))
    blocks: list[Any] = [
        Para("The resolved configuration of every finished stage, as its manifest recorded it (API keys are never "
             "stored: configs name the environment variable that holds a key)."),
        Table(["stage", "key settings", "config hash"], rows, align="lll"), *folded,
    ]
    return Section("config", "Configuration", blocks)


# ---------------------------------------------------------------------------------------------------- data


def data(run: RunDir, bins: int) -> Section:
    prep, dist = run.done("prepare"), run.done("distill")
    blocks: list[Any] = []
    panels = []
    if prep is None:
        blocks.append(missing(run, "prepare", "the prepared data"))
    else:
        st = prep.stats
        prompt_w, ref_w = [], []
        for r in iter_jsonl(prep.dir / "data.jsonl"):
            prompt_w.append(len(r["prompt"].split()))
            ref_w.append(len(r["reference"].split()))
        skipped = st.get("skipped") or {}
        blocks.append(Para(
            f"**prepare**: {F.count(st.get('documents_written'))} documents sampled (requested "
            f"{F.count(st.get('requested'))}) from {F.count(st.get('rows_read'))} rows in {F.count(st.get('files'))} "
            f"file(s) ({F.nbytes(st.get('bytes_read'))}); skipped: "
            + (", ".join(f"{k} {F.count(v)}" for k, v in skipped.items()) or "none")
            + ". Each document is cut at a word drawn uniformly between "
            f"{F.pct(prep.config.get('cut_low'), 0)} and {F.pct(prep.config.get('cut_high'), 0)} of its words: the "
            "first part is the prompt, the rest the reference (the original continuation)."))
        rows = []
        if prompt_w:
            doc_w = [p + r for p, r in zip(prompt_w, ref_w, strict=True)]
            rows = [_dist_row("document words", describe(doc_w)), _dist_row("prompt words", describe(prompt_w)),
                    _dist_row("reference words", describe(ref_w)),
                    _dist_row("cut fraction (prompt / document)",
                              describe([p / d for p, d in zip(prompt_w, doc_w, strict=True) if d]), 3)]
            panels += [("prompt", "words", prompt_w), ("reference (original continuation)", "words", ref_w)]
        blocks.append(Table(DIST_COLUMNS, rows))
    if dist is None:
        blocks.append(missing(run, "distill", "the teacher's continuations"))
    else:
        st = dist.stats
        toks, ptoks = [], []
        for r in iter_jsonl(dist.dir / "data.jsonl"):
            if r.get("completion_tokens") is not None:
                toks.append(r["completion_tokens"])
            if r.get("prompt_tokens") is not None:
                ptoks.append(r["prompt_tokens"])
        t = dist.config.get("teacher", {})
        finish = st.get("finish_reason") or {}
        written = st.get("written") or 0
        blocks.append(Para(
            f"**distill**: teacher `{t.get('backend')}:{t.get('model')}` ({t.get('endpoint')}, temperature "
            f"{t.get('temperature')}, max {F.count(t.get('max_tokens'))} tokens) continued "
            f"{F.count(written)} of {F.count(st.get('prompts'))} prompts; {F.count(st.get('cached'))} came from the "
            f"request store, {F.count(st.get('failed'))} failed, {F.count(st.get('truncated'))} prompts were cut "
            "to fit the context. Finish reasons: "
            + (", ".join(f"{k} {F.count(v)} ({F.pct(v / written if written else None)})" for k, v in finish.items())
               or F.DASH)
            + " (`length` = cut at the token limit)."))
        rows = []
        if ptoks:
            rows.append(_dist_row("teacher prompt tokens", describe(ptoks)))
        if toks:
            rows.append(_dist_row("completion tokens", describe(toks)))
            panels.append(("teacher completion", "tokens", toks))
        if rows:
            blocks.append(Table(DIST_COLUMNS, rows))
    if a := run.done("audit"):
        blocks.append(Para(f"**audit**: {F.count(a.stats.get('kept'))} of {F.count(a.stats.get('rows'))} rows kept "
                           f"for training ({F.count(a.stats.get('dropped'))} dropped; see the audit section)."))
    if t := run.done("train"):
        st = t.stats
        ex = st.get("examples") or {}
        blocks.append(Para(
            f"**train** read `{t.config.get('data')}`: {F.count(ex.get('train'))} training and "
            f"{F.count(ex.get('eval'))} held-out examples, {F.count(st.get('prompt_tokens'))} prompt and "
            f"{F.count(st.get('completion_tokens'))} completion tokens (loss on the completion only), "
            f"{F.count(t.config.get('max_length'))} tokens at most per example ({F.count(st.get('truncated'))} "
            "cut from the left)" + (f", skipped: {st['skipped']}" if st.get("skipped") else "") + "."))
    if panels:
        blocks.append(Figure("lengths.png", charts.histograms(panels, bins), "length histograms",
                             "Length distributions of the prepared prompts and references (whitespace words) and "
                             "of the teacher's continuations (teacher tokens); dashed: the median."))
    return Section("data", "Data", blocks, missing=prep is None and dist is None)


# --------------------------------------------------------------------------------------------------- audit


def _judge_cell(d: dict[str, Any] | None) -> str:
    if not d or d.get("percent") is None:
        return F.DASH
    ci = d.get("ci95") or [None, None]
    s = f"{d['percent']:.2f}% [{ci[0]:.1f}, {ci[1]:.1f}]" if ci[0] is not None else f"{d['percent']:.2f}%"
    return s + (f" ({F.count(d['unparseable'])} unparsed)" if d.get("unparseable") else "")


def audit(run: RunDir) -> Section:
    a = run.done("audit")
    if a is None:
        return Section("audit", "Audit", [missing(run, "audit", "the audit table")], missing=True)
    st = a.stats
    datasets = st.get("datasets") or {}
    blocks: list[Any] = []
    judge = st.get("judge")
    if judge:
        rows = []
        for name, d in datasets.items():
            j = d.get("judge") or {}
            judged = max((x.get("judged", 0) for x in j.values()), default=0)
            rows.append([name, F.count(judged), _judge_cell(j.get("instructional")),
                         _judge_cell(j.get("conversational"))])
        blocks += [Para(f"Judge `{judge.get('backend')}:{judge.get('model')}` read up to "
                        f"{F.count(judge.get('sample'))} rows per dataset with the paper's Appendix-B prompts."),
                   Table(["Dataset", "Judged", "Inst.", "Conv."], rows,
                         caption="The paper's Table 8 for this run: percent of the judged rows the judge called "
                         "instructional / conversational, with a Wilson 95% interval.")]
    else:
        blocks.append(Para("No judge was configured for this audit (`--judge.model`): the Table-8 columns "
                           "(instructional / conversational) are not measured; heuristics and decontamination "
                           "ran on every row.", "note"))
    flag_names = sorted({f for d in datasets.values() for f in d.get("flags", {})})
    if flag_names:
        cols = ["flag", *[f"{n} ({F.count(d.get('rows'))} rows)" for n, d in datasets.items()]]
        rows = [[f, *(f"{F.count(d['flags'].get(f, 0))} ({d.get('flag_percent', {}).get(f, 0):.2f}%)"
                      for d in datasets.values())] for f in flag_names]
        blocks += [Table(cols, rows, caption="Rows carrying each flag (a row can carry several).")]
    else:
        blocks.append(Para("No row carried any flag."))
    dec = st.get("decontamination") or {}
    benches = dec.get("benchmarks") or {}
    if benches:
        rows = [[b, F.count(info.get("prompts")),
                 *(F.count((d.get("contaminated_by_benchmark") or {}).get(b, 0)) for d in datasets.values())]
                for b, info in benches.items()]
        blocks.append(Table(["benchmark", "prompts", *[f"{n}: rows overlapping" for n in datasets]], rows,
                            caption=f"{dec.get('ngram')}-gram overlap of the training rows with the benchmarks' "
                            "prompts (each hit with its matched text is in audit/flags.jsonl)."))
    drop = st.get("drop") or []
    rows = [[n, F.count(d.get("rows")), F.count(d.get("kept")), F.count(d.get("dropped")),
             *(F.count((d.get("dropped_attributed") or {}).get(f, 0)) for f in drop)] for n, d in datasets.items()]
    blocks.append(Table(["Dataset", "Rows", "Kept", "Dropped", *[f"dropped: {f}" for f in drop]], rows,
                        caption=f"The filtered training set (drop policy: {', '.join(drop) or 'none'}); a dropped "
                        "row is counted under the first flag of the policy it carries."))
    return Section("audit", "Audit", blocks)


# --------------------------------------------------------------------------------------------------- timings

_SKIP_TIMING = {"started", "seconds"}


def timings(run: RunDir) -> Section:
    rows, bars = [], []
    total = 0.0
    for s in run.finished():
        tm = s.timings
        secs = tm.get("seconds")
        parts = ", ".join(f"{k.removesuffix('_s')} {F.seconds(v)}" for k, v in tm.items()
                          if k not in _SKIP_TIMING and isinstance(v, (int, float)))
        rows.append([s.name, str(tm.get("started", "")).replace("T", " ").replace("+00:00", ""),
                     F.seconds(secs), parts or F.DASH])
        if isinstance(secs, (int, float)):
            total += secs
            bars.append((s.name, float(secs)))
    rows.append(["**total**", "", f"**{F.seconds(total)}**", ""])
    blocks: list[Any] = [Table(["stage", "started (UTC)", "wall time", "breakdown"], rows, align="llrl",
                               caption="Wall-clock time of each stage's last run, from its manifest (a stage skipped "
                               "because it was up to date keeps the time of the run that made it).")]
    if bars:
        blocks.append(Figure("timings.png", charts.timings(bars), "stage timings"))
    return Section("timings", "Timings", blocks)
