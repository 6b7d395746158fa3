"""The report's sections about the run's making: overview, config, data, audit, cost, training, merge, timings.

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


def _missing(run: RunDir, stage: str, what: str) -> Para:
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


def _short(v: Any) -> str:
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
        keys = [f"{k} = {_short(_get(cfg, k))}" for k in KEY_SETTINGS.get(stage, []) if _get(cfg, k) is not None
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
        blocks.append(_missing(run, "prepare", "the prepared data"))
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
        blocks.append(_missing(run, "distill", "the teacher's continuations"))
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
        return Section("audit", "Audit", [_missing(run, "audit", "the audit table")], missing=True)
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


# ---------------------------------------------------------------------------------------------------- cost


def _ledger_rows(run: RunDir) -> list[dict[str, Any]]:
    out = []
    if d := run.done("distill"):
        t, c = d.config.get("teacher", {}), d.cost
        tot, new = c.get("total", {}), c.get("this_run", {})
        out.append({"stage": "distill", "role": "teacher", "model": f"{t.get('backend')}:{t.get('model')}",
                    "requests": tot.get("requests"), "cached": c.get("cached_ids"),
                    "prompt_tokens": tot.get("prompt_tokens"), "completion_tokens": tot.get("completion_tokens"),
                    "cost_usd": tot.get("cost_usd"), "this_run": new.get("cost_usd"),
                    "unknown": tot.get("cost_unknown_requests")})
    if a := run.done("audit"):
        u = a.cost.get("judge")
        if u:
            j = a.stats.get("judge") or a.config.get("judge") or {}
            out.append({"stage": "audit", "role": "judge", "model": f"{j.get('backend')}:{j.get('model')}",
                        "requests": u.get("requests"), "cached": u.get("cached"),
                        "prompt_tokens": u.get("prompt_tokens"), "completion_tokens": u.get("completion_tokens"),
                        "cost_usd": u.get("cost_usd"), "this_run": u.get("cost_usd_this_run"),
                        "unknown": u.get("cost_unknown_requests")})
    for name, e in run.done_evals().items():
        for role, u in e.cost.items():
            if not isinstance(u, dict):
                continue
            if role == "judge":
                j = e.config.get("judge") or {}
                model = f"{j.get('backend')}:{j.get('model')}"
            else:
                model = f"{e.config.get('backend')}:{e.config.get('model')}"
            out.append({"stage": f"eval/{name}", "role": "answers" if role == "generation" else role,
                        "model": model, "requests": u.get("requests"), "cached": u.get("cached"),
                        "prompt_tokens": u.get("prompt_tokens"), "completion_tokens": u.get("completion_tokens"),
                        "cost_usd": u.get("cost_usd"), "this_run": u.get("cost_usd_this_run"),
                        "unknown": u.get("cost_unknown_requests")})
    return out


def _lost_in_transit(run: RunDir) -> tuple[list[str], Para] | None:
    """The teacher requests sent whose answer never came back: a ledger row (an upper bound, kept out of the total,
    which counts what the stored answers cost) and a note with the most the provider can have billed."""
    d = run.done("distill")
    lost = (d.cost.get("lost_in_transit") or {}) if d else {}
    if not d or not lost.get("requests"):
        return None
    t = d.config.get("teacher", {})
    bound = F.usd(lost.get("max_cost_usd"))
    row = ["distill", "lost in transit", f"`{t.get('backend')}:{t.get('model')}`", F.count(lost["requests"]), "",
           F.DASH, F.DASH, f"≤ {bound}", ""]
    unpriced = lost.get("cost_unknown_requests")
    note = Para(
        f"{F.count(lost['requests'])} teacher request(s) were sent but no usable answer came back (a timeout, a "
        "dropped connection, a garbled reply, a 5xx, or a process stopped while they were on the wire): the "
        f"provider may have done and billed that work, up to {bound} (each request's prompt tokens plus max_tokens "
        f"at the price{f'; {F.count(unpriced)} without a price are not in it' if unpriced else ''}). The teacher's "
        f"bill is at most {F.usd(d.cost.get('max_billed_usd'))}; the total counts the stored answers only.", "note")
    return row, note


def cost(run: RunDir) -> Section:
    ledger = _ledger_rows(run)
    if not ledger:
        return Section("cost", "Cost ledger", [Para(
            "No stage that calls a model has finished (distill, audit with a judge, eval), so there is no ledger "
            "yet.", "missing")], missing=True)
    rows = []
    for r in ledger:
        rows.append([r["stage"], r["role"], f"`{r['model']}`", F.count(r["requests"]), F.count(r["cached"]),
                     F.count(r["prompt_tokens"]), F.count(r["completion_tokens"]), F.usd(r["cost_usd"]),
                     F.usd(r["this_run"]) if r["this_run"] is not None else F.DASH])
    lost = _lost_in_transit(run)
    if lost is not None:
        rows.insert(1, lost[0])  # under distill's own row, which comes first
    total = {k: sum(r[k] or 0 for r in ledger) for k in ("requests", "prompt_tokens", "completion_tokens",
                                                          "cost_usd")}
    rows.append(["**total**", "", "", F.count(total["requests"]), "", F.count(total["prompt_tokens"]),
                 F.count(total["completion_tokens"]), f"**{F.usd(total['cost_usd'])}**", ""])
    blocks: list[Any] = [
        Table(["stage", "role", "model", "requests", "from cache", "prompt tokens", "completion tokens", "cost",
               "paid in the last run"], rows, align="lllrrrrrr",
              caption="Tokens and dollars as each stage's manifest recorded them. `cost` is what the stage's results "
              "cost in all (requests answered from the request store included, counted once); the last column is "
              "what its last run paid. In-process models (hf, vllm) have no price: their cost is compute time (see "
              "Timings)."),
    ]
    if lost is not None:
        blocks.append(lost[1])
    unknown = sum(r["unknown"] or 0 for r in ledger)
    if unknown:
        blocks.append(Para(f"{F.count(unknown)} requests were made to models without a known price: their dollars "
                           "are not in the total (give `prices:` in the backend config).", "note"))
    return Section("cost", "Cost ledger", blocks)


# -------------------------------------------------------------------------------------------------- training


def final_losses(rows: list[dict[str, Any]]) -> dict[str, Any]:
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r and "step" in r]
    evals = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r and "step" in r]
    summary = next((r for r in reversed(rows) if "train_loss" in r), {})
    return {"train": train, "eval": evals, "final_train": train[-1][1] if train else None,
            "first_train": train[0][1] if train else None, "final_eval": evals[-1][1] if evals else None,
            "mean_train": summary.get("train_loss"), "steps": train[-1][0] if train else None}


def _examples_cell(st: dict[str, Any], cfg: dict[str, Any]) -> str:
    """How many examples were trained, and how EOS was set: a teacher output cut at max_tokens did not end, so it is
    trained without EOS or dropped (train.cut_at_max_tokens)."""
    ex = st.get("examples") or {}
    skipped = st.get("skipped") or {}
    n = ex.get("train") if isinstance(ex, dict) else ex
    parts = [f"{F.count(n)} trained" + (f", {F.count(ex.get('eval'))} held out" if isinstance(ex, dict) else "")]
    if st.get("without_eos") is not None:
        parts.append(f"{F.count(st['without_eos'])} cut at the teacher's max_tokens trained without EOS")
    if skipped.get("cut_at_max_tokens"):
        parts.append(f"{F.count(skipped['cut_at_max_tokens'])} cut at max_tokens dropped")
    other = {k: v for k, v in skipped.items() if k != "cut_at_max_tokens" and v}
    if other:
        parts.append("skipped: " + ", ".join(f"{k.replace('_', ' ')} {F.count(v)}" for k, v in sorted(other.items())))
    return "; ".join(parts) + (f" (cut_at_max_tokens: {cfg['cut_at_max_tokens']})"
                               if cfg.get("cut_at_max_tokens") else "")


def training(run: RunDir) -> tuple[Section, list[Card]]:
    t = run.done("train")
    if t is None:
        return Section("training", "Training", [_missing(run, "train", "the loss curve")], missing=True), []
    cfg, st = t.config, t.stats
    log_path = t.dir / "log.jsonl"
    rows = list(iter_jsonl(log_path)) if log_path.is_file() else []
    L = final_losses(rows)
    blocks: list[Any] = []
    lora = f", LoRA r {cfg.get('lora_r')} α {cfg.get('lora_alpha')} on {_short(cfg.get('lora_target_modules'))}" \
        if cfg.get("method") in ("lora", "qlora") else ""
    blocks.append(Table(["setting", "value"], [
        ["student", f"`{cfg.get('model')}`"], ["method", f"{cfg.get('method')}{lora}"],
        ["template", str(cfg.get("template"))], ["training data", f"`{cfg.get('data')}`"],
        ["examples", _examples_cell(st, cfg)],
        ["optimizer steps", F.count(st.get("steps"))],
        ["effective batch", f"{F.count(st.get('effective_batch'))} sequences ({F.count(st.get('world_size'))} "
                            f"process(es), {st.get('precision')}, packing {'on' if st.get('packing') else 'off'})"],
        ["learning rate", f"{F.num(cfg.get('lr'))} ({cfg.get('lr_scheduler')})"],
        ["tokens seen", F.count(st.get("tokens_seen"))],
        ["first logged train loss", F.num(L["first_train"])],
        ["final logged train loss", F.num(L["final_train"])],
        ["mean train loss (whole run)", F.num(L["mean_train"] if L["mean_train"] is not None
                                              else st.get("train_loss"))],
        ["final held-out eval loss", F.num(L["final_eval"] if L["final_eval"] is not None else st.get("eval_loss"))
         if (L["final_eval"] is not None or st.get("eval_loss") is not None) else "not measured (eval_fraction 0)"],
        ["device", str(st.get("device"))], ["resumed from", str(st.get("resumed_from") or "no (one go)")],
    ], align="ll", header=False))
    if L["train"] or L["eval"]:
        lrs = [(r["step"], r["learning_rate"]) for r in rows if "learning_rate" in r and "step" in r]
        png = charts.loss_curve(L["train"], L["eval"], lrs,
                                f"{cfg.get('model')} · {cfg.get('method')} · {cfg.get('data')}")
        blocks.append(Figure("loss.png", png, "training loss curve",
                             "Loss per logged optimizer step (from train/log.jsonl), held-out loss where measured, "
                             "learning rate on the right axis."))
    elif (t.dir / "loss.png").is_file():
        blocks.append(Figure("loss.png", (t.dir / "loss.png").read_bytes(), "training loss curve",
                             "train/loss.png (train/log.jsonl is missing)."))
    else:
        blocks.append(Para("train/log.jsonl holds no logged step: no loss curve.", "note"))
    cards = []
    if L["final_train"] is not None:
        cards.append(Card("final train loss", F.num(L["final_train"]),
                          f"from {F.num(L['first_train'])} at step 1; {F.count(L['steps'])} steps"))
    return Section("training", "Training", blocks), cards


# ----------------------------------------------------------------------------------------------------- merge


def merge(run: RunDir) -> Section | None:
    m = run.stages.get("merge")
    if m is None:
        return None  # optional: eval can read the train folder directly
    if not m.done:
        return Section("merge", "Merge", [_missing(run, "merge", "the merged model")], missing=True)
    st = m.stats
    v = st.get("verification") or {}
    if v.get("passed") is None:
        verdict = f"not verified ({v.get('skipped', 'skipped')})"
    else:
        verdict = (f"{'passed' if v.get('passed') else 'FAILED'}: relative logit error {F.num(v.get('rel_error'), 3)} "
                   f"(tolerance {F.num(v.get('tolerance'), 3)}), top-1 agreement {F.pct(v.get('top1_agreement'))} "
                   f"over {F.count(v.get('positions'))} positions of {F.count(v.get('prompts'))} prompts, against "
                   f"{v.get('reference', 'the unmerged model')}")
    mg = st.get("merge") or {}
    tensors = mg.get("tensors") or {}
    rows = [["method", str(st.get("method"))], ["target", f"`{st.get('target')}`"],
            ["adapter", f"`{st.get('adapter')}` (scale {st.get('adapter_scale')})" if st.get("adapter") else F.DASH],
            ["weights", f"{(st.get('dtype') or {}).get('output')}, {F.nbytes(mg.get('bytes_written'))} in "
                        f"{F.count(mg.get('shards'))} shard(s); tensors: "
                        + ", ".join(f"{k} {F.count(n)}" for k, n in tensors.items())],
            ["verification", verdict], ["output", f"`{m.dir / 'model'}`"]]
    if st.get("instruct"):
        rows.insert(2, ["instruct", f"`{st.get('instruct')}`"])
    blocks: list[Any] = [Table(["setting", "value"], rows, align="ll", header=False)]
    for w in st.get("warnings") or []:
        blocks.append(Para(w, "note"))
    return Section("merge", "Merge", blocks)


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
