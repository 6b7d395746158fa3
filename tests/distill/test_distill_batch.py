"""The Batch API backends (openai-batch, anthropic-batch) through the official SDKs against the local HTTP fake:
splitting, polling, download, batch pricing, per-request errors, and resume after a crash between submit and
download."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from helpers.corpora import prepared_run
from helpers.fake_providers import FakeProviders

from nift.distill import run
from nift.distill.config import DistillConfig
from nift.io import read_jsonl
from nift.llm import Request, run_requests
from nift.llm.backends import make_backend
from nift.llm.config import BackendConfig
from nift.llm.items import prepare
from nift.llm.store import Store
from nift.llm.types import RunSummary

REPO = Path(__file__).resolve().parents[2]


def reqs(n: int, prefix: str = "") -> list[Request]:
    return [Request(id=f"b{i}", messages=[{"role": "user", "content": f"{prefix}red green blue yellow {i}"}])
            for i in range(n)]


def batch_cfg(fake, backend: str, **kw) -> BackendConfig:
    model = "claude-3-haiku-20240307" if backend.startswith("anthropic") else "gpt-4o-mini"
    url = fake.anthropic_url if backend.startswith("anthropic") else fake.openai_url
    return BackendConfig(backend=backend, model=model, base_url=url, api_key_env=fake.key_env, max_tokens=3,
                         poll_interval_s=0.05, **kw)


@pytest.mark.parametrize("backend", ["anthropic-batch", "openai-batch"])
def test_batch_split_poll_download_price_and_errors(backend, tmp_path):
    with FakeProviders(polls_to_end=3) as fake:
        store = tmp_path / "c.sqlite"
        cfg = batch_cfg(fake, backend, batch_max_requests=2)
        items = reqs(5)
        # one request errors inside its batch: recorded as failed, and submitted again by the next run
        probe = make_backend(cfg)
        _, keyed = prepare(probe, cfg, items, RunSummary())
        bad_key = next(k for k, it in keyed.items() if it.ids == ["b3"])
        fake.error_ids.add(bad_key)
        res = run_requests(cfg, items, store, progress=False, log=lambda *_: None)
        assert set(res) == {"b0", "b1", "b2", "b4"} and [f.id for f in res.summary.failed] == ["b3"]
        assert fake.batch_creates == 3 and len(res.summary.batches) == 3  # 5 requests, at most 2 per batch
        polls = [b["polls"] for b in (fake.anthropic_batches or fake.openai_batches).values()]
        assert min(polls) >= 3  # each batch was polled until it ended
        r = res["b1"]
        assert r.text == "1 yellow blue" and r.finish_reason == "length"
        price = {"anthropic-batch": (0.25, 1.25), "openai-batch": (0.15, 0.60)}[backend]
        assert r.cost_usd == pytest.approx(0.5 * (r.prompt_tokens * price[0] + r.completion_tokens * price[1]) / 1e6)
        fake.error_ids.clear()
        again = run_requests(cfg, items, store, progress=False, log=lambda *_: None)
        assert len(again) == 5 and again.summary.cached == 4 and fake.batch_creates == 4
        sent = [len(b.get("requests") or b.get("lines")) for b in (fake.anthropic_batches or
                                                                   fake.openai_batches).values()]
        assert sent == [2, 2, 1, 1]  # only the failed request went out again


def test_openai_batch_found_after_crash_during_submission(tmp_path):
    """The store recorded the intent, the provider got the batch, the crash came before the batch id was stored."""
    with FakeProviders(polls_to_end=2) as fake:
        cfg = batch_cfg(fake, "openai-batch")
        items = reqs(4)
        backend = make_backend(cfg)
        _, keyed = prepare(backend, cfg, items, RunSummary())
        local_id = uuid.uuid4().hex
        with Store(tmp_path / "c.sqlite") as store:
            store.batch_intent(local_id, "openai-batch", cfg.model, list(keyed), {})
        backend.submit(local_id, [(k, it.payload) for k, it in keyed.items()])  # reached the provider; then crash
        logs: list[str] = []
        res = run_requests(cfg, items, tmp_path / "c.sqlite", progress=False, log=logs.append)
        assert len(res) == 4 and fake.batch_creates == 1  # found by its metadata, not submitted twice
        assert any("submitted before an interruption" in m for m in logs)


def _batch_states(store: Path) -> list[str]:
    if not store.exists():
        return []
    con = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=10)
    try:
        return [s for (s,) in con.execute("SELECT state FROM batches")]
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def test_anthropic_batch_resume_after_sigkill_between_submit_and_download(tmp_path):
    run_dir = prepared_run(tmp_path, n=6)
    store = run_dir / "distill" / "cache.sqlite"
    with FakeProviders(hold=True) as fake:  # batches stay in progress until released
        teacher = batch_cfg(fake, "anthropic-batch")
        cmd = [sys.executable, "-m", "nift.cli", "distill", "--run-dir", str(run_dir), "--no-progress",
               *[f"--teacher.{k.replace('_', '-')}={v}" for k, v in teacher.model_dump(exclude_defaults=True).items()]]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while "submitted" not in _batch_states(store):
            if proc.poll() is not None:
                pytest.fail(f"nift distill exited early:\n{proc.stdout.read().decode()[-3000:]}")
            assert time.monotonic() < deadline
            time.sleep(0.05)
        while min((b["polls"] for b in fake.anthropic_batches.values()), default=0) < 2:
            time.sleep(0.05)  # it is polling
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        assert fake.batch_creates == 1
        fake.release()
        logs: list[str] = []
        res = run(DistillConfig(teacher=teacher, progress=False), run_dir, log=logs.append)
        assert fake.batch_creates == 1  # resumed from the stored batch id, not submitted again
        assert any("resuming batch" in m for m in logs)
    rows = list(read_jsonl(run_dir / "distill" / "data.jsonl"))
    assert [r["id"] for r in rows] == [r["id"] for r in read_jsonl(run_dir / "prepare" / "data.jsonl")]
    assert all(r["completion"] and r["teacher"] == "anthropic-batch:claude-3-haiku-20240307" for r in rows)
    assert res.manifest["cost"]["batches"][0]["requests"] == 6
    assert json.loads(json.dumps(res.manifest["cost"]))["total"]["requests"] == 6


def test_stage_budget_stop_and_failed_requests(tmp_path):
    """`nift distill` stops cleanly at --budget-usd and on failed requests; a re-run repeats nothing paid for."""
    from nift.errors import NiftError
    from nift.llm import BudgetReached
    from nift.llm.config import Price

    run_dir = prepared_run(tmp_path, n=6)
    with FakeProviders() as fake:
        teacher = BackendConfig(backend="anthropic", model="claude-3-haiku-20240307", base_url=fake.anthropic_url,
                                api_key_env=fake.key_env, max_tokens=3, concurrency=1,
                                prices={"claude-3-haiku-20240307": Price(input=1000, output=1000)})
        with pytest.raises(BudgetReached, match="Raise --budget-usd"):
            run(DistillConfig(teacher=teacher, budget_usd=0.12, progress=False), run_dir, log=lambda *_: 0)
        first = len(fake.messages)
        assert 0 < first < 6 and not (run_dir / "distill" / "manifest.json").exists()
        res = run(DistillConfig(teacher=teacher, budget_usd=5.0, progress=False), run_dir, log=lambda *_: 0)
        assert len(fake.messages) == 6 and res.manifest["stats"]["cached"] == first
        assert res.manifest["cost"]["total"]["cost_usd"] <= 5.0

        # anthropic and anthropic-batch share stored answers: another max_tokens makes these requests new
        batch = batch_cfg(fake, "anthropic-batch").model_copy(update={"max_tokens": 4})
        _, keyed = prepare(make_backend(batch), batch, [Request(id=r["id"], messages=[
            {"role": "user", "content": r["prompt"]}]) for r in read_jsonl(run_dir / "prepare" / "data.jsonl")],
            RunSummary())
        fake.error_ids.add(next(iter(keyed)))
        with pytest.raises(NiftError, match=r"1 request\(s\) failed"):
            run(DistillConfig(teacher=batch, progress=False), run_dir, log=lambda *_: 0)
        skipped = run(DistillConfig(teacher=batch, on_failure="skip", progress=False), run_dir, log=lambda *_: 0)
        assert skipped.manifest["stats"]["failed"] == 1 and skipped.manifest["rows"]["data.jsonl"] == 5
        assert fake.batch_creates == 2  # the second run re-submitted only the failed request
        assert [len(b["requests"]) for b in fake.anthropic_batches.values()] == [6, 1]
