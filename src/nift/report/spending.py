"""The report's cost section: one ledger row per paid role (teacher, audit judge, each evaluation's answers and judge),
with requests, cache hits, tokens and dollars, and the teacher requests lost in transit (an upper bound, kept out of
the total, as distill's manifest counts them)."""

from __future__ import annotations

from typing import Any

from nift.report import formatting as F
from nift.report.document import Para, Section, Table
from nift.report.rundir import RunDir


def _row(stage: str, role: str, model: str, u: dict[str, Any], cached: Any = None, this_run: Any = None
         ) -> dict[str, Any]:
    """One ledger row from a usage record (the keys distill, audit and eval write alike)."""
    return {"stage": stage, "role": role, "model": model, "requests": u.get("requests"),
            "cached": u.get("cached") if cached is None else cached,
            "prompt_tokens": u.get("prompt_tokens"), "completion_tokens": u.get("completion_tokens"),
            "cost_usd": u.get("cost_usd"), "this_run": u.get("cost_usd_this_run") if this_run is None else this_run,
            "unknown": u.get("cost_unknown_requests")}


def _ledger_rows(run: RunDir) -> list[dict[str, Any]]:
    out = []
    if d := run.done("distill"):
        t, c = d.config.get("teacher", {}), d.cost
        tot = c.get("total", {})
        out.append(_row("distill", "teacher", f"{t.get('backend')}:{t.get('model')}", tot, cached=c.get("cached_ids"),
                        this_run=c.get("this_run", {}).get("cost_usd")))
    if (a := run.done("audit")) and (u := a.cost.get("judge")):
        j = a.stats.get("judge") or a.config.get("judge") or {}
        out.append(_row("audit", "judge", f"{j.get('backend')}:{j.get('model')}", u))
    for name, e in run.done_evals().items():
        for role, u in e.cost.items():
            if not isinstance(u, dict):
                continue
            src = (e.config.get("judge") or {}) if role == "judge" else e.config
            out.append(_row(f"eval/{name}", "answers" if role == "generation" else role,
                            f"{src.get('backend')}:{src.get('model')}", u))
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

