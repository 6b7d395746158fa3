"""The engine without a model: store, keys, rate limits, prices, budgets, bad input, provider errors.

Paid providers are the local HTTP fake (tests/helpers/fake_providers.py) driven through the official SDKs."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

from nift.config import ConfigError
from nift.distill.config import DistillConfig
from nift.errors import InputError
from nift.llm import BackendAbort, Request, estimate_requests, run_requests, text_request
from nift.llm.config import BackendConfig, Price
from nift.llm.prices import price_for
from nift.llm.ratelimit import RateLimiter
from nift.llm.store import Store, request_key
from nift.llm.types import Result


def chat(i: int, text: str | None = None) -> Request:
    return Request(id=f"r{i}", messages=[{"role": "user", "content": text or f"alpha beta gamma delta {i}"}])


def anth(fake, **kw) -> BackendConfig:
    return BackendConfig(backend="anthropic", model="claude-3-haiku-20240307", base_url=fake.anthropic_url,
                         api_key_env=fake.key_env, max_tokens=4, **kw)


def test_store_is_wal_and_durable_across_connections(tmp_path):
    p = tmp_path / "s.sqlite"
    with Store(p) as s:
        s.put("k1", "openai", "m", Result("a", "text", "stop", 3, 1, 0.1, "m"))
    con = sqlite3.connect(p)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()
    with Store(p) as s:
        got = s.get_many(["k1", "k2"])
    assert list(got) == ["k1"] and got["k1"].text == "text" and got["k1"].cached


def test_request_key_covers_content_and_parameters_but_not_volatile_settings():
    base = {"kind": "chat", "messages": [{"role": "user", "content": "x"}], "max_tokens": 8, "temperature": 0.0,
            "stop": []}
    k = request_key("openai", "m", base)
    assert k == request_key("openai", "m", dict(base))
    assert k != request_key("openai", "m2", base)
    assert k != request_key("anthropic", "m", base)
    assert k != request_key("openai", "m", {**base, "max_tokens": 9})
    assert k != request_key("openai", "m", {**base, "messages": [{"role": "user", "content": "y"}]})
    # concurrency, rate limits, timeouts are volatile: neither in the stage hash nor in any request
    a = DistillConfig(teacher=BackendConfig(concurrency=1, rpm=10, timeout_s=5))
    assert a.config_hash() == DistillConfig().config_hash()
    assert DistillConfig(teacher=BackendConfig(max_tokens=7)).config_hash() != DistillConfig().config_hash()


def test_request_needs_exactly_one_form():
    with pytest.raises(ValueError, match="exactly one"):
        Request(id="x")
    with pytest.raises(ValueError, match="exactly one"):
        Request(id="x", prompt="a", messages=[{"role": "user", "content": "b"}])
    with pytest.raises(ValueError, match="role"):
        Request(id="x", messages=[{"role": "robot", "content": "b"}])
    assert text_request("i", "t", BackendConfig()).messages[0]["content"] == "t"
    assert text_request("i", "t", BackendConfig(endpoint="completions")).prompt == "t"


def test_token_bucket_paces_requests():
    async def go():
        lim = RateLimiter(rpm=480, tpm=None)  # 8 requests/s, burst 4 (half a second)
        t0 = time.monotonic()
        for _ in range(12):
            await lim.acquire(1)
        lim = RateLimiter(rpm=None, tpm=1200)  # 20 tokens/s, burst 10
        t1 = time.monotonic()
        for _ in range(4):
            await lim.acquire(5)
        return t1 - t0, time.monotonic() - t1

    by_requests, by_tokens = asyncio.run(go())
    assert 0.95 < by_requests < 1.5  # 4 at once, then one every 0.125 s
    assert 0.45 < by_tokens < 0.9  # 2 at once (10 tokens), then one every 0.25 s


def test_prices_table_overrides_and_unknown():
    assert price_for(BackendConfig(backend="openai", model="gpt-4o-mini")).input == 0.15
    assert price_for(BackendConfig(backend="openai", model="gpt-4o-mini-2024-07-18")).output == 0.6  # dated id
    assert price_for(BackendConfig(backend="anthropic", model="claude-3-opus-20240229")).output == 75
    over = BackendConfig(backend="openai", model="gpt-4o-mini", prices={"gpt-4o-mini": Price(input=1, output=2)})
    assert price_for(over).input == 1
    assert price_for(BackendConfig(backend="openai", model="my-local-model")) is None
    assert price_for(BackendConfig(backend="hf")).input == 0


def test_anthropic_messages_api_with_paper_system_prompt_and_cache(fake, tmp_path):
    from nift.llm.config import PAPER_SYSTEM_PROMPT

    store = tmp_path / "c.sqlite"
    reqs = [chat(i) for i in range(5)] + [Request(id="dup", messages=[{"role": "user",
                                                                        "content": "alpha beta gamma delta 0"}])]
    res = run_requests(anth(fake), reqs, store, progress=False)
    assert set(res) == {f"r{i}" for i in range(5)} | {"dup"}
    assert len(fake.messages) == 5  # the duplicate content was sent once
    assert all(m["system"] == PAPER_SYSTEM_PROMPT and m["temperature"] == 0 for m in fake.messages)
    r = res["r1"]
    assert r.text == "1 delta gamma beta" and r.finish_reason == "length" and r.completion_tokens == 4
    assert r.cost_usd == pytest.approx((r.prompt_tokens * 0.25 + 4 * 1.25) / 1e6)
    led = res.summary.ledger()  # paid once for the duplicate: the ledger counts distinct requests
    assert led["total"]["requests"] == 5
    assert led["total"]["cost_usd"] == pytest.approx(sum(x.cost_usd for k, x in res.items() if k != "dup"), abs=1e-8)
    again = run_requests(anth(fake), reqs, store, progress=False)
    assert len(fake.messages) == 5 and again.summary.cached == 6 and again["r1"].text == r.text
    # system prompt off, multi-turn kept in order
    run_requests(anth(fake, system_prompt=""), [Request(id="t", messages=[
        {"role": "user", "content": "one"}, {"role": "assistant", "content": "two"},
        {"role": "user", "content": "three"}])], store, progress=False)
    assert "system" not in fake.messages[-1] and [m["content"] for m in fake.messages[-1]["messages"]] == [
        "one", "two", "three"]


def test_budget_stops_before_the_cap_and_resumes(fake, tmp_path):
    store = tmp_path / "c.sqlite"
    reqs = [chat(i) for i in range(10)]
    cfg = anth(fake, concurrency=2, prices={"claude-3-haiku-20240307": Price(input=1000, output=1000)})
    # worst case per request ~ (8*1.25 prompt estimate + 4) tokens * $1000/M ~ $0.015; 0.05 allows 3
    res = run_requests(cfg, reqs, store, budget_usd=0.05, progress=False)
    assert res.summary.stopped == "budget"
    assert 0 < len(res) < 10 and res.summary.ledger()["total"]["cost_usd"] <= 0.05
    sent = len(fake.messages)
    full = run_requests(cfg, reqs, store, budget_usd=1.0, progress=False)
    assert len(full) == 10 and full.summary.stopped is None
    assert len(fake.messages) == sent + (10 - len(res))  # nothing paid for is sent again
    assert full.summary.ledger()["total"]["cost_usd"] <= 1.0


def test_unknown_price_warns_and_refuses_a_budget(fake, tmp_path):
    cfg = BackendConfig(backend="anthropic", model="claude-unknown-model", base_url=fake.anthropic_url,
                        api_key_env=fake.key_env, max_tokens=4)
    with pytest.raises(ConfigError, match="not in the price table"):
        run_requests(cfg, [chat(0)], tmp_path / "c.sqlite", budget_usd=1.0, progress=False)
    logs = []
    res = run_requests(cfg, [chat(0)], tmp_path / "c.sqlite", progress=False, log=logs.append)
    assert res["r0"].cost_usd is None and res.summary.ledger()["total"]["cost_unknown_requests"] == 1
    assert any("not in the price table" in m for m in logs)


def test_missing_and_rejected_api_key_name_the_variable(fake, tmp_path, monkeypatch):
    monkeypatch.delenv("NIFT_NO_SUCH_KEY", raising=False)
    cfg = anth(fake).model_copy(update={"api_key_env": "NIFT_NO_SUCH_KEY"})
    with pytest.raises(ConfigError, match="NIFT_NO_SUCH_KEY"):
        run_requests(cfg, [chat(0)], tmp_path / "c.sqlite", progress=False)
    monkeypatch.setenv("NIFT_WRONG_KEY", "sk-wrong")
    cfg = anth(fake).model_copy(update={"api_key_env": "NIFT_WRONG_KEY"})
    with pytest.raises(BackendAbort, match="NIFT_WRONG_KEY") as e:
        run_requests(cfg, [chat(i) for i in range(3)], tmp_path / "c.sqlite", progress=False)
    assert "sk-wrong" not in str(e.value)


def test_empty_and_too_long_prompts(fake, tmp_path):
    long_text = " ".join(f"w{i}" for i in range(400))  # ~ 500 estimated tokens (4 characters each)
    reqs = [chat(0), Request(id="empty", messages=[{"role": "user", "content": "  "}]), chat(1, long_text)]
    res = run_requests(anth(fake, context_tokens=128), reqs, tmp_path / "a.sqlite", progress=False)
    s = res.summary
    assert [k.id for k in s.skipped] == ["empty"] and s.truncated == 1 and s.truncated_tokens > 300
    sent = fake.messages[-1]["messages"][0]["content"]
    assert long_text.endswith(sent) and len(sent) < len(long_text)  # truncated from the left
    res = run_requests(anth(fake, context_tokens=128, on_long_prompt="skip"), reqs, tmp_path / "b.sqlite",
                       progress=False)
    assert sorted(k.reason for k in res.summary.skipped) == ["empty", "too_long"] and set(res) == {"r0"}
    with pytest.raises(InputError, match=r"'r1'.*context"):
        run_requests(anth(fake, context_tokens=128, on_long_prompt="error"), reqs, tmp_path / "c.sqlite",
                     progress=False)
    with pytest.raises(InputError, match="appears twice"):
        run_requests(anth(fake), [chat(0), chat(0)], tmp_path / "d.sqlite", progress=False)


def test_anthropic_has_no_completions_endpoint(fake, tmp_path):
    with pytest.raises(ConfigError, match="no raw-completion endpoint"):
        run_requests(anth(fake), [Request(id="p", prompt="text")], tmp_path / "c.sqlite", progress=False)


def test_estimate_counts_only_what_is_not_stored(fake, tmp_path):
    store = tmp_path / "c.sqlite"
    cfg = anth(fake)
    reqs = [chat(i) for i in range(6)]
    run_requests(cfg, reqs[:2], store, progress=False)
    n = len(fake.messages)
    est = estimate_requests(cfg, reqs, store)
    assert est["stored"] == 2 and est["to_send"] == 4 and len(fake.messages) == n
    assert est["max_completion_tokens"] == 16
    assert est["max_cost_usd"] == pytest.approx((est["prompt_tokens"] * 0.25 + 16 * 1.25) / 1e6, abs=1e-4)


def test_vllm_backend_missing_package_is_named():
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("vllm is installed here")
    from nift.errors import NiftError
    from nift.llm.backends import make_backend

    with pytest.raises(NiftError, match=r"'vllm' is needed for the vllm backend.*nift\[gpu\]"):
        make_backend(BackendConfig(backend="vllm"))
