"""The request engine: every call to a teacher or judge goes through here and through the durable store.

    from nift.llm.config import BackendConfig
    from nift.distill import Request, run_requests

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
- **cost**: a price per model (`nift.distill.prices`, overridable in the config); with `budget_usd` no request is
  sent whose worst case (prompt estimate + max_tokens) would take the total past the cap;
- **bad input**: empty requests are skipped, prompts longer than the context are truncated from the left, skipped
  or rejected (`on_long_prompt`), all counted in `results.summary`.

`estimate_requests(...)` answers a dry run: tokens and dollars for what is not stored yet, nothing sent.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nift.distill.backends import Backend, BatchBackend, LocalBackend, OnlineBackend, make_backend
from nift.distill.prices import cost, price_for
from nift.distill.store import Store, StoreFull, request_key
from nift.distill.types import (
    BackendAbort,
    Failure,
    Request,
    RequestFailed,
    Result,
    RetryableError,
    RunSummary,
    Skip,
)
from nift.errors import ConfigError, InputError
from nift.llm.config import BackendConfig, Price
from nift.locks import writer_lock

CHAT_OVERHEAD_TOKENS = 8  # role markers of a chat template, per message, in the context check
PROMPT_ESTIMATE_MARGIN = 1.25  # budget reservations over-estimate prompts whose tokenizer is not at hand


class Results(dict):
    """`{id: Result}` for every request that has a result, plus `.summary` (a `RunSummary`)."""

    summary: RunSummary


@dataclass
class _Item:
    """One distinct request to send (several ids may share it)."""

    key: str
    payload: dict[str, Any]
    ids: list[str]
    prompt_tokens: int  # exact or estimated
    truncated_tokens: int = 0
    attempts: int = 0

    @property
    def max_tokens(self) -> int:
        return self.payload["max_tokens"]


@dataclass
class _Ledger:
    """Spent (stored results of this request set) and reserved (in flight, worst case) dollars."""

    budget: float | None
    spent: float = 0.0
    reserved: float = 0.0
    by_key: dict[str, float] = field(default_factory=dict)

    def reserve(self, usd: float) -> bool:
        if self.budget is not None and self.spent + self.reserved + usd > self.budget + 1e-12:
            return False
        self.reserved += usd
        return True

    def release(self, usd: float) -> None:
        self.reserved = max(0.0, self.reserved - usd)


# --------------------------------------------------------------------------------------------- preparation


def _with_text(req: Request, text: str) -> Request:
    """The request with its (last message's) text replaced: for left truncation."""
    if req.prompt is not None:
        return replace(req, prompt=text)
    msgs = [dict(m) for m in req.messages or ()]
    msgs[-1]["content"] = text
    return replace(req, messages=tuple(msgs))


def _main_text(req: Request) -> str:
    return req.prompt if req.prompt is not None else (req.messages or ({"content": ""},))[-1]["content"]


def _not_unicode(req: Request) -> str | None:
    """Why the request's text cannot be sent as UTF-8 (a lone surrogate such as \\ud800, common in scraped text
    that went through JSON), or None."""
    texts = [req.prompt] if req.prompt is not None else [m.get("content") for m in req.messages or ()]
    for text in texts:
        if not isinstance(text, str):
            continue
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            return (f"the prompt is not valid Unicode: a lone surrogate {text[e.start]!r} at character {e.start}; "
                    "it cannot be sent (fix the input; nothing was sent or retried)")
    return None


def _prepare(
    backend: Backend, cfg: BackendConfig, reqs: list[Request], summary: RunSummary,
) -> tuple[dict[str, str], dict[str, _Item]]:
    """Check, truncate and key every request. Returns ({id: key}, {key: item})."""
    seen: set[str] = set()
    for r in reqs:
        if r.id in seen:
            raise InputError(f"request id {r.id!r} appears twice: ids must be unique")
        seen.add(r.id)
    live = []
    for r in reqs:
        if not r.text().strip():
            summary.skipped.append(Skip(r.id, "empty", "the prompt is empty or blank"))
        elif (bad := _not_unicode(r)) is not None:  # a local fault: no server sees it, no retry can fix it
            summary.failed.append(Failure(r.id, bad, None, 0))
        else:
            live.append(r)
    ctx = backend.context_tokens()
    counts = backend.count_tokens_many([r.text() for r in live])
    id_key: dict[str, str] = {}
    items: dict[str, _Item] = {}
    for r, n in zip(live, counts, strict=True):
        max_tokens = r.max_tokens or cfg.max_tokens
        overhead = CHAT_OVERHEAD_TOKENS * (len(r.messages) + 1) if r.messages is not None else 1
        truncated = 0
        if ctx and n + overhead + max_tokens > ctx:
            room = ctx - max_tokens - overhead - (n - backend.count_tokens(_main_text(r)))
            if cfg.on_long_prompt == "error":
                raise InputError(f"request {r.id!r}: the prompt has {n} tokens, more than the teacher's context of "
                                 f"{ctx} leaves after max_tokens={max_tokens}; set on_long_prompt to truncate or skip")
            if cfg.on_long_prompt == "skip" or room <= 0:
                summary.skipped.append(Skip(r.id, "too_long", f"{n} prompt tokens, context {ctx}, "
                                                              f"max_tokens {max_tokens}"))
                continue
            main = _main_text(r)
            new_main = backend.truncate_left(main, room)
            truncated = backend.count_tokens(main) - backend.count_tokens(new_main)
            r = _with_text(r, new_main)
            n = backend.count_tokens(r.text())
            summary.truncated += 1
            summary.truncated_tokens += truncated
        payload = backend.payload(r)
        # Sampling (temperature > 0) gives each id its own draw; the draw is still stored, so a resume keeps it.
        key = request_key(backend.family, cfg.model,
                          payload if cfg.temperature == 0 else {**payload, "sample_for_id": r.id})
        id_key[r.id] = key
        if key in items:
            items[key].ids.append(r.id)
        else:
            items[key] = _Item(key, payload, [r.id], n + overhead, truncated)
    return id_key, items


def _worst_cost(price: Price | None, item: _Item, exact: bool, batch: bool) -> float:
    prompt = item.prompt_tokens if exact else math.ceil(item.prompt_tokens * PROMPT_ESTIMATE_MARGIN)
    return cost(price, prompt, item.max_tokens, batch=batch) or 0.0


def _check_price(cfg: BackendConfig, price: Price | None, budget: float | None, log: Callable) -> None:
    if price is not None:
        return
    if budget is not None:
        raise ConfigError(f"model {cfg.model!r} is not in the price table, so a budget cannot be enforced: add its "
                          f'price (teacher.prices: {{"{cfg.model}": {{"input": USD_PER_M, "output": USD_PER_M}}}}) '
                          "or drop the budget")
    log(f"warning: model {cfg.model!r} is not in the price table; its cost is reported as unknown "
        "(set prices in the config to count it)")


# ------------------------------------------------------------------------------------------------ progress


class _Progress:
    def __init__(self, total: int, initial: int, enabled: bool, desc: str):
        self.bar = None
        self.tokens_in = self.tokens_out = 0
        self.usd = 0.0
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="req", mininterval=0.5, smoothing=0.1,
                            dynamic_ncols=True)

    def update(self, n: int, r: Result | None = None) -> None:
        if r is not None:
            self.tokens_in += r.prompt_tokens
            self.tokens_out += r.completion_tokens
            self.usd += r.cost_usd or 0.0
        if self.bar is not None:
            self.bar.set_postfix_str(f"tok {self.tokens_in:,}/{self.tokens_out:,} ${self.usd:.4f}", refresh=False)
            self.bar.update(n)

    def note(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_description_str(text, refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# -------------------------------------------------------------------------------------------------- engine


class _Run:
    """State of one run_requests call, shared by the three drivers."""

    def __init__(self, cfg: BackendConfig, backend: Backend, store: Store, price: Price | None,
                 budget: float | None, summary: RunSummary, results: Results, bar: _Progress, log: Callable):
        self.cfg, self.backend, self.store, self.price = cfg, backend, store, price
        self.ledger = _Ledger(budget)
        self.summary, self.results, self.bar, self.log = summary, results, bar, log
        self.stop: str | None = None
        self.abort: BaseException | None = None
        self.batch = isinstance(backend, BatchBackend)

    def finish(self, item: _Item, res: Result, persist: bool = True, attempt: int | None = None) -> None:
        res.cost_usd = cost(self.price, res.prompt_tokens, res.completion_tokens, batch=self.batch)
        res.truncated_tokens = max(res.truncated_tokens, item.truncated_tokens)
        res.id = item.ids[0]
        self.summary.answered += 1
        if persist:
            try:
                self.store.put(item.key, self.cfg.backend, self.cfg.model, res, attempt=attempt)
                self.summary.stored += 1
            except StoreFull as e:  # saved aside: kept in results, no new request leaves
                self.abort = e
        self.ledger.spent += res.cost_usd or 0.0
        # Usage counts requests as paid for: one per distinct request, however many ids share it.
        self.summary.usage_new.add(res)
        self.summary.usage_total.add(res)
        for i in item.ids:
            self.results[i] = replace(res, id=i)
        self.summary.new += len(item.ids)
        self.bar.update(len(item.ids), res)

    def lost(self, attempt: int, max_cost: float | None, reason: str) -> None:
        """A request sent without a usable answer: the server may have done (and billed) the work, so its upper
        bound counts as spent, for the ledger and for the budget."""
        self.store.lose_attempt(attempt, reason)
        s = self.summary
        s.lost += 1
        s.lost_total += 1
        if max_cost is None:
            s.lost_unpriced += 1
            return
        s.lost_max_cost_usd += max_cost
        s.lost_total_max_cost_usd += max_cost
        self.ledger.spent += max_cost

    def refused(self, attempt: int) -> None:
        self.store.end_attempt(attempt)
        self.summary.refused += 1

    def fail(self, item: _Item, err: BaseException, status: int | None = None) -> None:
        for i in item.ids:
            self.summary.failed.append(Failure(i, str(err), status, item.attempts))
        self.bar.update(len(item.ids))

    def retry_delay(self, attempt: int, err: RetryableError) -> float:
        """Full-jitter exponential backoff (base 1 s, cap 60 s), never shorter than the server's retry-after."""
        delay = random.uniform(0, min(60.0, 2.0 ** attempt))
        if err.retry_after is not None:
            delay = err.retry_after + random.uniform(0, 0.1 * err.retry_after + 0.05)
        return delay

    # ------------------------------------------------------------------------------------------ online

    async def online(self, items: list[_Item]) -> None:
        backend: OnlineBackend = self.backend  # type: ignore[assignment]
        from nift.distill.ratelimit import RateLimiter

        limiter = RateLimiter(self.cfg.rpm, self.cfg.tpm)
        queue = list(reversed(items))  # pop() from the end keeps the caller's order
        exact = backend.exact_tokens

        async def worker() -> None:
            while queue and self.stop is None and self.abort is None:
                item = queue.pop()
                reserve = _worst_cost(self.price, item, exact, False)
                if not self.ledger.reserve(reserve):
                    queue.append(item)
                    self.stop = "budget"
                    return
                try:
                    await self._send(backend, limiter, item)
                finally:
                    self.ledger.release(reserve)

        await backend.aopen()
        workers = [asyncio.create_task(worker()) for _ in range(min(self.cfg.concurrency, len(items)) or 1)]
        try:
            await asyncio.gather(*workers)
        finally:
            await backend.aclose()

    async def _send(self, backend: OnlineBackend, limiter: Any, item: _Item) -> None:
        tokens = item.prompt_tokens + item.max_tokens
        max_cost = None if self.price is None else _worst_cost(self.price, item, backend.exact_tokens, False)
        while True:
            await limiter.acquire(tokens)
            item.attempts += 1
            try:
                attempt = self.store.begin_attempt(item.key, max_cost)  # on disk before the request leaves
            except StoreFull as e:
                self.abort = e
                return
            self.summary.sent += 1
            try:
                # The SDK enforces timeout_s; this outer bound catches a stall the SDK does not see.
                res = await asyncio.wait_for(backend.acall(item.payload), self.cfg.timeout_s * 1.5 + 1)
            except (asyncio.TimeoutError, RetryableError) as e:
                err = e if isinstance(e, RetryableError) else RetryableError("timeout")
            except RequestFailed as e:
                self.refused(attempt)
                self.fail(item, e, e.status)
                return
            except BackendAbort as e:
                self.refused(attempt)
                self.abort = e
                self.fail(item, e)
                return
            else:
                self.finish(item, res, attempt=attempt)
                return
            reason = f"HTTP {err.status}" if err.status else str(err).split(":")[0]
            if err.status == 429:  # turned away before any work
                self.refused(attempt)
            else:
                self.lost(attempt, max_cost, reason)
            self.summary.retry_reasons[reason] = self.summary.retry_reasons.get(reason, 0) + 1
            if item.attempts > self.cfg.max_retries:
                self.fail(item, RetryableError(f"gave up after {item.attempts} attempts: {err}"), err.status)
                return
            if self.ledger.budget is not None and self.ledger.spent + self.ledger.reserved > self.ledger.budget + 1e-12:
                self.stop = "budget"  # what was lost used up the room for this retry: the request stays unsent
                return
            self.summary.retries += 1
            delay = self.retry_delay(item.attempts, err)
            if err.status == 429:
                limiter.cool_down(delay)
            await asyncio.sleep(delay)

    # ------------------------------------------------------------------------------------------- local

    def local(self, items: list[_Item]) -> None:
        backend: LocalBackend = self.backend  # type: ignore[assignment]
        groups: dict[tuple, list[_Item]] = {}
        for it in items:
            p = it.payload
            groups.setdefault((p["max_tokens"], p["temperature"], tuple(p["stop"])), []).append(it)
        size = getattr(backend, "chunk_size", self.cfg.batch_size)
        chunks: list[list[_Item]] = []
        for group in groups.values():
            # Longest first: similar lengths share a batch (little padding), and an out-of-memory shows at once.
            order = sorted(group, key=lambda it: -backend.sort_key(it.payload))
            chunks += [order[start:start + size] for start in range(0, len(order), size)]
        # One process generates the chunks in order; a Ray pool hands them back as its workers finish them. Either
        # way each chunk is committed the moment it returns, and only here.
        for index, outs in backend.generate_chunks([[it.payload for it in c] for c in chunks]):
            chunk = chunks[index]
            self.summary.sent += len(chunk)
            if isinstance(outs, BaseException):
                for it in chunk:
                    it.attempts += 1
                    self.fail(it, outs)
                continue
            rows = []
            for it, res in zip(chunk, outs, strict=True):
                self.finish(it, res, persist=False)
                rows.append((it.key, self.cfg.backend, self.cfg.model, self.results[it.ids[0]]))
            if not self._put_many(rows):
                break

    def _put_many(self, rows: list[tuple[str, str, str, Result]]) -> bool:
        """Store rows; False when the store is full (they were saved aside and the run stops)."""
        try:
            self.store.put_many(rows)
        except StoreFull as e:
            self.abort = e
            return False
        self.summary.stored += len(rows)
        return True

    # ------------------------------------------------------------------------------------------- batch

    def batch_jobs(self, items: list[_Item]) -> None:
        backend: BatchBackend = self.backend  # type: ignore[assignment]
        by_key = {it.key: it for it in items}
        open_batches = self.store.open_batches(self.cfg.backend)
        # Resume: batches recorded before a crash; a batch stuck in "submitting" may or may not have reached
        # the provider, so ask it.
        for b in open_batches:
            if b["state"] == "submitting":
                found = backend.find_submitted(b["local_id"], b["created_at"], len(b["keys"]))
                if found is None:
                    self.store.batch_update(b["local_id"], state="failed", info={**b["info"], "never_submitted": True})
                    continue
                self.store.batch_update(b["local_id"], batch_id=found, state="submitted")
                b["batch_id"], b["state"] = found, "submitted"
                self.log(f"[{self.cfg.backend}] found batch {found} submitted before an interruption")
            else:
                self.log(f"[{self.cfg.backend}] resuming batch {b['batch_id']} ({len(b['keys'])} requests)")
        watching = [b for b in self.store.open_batches(self.cfg.backend) if b["state"] == "submitted"]
        in_flight = {k for b in watching for k in b["keys"]}
        to_send = [it for it in items if it.key not in in_flight]
        for chunk in self._split(backend, to_send):
            reserve = sum(_worst_cost(self.price, it, backend.exact_tokens, True) for it in chunk)
            if not self.ledger.reserve(reserve):
                # Fit what the budget allows into a smaller last batch.
                fit = []
                for it in chunk:
                    c = _worst_cost(self.price, it, backend.exact_tokens, True)
                    if not self.ledger.reserve(c):
                        break
                    fit.append(it)
                self.stop = "budget"
                chunk = fit
                if not chunk:
                    break
            local_id = uuid.uuid4().hex
            keys = [it.key for it in chunk]
            self.store.batch_intent(local_id, self.cfg.backend, self.cfg.model, keys, {"requests": len(keys)})
            batch_id = backend.submit(local_id, [(it.key, it.payload) for it in chunk])
            self.summary.sent += len(chunk)
            self.store.batch_update(local_id, batch_id=batch_id, state="submitted")
            self.log(f"[{self.cfg.backend}] submitted batch {batch_id} ({len(chunk)} requests)")
            watching.append({"local_id": local_id, "batch_id": batch_id, "keys": keys})
            if self.stop:
                break
        self._watch(backend, watching, by_key)

    def _split(self, backend: BatchBackend, items: list[_Item]) -> Iterable[list[_Item]]:
        """Batches within the provider's request-count and byte limits; one endpoint (chat/completion) each."""
        limit_n = min(self.cfg.batch_max_requests or backend.max_requests, backend.max_requests)
        for kind in ("chat", "completion"):
            chunk: list[_Item] = []
            size = 0
            for it in items:
                if it.payload["kind"] != kind:
                    continue
                n = backend.line_bytes(it.key, it.payload)
                if n > backend.max_bytes:
                    raise InputError(f"request {it.ids[0]!r} alone is larger than the provider's batch file limit")
                if chunk and (len(chunk) >= limit_n or size + n > backend.max_bytes):
                    yield chunk
                    chunk, size = [], 0
                chunk.append(it)
                size += n
            if chunk:
                yield chunk

    def _watch(self, backend: BatchBackend, watching: list[dict], by_key: dict[str, _Item]) -> None:
        while watching:
            still = []
            for b in watching:
                try:
                    state, info = backend.poll(b["batch_id"])
                except RetryableError as e:  # a passing 5xx or network fault: ask again next round
                    self.log(f"[{self.cfg.backend}] polling {b['batch_id']} failed ({e}); will retry")
                    still.append(b)
                    continue
                if state == "in_progress":
                    still.append(b)
                    continue
                self._collect(backend, b, by_key)
                self.store.batch_update(b["local_id"], state="done" if state == "ended" else "failed", info=info)
                self.summary.batches.append({"batch_id": b["batch_id"], "requests": len(b["keys"]), "state": state,
                                             **{k: v for k, v in info.items() if k in ("counts", "status")}})
            watching = still
            if watching:
                self.bar.note(f"{self.cfg.backend}: {len(watching)} batch(es) in progress")
                time.sleep(self.cfg.poll_interval_s)

    def _collect(self, backend: BatchBackend, b: dict, by_key: dict[str, _Item]) -> None:
        rows = []
        seen: set[str] = set()
        for key, out in backend.download(b["batch_id"]):
            seen.add(key)
            item = by_key.get(key)
            if isinstance(out, Result):
                out.cost_usd = cost(self.price, out.prompt_tokens, out.completion_tokens, batch=True)
                if item is None:  # paid for by an earlier run with other requests: keep it all the same
                    rows.append((key, self.cfg.backend, self.cfg.model, out))
                    continue
                self.finish(item, out, persist=False)
                rows.append((key, self.cfg.backend, self.cfg.model, self.results[item.ids[0]]))
            elif item is not None:
                item.attempts += 1
                self.fail(item, out, getattr(out, "status", None))
        self._put_many(rows)  # a full store saves them aside; the other batches, paid for, are still collected
        for key in b["keys"]:
            if key not in seen and key in by_key:
                self.fail(by_key[key], RequestFailed(f"batch {b['batch_id']} ended without a result for it"))


def _run_coro(coro: Any) -> Any:
    """Run a coroutine to completion, also when the caller already runs an event loop (notebooks, async code)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        return ex.submit(asyncio.run, coro).result()


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
    _check_price(cfg, price, budget_usd, log)
    summary = RunSummary(total=len(reqs), price=price.model_dump() if price else None)
    results = Results()
    results.summary = summary
    id_key, items = _prepare(backend, cfg, reqs, summary)
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
        bar = _Progress(len(id_key), summary.cached, progress and bool(pending),
                        desc or f"{cfg.backend}:{cfg.model}")
        run = _Run(cfg, backend, store, price, budget_usd, summary, results, bar, log)
        # The budget counts what may have been billed: stored answers and the upper bound of every lost request.
        run.ledger.spent = summary.usage_total.cost_usd + summary.lost_total_max_cost_usd
        try:
            if pending:
                if isinstance(backend, OnlineBackend):
                    _run_coro(run.online(pending))
                elif isinstance(backend, LocalBackend):
                    run.local(pending)
                elif isinstance(backend, BatchBackend):
                    run.batch_jobs(pending)
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
    _, items = _prepare(backend, cfg, reqs, summary)
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
