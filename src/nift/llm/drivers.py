"""The three ways of running what is not stored yet, each a `RunState` with a `drive(items)`: online async requests
(`OnlineRun`: bounded concurrency, rate limits, retries), a local in-process batch (`LocalRun`: hf, vllm, a Ray
pool) and provider batch jobs (`BatchRun`: submit, watch, collect, resumable). `driver_for` picks one for a
backend."""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import time
import uuid
from collections.abc import Iterable
from typing import Any

from nift.errors import InputError
from nift.llm.backends import Backend, BatchBackend, LocalBackend, OnlineBackend
from nift.llm.items import Item, worst_cost
from nift.llm.prices import cost
from nift.llm.run_state import RunState
from nift.llm.store import StoreFull
from nift.llm.types import BackendAbort, RequestFailed, Result, RetryableError


class OnlineRun(RunState):
    """Async requests to an API or server, `concurrency` at a time."""

    def drive(self, items: list[Item]) -> None:
        _run_coro(self.online(items))

    def retry_delay(self, attempt: int, err: RetryableError) -> float:
        """Full-jitter exponential backoff (base 1 s, cap 60 s), never shorter than the server's retry-after."""
        delay = random.uniform(0, min(60.0, 2.0 ** attempt))
        if err.retry_after is not None:
            delay = err.retry_after + random.uniform(0, 0.1 * err.retry_after + 0.05)
        return delay

    async def online(self, items: list[Item]) -> None:
        backend: OnlineBackend = self.backend  # type: ignore[assignment]
        from nift.llm.ratelimit import RateLimiter

        limiter = RateLimiter(self.cfg.rpm, self.cfg.tpm)
        queue = list(reversed(items))  # pop() from the end keeps the caller's order
        exact = backend.exact_tokens

        async def worker() -> None:
            while queue and self.stop is None and self.abort is None:
                item = queue.pop()
                reserve = worst_cost(self.price, item, exact, False)
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

    async def _send(self, backend: OnlineBackend, limiter: Any, item: Item) -> None:
        tokens = item.prompt_tokens + item.max_tokens
        max_cost = None if self.price is None else worst_cost(self.price, item, backend.exact_tokens, False)
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


class LocalRun(RunState):
    """An in-process model (or a Ray pool of them) generating chunks of requests."""

    def drive(self, items: list[Item]) -> None:
        self.local(items)

    def local(self, items: list[Item]) -> None:
        backend: LocalBackend = self.backend  # type: ignore[assignment]
        groups: dict[tuple, list[Item]] = {}
        for it in items:
            p = it.payload
            groups.setdefault((p["max_tokens"], p["temperature"], tuple(p["stop"])), []).append(it)
        size = getattr(backend, "chunk_size", self.cfg.batch_size)
        chunks: list[list[Item]] = []
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


class BatchRun(RunState):
    """A provider's Batch API: jobs submitted, watched and collected, resumed after a crash."""

    def drive(self, items: list[Item]) -> None:
        self.batch_jobs(items)

    def batch_jobs(self, items: list[Item]) -> None:
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
            reserve = sum(worst_cost(self.price, it, backend.exact_tokens, True) for it in chunk)
            if not self.ledger.reserve(reserve):
                # Fit what the budget allows into a smaller last batch.
                fit = []
                for it in chunk:
                    c = worst_cost(self.price, it, backend.exact_tokens, True)
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

    def _split(self, backend: BatchBackend, items: list[Item]) -> Iterable[list[Item]]:
        """Batches within the provider's request-count and byte limits; one endpoint (chat/completion) each."""
        limit_n = min(self.cfg.batch_max_requests or backend.max_requests, backend.max_requests)
        for kind in ("chat", "completion"):
            chunk: list[Item] = []
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

    def _watch(self, backend: BatchBackend, watching: list[dict], by_key: dict[str, Item]) -> None:
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

    def _collect(self, backend: BatchBackend, b: dict, by_key: dict[str, Item]) -> None:
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


def driver_for(backend: Backend) -> type[RunState]:
    """The driver for the backend's kind (a backend of no known kind gets the bare state, which sends nothing)."""
    for kind, driver in ((OnlineBackend, OnlineRun), (LocalBackend, LocalRun), (BatchBackend, BatchRun)):
        if isinstance(backend, kind):
            return driver
    return RunState


def _run_coro(coro: Any) -> Any:
    """Run a coroutine to completion, also when the caller already runs an event loop (notebooks, async code)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        return ex.submit(asyncio.run, coro).result()
