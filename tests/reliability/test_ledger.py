"""An honest ledger: requests sent, answered, stored and lost in transit, with the most the lost ones can have
cost; --budget-usd caps what may have been billed, not only what was stored. The fake server does the work and
then drops the connection (or garbles the reply), as a gateway or a flaky network does."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.faultproxy import FaultProxy

from nift.artifacts import read_manifest
from nift.distill import run
from nift.distill.config import DistillConfig
from nift.io import read_jsonl
from nift.llm.config import BackendConfig, Price
from nift.llm.store import Store
from nift.llm.types import BudgetReached

PRICE = 1000.0  # $ per million tokens, in and out: $0.001 a token keeps the sums readable


def _teacher(url: str, key_env: str) -> BackendConfig:
    return BackendConfig(backend="openai", model="fake-1", base_url=url, api_key_env=key_env, max_tokens=6,
                         concurrency=1, max_retries=3, prices={"fake-1": Price(input=PRICE, output=PRICE)})


def _bill(entries) -> float:
    """What the server did and would bill: every answer it produced, delivered or not."""
    return sum((e.usage["prompt_tokens"] + e.usage["completion_tokens"]) * PRICE / 1e6 for e in entries if e.usage)


def _prompts(run_dir: Path) -> list[str]:
    return [r["prompt"] for r in read_jsonl(run_dir / "prepare" / "data.jsonl")]


def test_ledger_counts_work_lost_in_transit(prepared, fake):
    prompts = _prompts(prepared)
    faults = {prompts[0]: "drop_after", prompts[1]: "drop_after", prompts[2]: "malformed", prompts[3]: "429"}

    def plan(key: str, attempt: int) -> str:
        return faults.get(key, "pass") if attempt == 1 else "pass"

    with FaultProxy(fake.root, plan, retry_after=0.01) as proxy:
        res = run(DistillConfig(teacher=_teacher(proxy.base_url, fake.key_env), progress=False), prepared,
                  log=lambda *_: None)
        entries = proxy.entries()
    cost = res.manifest["cost"]
    req, lost = cost["requests_this_run"], cost["lost_in_transit"]
    # 6 prompts: 4 first attempts failed (2 dropped after the work, 1 garbled, 1 rate-limited), all retried once.
    assert (len(entries), req["sent"], req["answered"], req["stored"], req["refused"], req["lost_in_transit"]) == \
        (10, 10, 6, 6, 1, 3)
    assert lost["requests"] == 3
    billed = _bill(entries)
    lost_billed = _bill(e for e in entries if e.usage and not e.delivered)
    assert lost_billed > 0  # the server did work no stored answer shows
    assert cost["total"]["cost_usd"] == pytest.approx(billed - lost_billed)
    assert lost["max_cost_usd"] >= lost_billed  # an upper bound ...
    assert cost["max_billed_usd"] >= billed  # ... so the ledger never claims less than the bill
    assert len(list(read_jsonl(prepared / "distill" / "data.jsonl"))) == 6


def test_budget_counts_what_may_have_been_billed(prepared, fake):
    """Every first attempt is dropped after the server did the work: the old ledger counted half the bill and
    ran past the budget; now the bill stays within it."""
    budget = 0.12

    def plan(key: str, attempt: int) -> str:
        return "drop_after" if attempt == 1 else "pass"

    with FaultProxy(fake.root, plan) as proxy:
        cfg = DistillConfig(teacher=_teacher(proxy.base_url, fake.key_env), budget_usd=budget, progress=False)
        with pytest.raises(BudgetReached, match=r"lost in transit"):
            run(cfg, prepared, log=lambda *_: None)
        entries = proxy.entries()
    assert entries and _bill(entries) <= budget
    stored = Store(prepared / "distill" / "cache.sqlite")
    try:
        assert stored.count() < 6  # stopped before the end: the next attempt could have crossed the cap
    finally:
        stored.close()


def test_requests_on_the_wire_when_a_process_died_are_counted_next_run(prepared, fake):
    """A row in `in_flight` is what a killed process had sent; the next run (holding the lock, so that process is
    gone) counts it as lost in transit, at its upper bound, and the budget includes it."""
    from nift.llm import text_request
    from nift.llm.backends import make_backend
    from nift.llm.store import request_key

    teacher = _teacher(fake.openai_url, fake.key_env)
    backend = make_backend(teacher, log=lambda *_: None)
    req = text_request("x", _prompts(prepared)[0], teacher)
    key = request_key(backend.family, teacher.model, backend.payload(req))
    with Store(prepared / "distill" / "cache.sqlite") as store:
        store.begin_attempt(key, 0.05)  # sent, then kill -9
    logs: list[str] = []
    res = run(DistillConfig(teacher=teacher, progress=False), prepared, log=logs.append)
    lost = res.manifest["cost"]["lost_in_transit"]
    assert lost == {"requests": 1, "max_cost_usd": 0.05, "cost_unknown_requests": 0}
    assert res.manifest["cost"]["max_billed_usd"] == pytest.approx(res.manifest["cost"]["total"]["cost_usd"] + 0.05)
    assert any("on the wire when an earlier run stopped" in line for line in logs)
    assert any("lost in transit" in line for line in logs)  # the summary line says so
    m = read_manifest(prepared / "distill")
    assert m["stats"]["written"] == 6
