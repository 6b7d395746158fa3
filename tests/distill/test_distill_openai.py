"""The `openai` backend against a real OpenAI-compatible server on 127.0.0.1 (transformers serve + SmolLM2-135M),
directly, through a fault-injecting proxy, and through a SIGKILL in the middle of `nift distill`."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.corpora import prepared_run
from helpers.faultproxy import FaultProxy

from nift.artifacts import read_manifest
from nift.io import read_jsonl
from nift.llm import Request, run_requests
from nift.llm.config import BackendConfig, Price

REPO = Path(__file__).resolve().parents[2]


def server_cfg(server, base_url: str | None = None, **kw) -> BackendConfig:
    kw.setdefault("max_tokens", 3)
    return BackendConfig(backend="openai", model=server.model, base_url=base_url or server.base_url,
                         api_key_env=server.api_key_env,
                         prices={server.model: Price(input=100.0, output=200.0)}, **kw)


def test_chat_and_completions_against_real_server(openai_server, tmp_path):
    reqs = [Request(id="chat", messages=[{"role": "user", "content": "What is the capital of France?"}]),
            Request(id="raw", prompt="The capital of France is"),
            Request(id="turns", messages=[{"role": "user", "content": "Hi"},
                                          {"role": "assistant", "content": "Hello! How can I help?"},
                                          {"role": "user", "content": "Name a color."}])]
    res = run_requests(server_cfg(openai_server, max_tokens=4), reqs, tmp_path / "c.sqlite", progress=False)
    assert set(res) == {"chat", "raw", "turns"}
    assert "Paris" in res["raw"].text  # raw continuation through the Completions endpoint
    for r in res.values():
        assert r.finish_reason in ("stop", "length") and r.completion_tokens <= 4 and r.prompt_tokens > 0
        assert r.cost_usd == pytest.approx((r.prompt_tokens * 100 + r.completion_tokens * 200) / 1e6)
        assert r.latency_s > 0 and r.model
    assert res["turns"].prompt_tokens > res["chat"].prompt_tokens - 10  # all turns reached the model


FAULTS = ["429", "500", "stall", "drop", "drop_after", "malformed", "pass"]


def test_fault_injection_every_id_once_no_repeat_ledger_adds_up(openai_server, tmp_path):
    texts = [f"Write one word about the number {i}." for i in range(10)]
    index = {t: i for i, t in enumerate(texts)}

    def plan(key: str, attempt: int) -> str:
        i = index[key]
        if i == 9:
            return "400"  # not retryable: asked exactly once
        if attempt == 1:
            return FAULTS[i % len(FAULTS)]
        if attempt == 2 and i == 0:
            return "429"  # a second rate limit for the same request
        return "pass"

    reqs = [Request(id=f"q{i}", messages=[{"role": "user", "content": t}]) for i, t in enumerate(texts)]
    # The server answers one request at a time: the timeout must leave room for queueing behind the others.
    with FaultProxy(openai_server.root, plan, stall_s=7.0, retry_after=1.0) as proxy:
        cfg = server_cfg(openai_server, proxy.base_url, concurrency=3, timeout_s=6.0, max_retries=6)
        res = run_requests(cfg, reqs, tmp_path / "c.sqlite", progress=False)
        s = res.summary
        # every id but the 400 completed, exactly once
        assert set(res) == {f"q{i}" for i in range(9)}
        assert [(f.id, f.status, f.attempts) for f in s.failed] == [("q9", 400, 1)]
        assert len(proxy.entries(texts[9])) == 1
        for t in texts[:9]:
            log = proxy.entries(t)
            delivered = [k for k, e in enumerate(log) if e.delivered]
            assert len(delivered) == 1 and delivered[0] == len(log) - 1  # nothing asked again after success
            assert log[-1].usage["completion_tokens"] == res[f"q{index[t]}"].completion_tokens
        assert len(proxy.entries(texts[0])) == 3  # 429, 429, pass: retry-after honoured, then success
        # at least one retry per injected fault (a slow answer under load may add a timeout)
        assert s.retries >= 7 and set(s.retry_reasons) >= {"HTTP 429", "HTTP 500", "timeout", "malformed response"}
        assert sum(v for k, v in s.retry_reasons.items() if k.startswith("connection")) >= 2  # both drops
        # the ledger adds up, and agrees with what the server reported
        led = s.ledger()
        assert led["total"]["requests"] == 9
        assert led["total"]["completion_tokens"] == sum(r.completion_tokens for r in res.values())
        assert led["total"]["prompt_tokens"] == sum(e.usage["prompt_tokens"] for e in proxy.entries() if e.delivered)
        assert led["total"]["cost_usd"] == pytest.approx(sum(r.cost_usd for r in res.values()), abs=1e-6)
        # a re-run sends nothing that succeeded; only the failed request is tried again
        n = len(proxy.entries())
        again = run_requests(cfg, reqs, tmp_path / "c.sqlite", progress=False)
        assert again.summary.cached == 9 and len(proxy.entries()) == n + 1


def _stored_ids(store: Path) -> set[str]:
    if not store.exists():
        return set()
    con = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=10)
    try:
        return {json.loads(r)["id"] for (r,) in con.execute("SELECT result FROM results")}
    except sqlite3.OperationalError:
        return set()
    finally:
        con.close()


def test_sigkill_mid_run_then_resume_repeats_nothing_stored(openai_server, tmp_path):
    run_dir = prepared_run(tmp_path, n=12)
    prompts = {r["id"]: r["prompt"] for r in read_jsonl(run_dir / "prepare" / "data.jsonl")}
    store = run_dir / "distill" / "cache.sqlite"
    conc = 2
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    with FaultProxy(openai_server.root, delay_s=0.3) as proxy:
        cmd = _distill_cmd(run_dir, openai_server, proxy.base_url, conc)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while len(_stored_ids(store)) < 4:
            if proc.poll() is not None:
                pytest.fail(f"nift distill exited early:\n{proc.stdout.read().decode()[-3000:]}")
            assert time.monotonic() < deadline, "no progress within 180 s"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        t_kill = time.time()
        stored = _stored_ids(store)
        assert 4 <= len(stored) < 12
        sent_before = {e.key for e in proxy.entries() if e.t <= t_kill}
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        after = [e.key for e in proxy.entries() if e.t > t_kill]
    assert not {prompts[i] for i in stored} & set(after)  # nothing stored reached the server again
    assert len(set(after) & sent_before) <= conc  # only what was in flight at the kill is asked again
    assert len(after) == len(set(after)) == 12 - len(stored)
    rows = list(read_jsonl(run_dir / "distill" / "data.jsonl"))
    assert [r["id"] for r in rows] == list(prompts)  # complete, in prepare's order
    assert all(r["completion_tokens"] > 0 and r["teacher"] == f"openai:{openai_server.model}" for r in rows)
    m = read_manifest(run_dir / "distill")
    assert m["stats"]["cached"] == len(stored) and m["stats"]["sent"] == 12 - len(stored)
    assert m["cost"]["total"]["requests"] == 12
    assert m["cost"]["total"]["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in rows), abs=1e-6)


def _distill_cmd(run_dir: Path, server, base_url: str, concurrency: int) -> list[str]:
    return [sys.executable, "-m", "nift.cli", "distill", "--run-dir", str(run_dir), "--no-progress",
            "--teacher.backend", "openai", "--teacher.model", server.model, "--teacher.base-url", base_url,
            "--teacher.api-key-env", server.api_key_env, "--teacher.max-tokens", "3",
            "--teacher.concurrency", str(concurrency), "--teacher.prices",
            json.dumps({server.model: {"input": 1.0, "output": 2.0}})]
