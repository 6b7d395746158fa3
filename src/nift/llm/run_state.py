"""The state of one `run_requests` call, shared by the three drivers: the budget ledger, the progress bar, and the
bookkeeping of every request (answered, stored, lost in transit, refused, failed)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from nift.llm.backends import Backend, BatchBackend
from nift.llm.config import BackendConfig, Price
from nift.llm.items import Item
from nift.llm.prices import cost
from nift.llm.store import Store, StoreFull
from nift.llm.types import Failure, Result, RunSummary, Usage


class Results(dict):
    """`{id: Result}` for every request that has a result, plus `.summary` (a `RunSummary`)."""

    summary: RunSummary


@dataclass
class Ledger:
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


class Progress:
    def __init__(self, total: int, initial: int, enabled: bool, desc: str):
        self.bar = None
        self.usage = Usage()  # what the answers shown so far cost
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="req", mininterval=0.5, smoothing=0.1,
                            dynamic_ncols=True)

    def update(self, n: int, r: Result | None = None) -> None:
        if r is not None:
            self.usage.add(r)
        if self.bar is not None:
            u = self.usage
            self.bar.set_postfix_str(f"tok {u.prompt_tokens:,}/{u.completion_tokens:,} ${u.cost_usd:.4f}",
                                     refresh=False)
            self.bar.update(n)

    def note(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_description_str(text, refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class RunState:
    """State of one run_requests call, shared by the three drivers."""

    def __init__(self, cfg: BackendConfig, backend: Backend, store: Store, price: Price | None,
                 budget: float | None, summary: RunSummary, results: Results, bar: Progress, log: Callable):
        self.cfg, self.backend, self.store, self.price = cfg, backend, store, price
        self.ledger = Ledger(budget)
        self.summary, self.results, self.bar, self.log = summary, results, bar, log
        self.stop: str | None = None
        self.abort: BaseException | None = None
        self.batch = isinstance(backend, BatchBackend)

    def finish(self, item: Item, res: Result, persist: bool = True, attempt: int | None = None) -> None:
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

    def fail(self, item: Item, err: BaseException, status: int | None = None) -> None:
        for i in item.ids:
            self.summary.failed.append(Failure(i, str(err), status, item.attempts))
        self.bar.update(len(item.ids))

    def drive(self, items: list[Item]) -> None:
        """Send the items and account for every answer (a driver's own; the bare state sends nothing)."""

    def _put_many(self, rows: list[tuple[str, str, str, Result]]) -> bool:
        """Store rows; False when the store is full (they were saved aside and the run stops)."""
        try:
            self.store.put_many(rows)
        except StoreFull as e:
            self.abort = e
            return False
        self.summary.stored += len(rows)
        return True
