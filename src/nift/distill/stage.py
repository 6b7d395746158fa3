"""`nift distill`: the teacher continues every prepared prompt (temperature 0), through the request engine.

Run as: nift distill --run-dir runs/x --teacher.backend openai --teacher.model gpt-4o-mini --budget-usd 20

Reads `run_dir/prepare/data.jsonl`, sends one request per prompt (chat: the prompt is the user message, with the
teacher's system prompt; completions: the prompt is continued as raw text), stores every result in
`distill/cache.sqlite` the moment it arrives, and writes `distill/data.jsonl` — assembled from that store, in
prepare's order — and, last, the manifest with the cost ledger. Interrupted (Ctrl-C, kill -9, a budget stop, a
failed request), the same command resumes and sends only what is not stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nift.artifacts import StageContext, manifest_hash, run_stage, write_jsonl
from nift.distill.config import DistillConfig
from nift.errors import BadRow, InputError, NiftError
from nift.io import iter_lines, parse_json_line
from nift.llm.engine import estimate_requests, run_requests
from nift.llm.types import BudgetReached, Request, RunSummary, text_request

OUTPUT = "data.jsonl"
CACHE = "cache.sqlite"
_CACHE_FILES = (CACHE, CACHE + "-wal", CACHE + "-shm", CACHE + "-journal")


def read_prompts(prep_dir: Path, limit: int | None, on_empty: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows `{id, prompt}` of prepare's output (first `limit`), checked; returns (rows, ids of empty prompts)."""
    path = prep_dir / "data.jsonl"
    if not path.is_file():
        raise InputError(f"{path} is missing: run `nift prepare` first (same --run-dir)")
    rows, empty, seen = [], [], set()
    for lineno, _offset, line in iter_lines(path):  # parsed one at a time: lines past `limit` are never read
        if limit is not None and len(rows) + len(empty) >= limit:
            break
        try:
            row = parse_json_line(line, f"{path}:{lineno}")
        except BadRow as e:
            raise InputError(f"{e}; re-run `nift prepare` (or fix the file)") from None
        if not isinstance(row, dict) or not isinstance(row.get("id"), str):
            raise InputError(f"{path}:{lineno}: field 'id' is missing or not a string")
        if not isinstance(row.get("prompt"), str):
            raise InputError(f"{path}:{lineno}: field 'prompt' is missing or not a string (id {row['id']})")
        if row["id"] in seen:
            raise InputError(f"{path}:{lineno}: id {row['id']!r} appears twice")
        seen.add(row["id"])
        if not row["prompt"].strip():
            if on_empty == "error":
                raise InputError(f"{path}:{lineno}: field 'prompt' is empty (id {row['id']}); fix the input or "
                                 "set --on-empty-prompt skip")
            empty.append(row["id"])
            continue
        rows.append({"id": row["id"], "prompt": row["prompt"]})
    return rows, empty


def shard_rows(rows: list[dict[str, Any]], shard: str) -> list[dict[str, Any]]:
    """The I-th of N equal contiguous ranges of `rows` ("I/N"); the N shards together are every row once."""
    i, n = (int(x) for x in shard.split("/"))
    return rows[len(rows) * i // n:len(rows) * (i + 1) // n]


def _backend(cfg: DistillConfig, log) -> Any:
    """The Ray pool when --ray.address is set; else None (the engine makes the teacher's own backend)."""
    if not cfg.ray.address:
        return None
    from nift.llm.backends.ray_pool import RayPoolBackend

    return RayPoolBackend(cfg.teacher, cfg.ray, log=log)


def _requests(cfg: DistillConfig, rows: list[dict[str, Any]]) -> list[Request]:
    return [text_request(r["id"], r["prompt"], cfg.teacher) for r in rows]


def run(cfg: DistillConfig, run_dir: str | Path, force: bool = False, log=print):
    """Run the distill stage into `run_dir/distill/` (or, with dry_run, print the estimate and return it)."""
    run_dir = Path(run_dir)
    prep_dir = run_dir / "prepare"
    manifest_hash(prep_dir)  # a clear error when prepare has not run
    rows, empty = read_prompts(prep_dir, cfg.limit, cfg.on_empty_prompt)
    if cfg.shard:
        rows = shard_rows(rows, cfg.shard)
        log(f"[distill] shard {cfg.shard}: prompts {rows[0]['id'] if rows else '-'} .. "
            f"{rows[-1]['id'] if rows else '-'} ({len(rows)})")
    stage_dir = run_dir / "distill"
    store_path = Path(cfg.cache) if cfg.cache else stage_dir / CACHE
    teacher = f"{cfg.teacher.backend}:{cfg.teacher.model}"

    if cfg.dry_run:
        est = estimate_requests(cfg.teacher, _requests(cfg, rows), store_path, log=log, backend=_backend(cfg, log))
        est["empty_prompts"] = len(empty)
        log(format_estimate(est, cfg.budget_usd))
        return est

    def body(ctx: StageContext) -> None:
        backend = _backend(cfg, log)
        results = run_requests(cfg.teacher, _requests(cfg, rows), store_path, budget_usd=cfg.budget_usd,
                               progress=cfg.progress, log=log, desc=f"distill {teacher}", backend=backend)
        if backend is not None:
            ctx.stats["ray"] = backend.stats
        s = results.summary
        if s.stopped == "budget":
            lost = (f" + at most ${s.lost_total_max_cost_usd:.4f} for {s.lost_total} request(s) lost in transit"
                    if s.lost_total else "")
            raise BudgetReached(
                f"budget reached: ${s.usage_total.cost_usd:.4f} spent{lost} of --budget-usd {cfg.budget_usd} with "
                f"{len(results)} of {len(rows)} prompts done (all stored in {store_path}); the next request could "
                "have crossed the cap. Raise --budget-usd and run the same command to continue.")
        if s.failed and cfg.on_failure == "error":
            first = "\n  ".join(f"{f.id}: {f.error}" for f in s.failed[:5])
            raise NiftError(
                f"{len(s.failed)} request(s) failed (the {len(results)} results so far are stored; running the same "
                f"command again retries only the failed ones, --on-failure skip writes the output without them):"
                f"\n  {first}")
        out = []
        for r in rows:
            res = results.get(r["id"])
            if res is None:
                continue
            row = {"id": r["id"], "completion": res.text, "finish_reason": res.finish_reason,
                   "prompt_tokens": res.prompt_tokens, "completion_tokens": res.completion_tokens,
                   "cost_usd": res.cost_usd, "teacher": teacher, "latency_s": res.latency_s}
            if res.model_version:
                row["model_version"] = res.model_version
            out.append(row)
        write_jsonl(ctx.path(OUTPUT), out)
        ctx.cost = s.ledger()
        ctx.stats.update(_stats(s, len(rows), empty, out))

    result = run_stage("distill", stage_dir, cfg, body, inputs={"prepare": prep_dir}, keep=_CACHE_FILES,
                       exclude_from_hash=_CACHE_FILES, force=force, log=log)
    if not result.skipped:
        log(format_summary(result.manifest, result.dir / OUTPUT))
    return result


def _stats(s: RunSummary, n_prompts: int, empty: list[str], out: list[dict[str, Any]]) -> dict[str, Any]:
    finish: dict[str, int] = {}
    for r in out:
        finish[r["finish_reason"]] = finish.get(r["finish_reason"], 0) + 1
    skipped: dict[str, int] = {}
    for k in s.skipped:
        skipped[k.reason] = skipped.get(k.reason, 0) + 1
    if empty:
        skipped["empty"] = skipped.get("empty", 0) + len(empty)
    return {
        "prompts": n_prompts + len(empty), "written": len(out), "cached": s.cached, "sent": s.new,
        "skipped": skipped, "failed": len(s.failed), "failed_ids": [f.id for f in s.failed[:100]],
        "truncated": s.truncated, "truncated_tokens": s.truncated_tokens, "finish_reason": finish,
        "retries": s.retries, "wall_s": s.wall_s,
        "completion_tokens_per_s": round(s.usage_new.completion_tokens / s.wall_s, 2) if s.wall_s else None,
    }


def format_summary(manifest: dict[str, Any], path: Path) -> str:
    st, c = manifest["stats"], manifest.get("cost", {})
    tot = c.get("total", {})
    usd = f"${tot.get('cost_usd', 0):.4f}" + (f" (+{tot['cost_unknown_requests']} unpriced)"
                                               if tot.get("cost_unknown_requests") else "")
    return (f"[distill] wrote {st['written']} rows to {path}: {st['sent']} sent, "
            f"{st['cached']} from the store, skipped {st['skipped'] or 'none'}, {st['failed']} failed, "
            f"{st['truncated']} truncated; finish {st['finish_reason']}; tokens in/out "
            f"{tot.get('prompt_tokens', 0):,}/{tot.get('completion_tokens', 0):,}; cost {usd}; "
            f"{st['retries']} retries; {st['wall_s']:.1f}s" + _lost_line(c))


def _lost_line(cost: dict[str, Any]) -> str:
    """What went over the wire, when something was lost on the way: the part of the bill no answer shows."""
    req, lost = cost.get("requests_this_run", {}), cost.get("lost_in_transit", {})
    if not lost.get("requests"):
        return ""
    return (f"\n[distill] requests sent {req.get('sent', 0)}, answered {req.get('answered', 0)}, stored "
            f"{req.get('stored', 0)}, refused {req.get('refused', 0)}, lost in transit {req.get('lost_in_transit', 0)}"
            f" this run; {lost['requests']} lost in all, possibly billed up to ${lost['max_cost_usd']:.4f} "
            f"(the bill is at most ${cost.get('max_billed_usd', 0):.4f})")


def format_estimate(est: dict[str, Any], budget: float | None) -> str:
    exact = "" if est["prompt_tokens_exact"] else " (estimated at ~4 characters per token)"
    usd = "unknown (model not in the price table)" if est["max_cost_usd"] is None else (
        f"at most ${est['max_cost_usd']:.4f} (prompts ${est['prompt_cost_usd']:.4f} + every completion at "
        "max_tokens)")
    lines = [
        f"[distill] dry run, nothing sent: {est['backend']}:{est['model']}",
        f"  prompts: {est['requests'] + est['empty_prompts']}, already stored: {est['stored']}, to send: "
        f"{est['to_send']}, skipped: {est['skipped'] or 'none'}, empty: {est['empty_prompts']}, truncated: "
        f"{est['truncated']}",
        f"  prompt tokens: {est['prompt_tokens']:,}{exact}; completion tokens: at most "
        f"{est['max_completion_tokens']:,}",
        f"  cost: {usd}",
    ]
    if budget is not None and est["max_cost_usd"] is not None:
        lines.append(f"  budget: ${budget:.2f} — " + ("enough for every request" if est["max_cost_usd"] <= budget
                                                      else "the run may stop at the cap before finishing"))
    return "\n".join(lines)
