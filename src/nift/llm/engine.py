"""The request engine: every call to a teacher or judge goes through here and through the durable store.

    from nift.llm.config import BackendConfig
    from nift.llm import Request, run_requests

    cfg = BackendConfig(backend="openai", model="gpt-4o-mini", concurrency=16, rpm=500, max_tokens=256)
    reqs = [Request(id="q1", messages=[{"role": "user", "content": "Hi"}]),          # chat (multi-turn allowed)
            Request(id="q2", prompt="The capital of France is")]                      # raw continuation
    results = run_requests(cfg, reqs, "runs/x/eval/cache.sqlite", budget_usd=5.0)
    results["q1"].text, results["q1"].finish_reason, results["q1"].cost_usd
    results.summary.ledger()                                                          # for a manifest

What it guarantees:
- **never repeat**: each request is keyed by a hash of (backend family, model, messages or prompt, parameters); a
  stored result is returned without calling the model, identical requests under different ids are sent once;
- **never lose**: each result is committed to SQLite (WAL, synchronous=FULL) the moment it arrives; after `kill -9`
  a re-run sends only what had not completed (at most `concurrency` requests were in flight); when SQLite cannot
  write (a full disk), answers that arrived are saved beside the store (`*.unsaved.jsonl`), nothing more is sent,
  and the next run reads them back;
- **API backends**: bounded concurrency, token buckets for requests/min and tokens/min, per-request timeout,
  retries with exponential backoff and full jitter on 429, 5xx, timeouts, dropped connections and garbled replies,
  honouring `retry-after` (a 429 pauses every worker); other 4xx are not retried;
- **cost**: a price per model (`nift.llm.prices`, overridable in the config); with `budget_usd` no request is
  sent whose worst case (prompt estimate + max_tokens) would take the total past the cap;
- **bad input**: empty requests are skipped, prompts longer than the context are truncated from the left, skipped
  or rejected (`on_long_prompt`), all counted in `results.summary`.

`estimate_requests(...)` answers a dry run: tokens and dollars for what is not stored yet, nothing sent.

This module holds that public API; requests are prepared in `nift.llm.items`, sent by a driver of
`nift.llm.drivers` and accounted for in `nift.llm.run_state`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from nift.errors import ConfigError
from nift.llm.backends import Backend, BatchBackend, LocalBackend, OnlineBackend, make_backend
from nift.llm.config import BackendConfig
from nift.llm.drivers import driver_for
from nift.llm.items import check_price, prepare
from nift.llm.prices import cost, price_for
from nift.llm.run_state import Progress, Results
from nift.llm.store import Store, StoreFull
from nift.llm.types import Request, RunSummary
from nift.locks import writer_lock

__all__ = ["Results", "estimate_requests", "run_requests"]


def _backend_for(cfg: BackendConfig, backend: Backend | None, log: Callable) -> Backend:
    """A new backend for cfg, or a loaded one reused with cfg's generation settings."""
    if backend is None:
        return make_backend(cfg, log=log)
    if (backend.cfg.backend, backend.cfg.model) != (cfg.backend, cfg.model):
        raise ConfigError(f"the backend passed in serves {backend.cfg.backend}:{backend.cfg.model}, "
                          f"not {cfg.backend}:{cfg.model}")
    backend.cfg = cfg
    return backend


def run_requests(
    cfg: BackendConfig,
    requests: Iterable[Request],
    store_path: str | Path,
    *,
    budget_usd: float | None = None,
    progress: bool = True,
    log: Callable[[str], Any] = print,
    backend: Backend | None = None,
    desc: str | None = None,
) -> Results:
    """Answer every request through the store: stored results are returned, the rest are sent and stored.

    Returns `{id: Result}` for every request with a result; `results.summary` (a `RunSummary`) says what was
    cached, sent, skipped (empty, too long), failed (after retries, or a non-retryable 4xx) and whether the budget
    stopped the run (`summary.stopped == "budget"`), with the cost ledger (`summary.ledger()`). Raises
    `BackendAbort` (a `NiftError`) when every request would fail (bad key, unknown model), after storing what had
    arrived. `backend` may be passed to reuse a loaded one (e.g. an hf model).

    The store is locked for the call, before any backend is made or model loaded: one writer per store, also when
    several run dirs share it (--cache); a second would send and pay for the same requests."""
    with writer_lock(store_path, "the request store", directory=False, log=log):
        return _run_requests(cfg, list(requests), store_path, budget_usd, progress, log, backend, desc)


def _run_requests(cfg: BackendConfig, reqs: list[Request], store_path: str | Path, budget_usd: float | None,
                  progress: bool, log: Callable[[str], Any], backend: Backend | None, desc: str | None) -> Results:
    t0 = time.perf_counter()
    backend = _backend_for(cfg, backend, log)
    price = price_for(cfg)
    check_price(cfg, price, budget_usd, log)
    summary = RunSummary(total=len(reqs), price=price.model_dump() if price else None)
    results = Results()
    results.summary = summary
    id_key, items = prepare(backend, cfg, reqs, summary)
    with Store(store_path) as store:
        if read_back := store.read_back_unsaved():
            log(f"[store] {read_back} answer(s) an earlier run could not store (a full disk) were read back from "
                f"{store.unsaved_path}: not asked for again")
        if recovered := store.recover_in_flight():
            log(f"[store] {recovered} request(s) were on the wire when an earlier run stopped: counted as lost in "
                "transit (the server may have billed them)")
        stored = store.get_many(list(items))
        summary.lost_total, summary.lost_total_max_cost_usd, summary.lost_unpriced = store.lost_for(list(items))
        for key, res in stored.items():
            summary.usage_total.add(res)
            for i in items[key].ids:
                results[i] = replace(res, id=i, cached=True)
                summary.cached += 1
        pending = [it for k, it in items.items() if k not in stored]
        if pending and isinstance(backend, LocalBackend):
            backend.load()
        bar = Progress(len(id_key), summary.cached, progress and bool(pending),
                        desc or f"{cfg.backend}:{cfg.model}")
        run = driver_for(backend)(cfg, backend, store, price, budget_usd, summary, results, bar, log)
        # The budget counts what may have been billed: stored answers and the upper bound of every lost request.
        run.ledger.spent = summary.usage_total.cost_usd + summary.lost_total_max_cost_usd
        try:
            if pending:
                run.drive(pending)
        finally:
            bar.close()
            if not isinstance(backend, OnlineBackend):
                backend.close()
        if store.failure is not None:  # the count of answers saved aside is final only now
            raise StoreFull(store.failure_message())
    summary.stopped = run.stop
    summary.wall_s = round(time.perf_counter() - t0, 3)
    if run.abort is not None:
        raise run.abort
    return results


def estimate_requests(
    cfg: BackendConfig, requests: Iterable[Request], store_path: str | Path | None, *,
    log: Callable[[str], Any] = print, backend: Backend | None = None,
) -> dict[str, Any]:
    """A dry run: how many requests are not stored yet, their prompt tokens (exact for hf/vllm, else estimated)
    and the most they can cost (every completion at max_tokens). Nothing is sent."""
    reqs = list(requests)
    backend = _backend_for(cfg, backend, log)
    price = price_for(cfg)
    summary = RunSummary(total=len(reqs))
    _, items = prepare(backend, cfg, reqs, summary)
    stored: set[str] = set()
    if store_path is not None and Path(store_path).exists():
        with Store(store_path) as store:
            stored = set(store.get_many(list(items)))
    todo = [it for k, it in items.items() if k not in stored]
    batch = isinstance(backend, BatchBackend)
    prompt = sum(it.prompt_tokens for it in todo)
    completion = sum(it.max_tokens for it in todo)
    usd = cost(price, prompt, completion, batch=batch)
    backend.close()
    return {
        "requests": len(reqs), "distinct": len(items), "stored": len(stored), "to_send": len(todo),
        "skipped": dict(Counter(s.reason for s in summary.skipped)), "truncated": summary.truncated,
        "prompt_tokens": prompt, "prompt_tokens_exact": backend.exact_tokens,
        "max_completion_tokens": completion, "max_cost_usd": None if usd is None else round(usd, 4),
        "prompt_cost_usd": None if price is None else round(cost(price, prompt, 0, batch=batch), 4),
        "price_per_million": price.model_dump() if price else None, "model": cfg.model, "backend": cfg.backend,
    }
