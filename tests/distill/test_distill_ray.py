"""Distillation on a Ray cluster: a real 2-worker local cluster on CPU with SmolLM2-135M, one worker SIGKILLed in the
middle of the run; the output is complete and duplicate-free, no stored request is generated again, and the
results (and their store keys) are those of a single-process run. Plus the pool's planning and errors."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import sys
import threading
import time

import pytest
from helpers.corpora import prepared_run

from nift.cli import main
from nift.distill import run
from nift.distill.config import DistillConfig
from nift.errors import ConfigError, NiftError
from nift.io import read_jsonl
from nift.llm import run_requests, text_request
from nift.llm.config import BackendConfig, RayConfig

N_PROMPTS = 16


def _rows(store) -> dict[str, tuple[float, str]]:
    """{key: (created_at, result)} read from another connection, as a second process would."""
    if not store.exists():
        return {}
    db = sqlite3.connect(str(store), timeout=30)
    try:
        return {k: (t, r) for k, t, r in db.execute("SELECT key, created_at, result FROM results")}
    except sqlite3.OperationalError:  # the table is being created
        return {}
    finally:
        db.close()


class Killer(threading.Thread):
    """Watches the run's log for the workers' pids and its store for progress; once the first chunk is stored,
    snapshots the store and SIGKILLs worker 0's process."""

    def __init__(self, logs: list[str], store, deadline_s: float = 240):
        super().__init__(daemon=True)
        self.logs, self.store, self.deadline = logs, store, time.monotonic() + deadline_s
        self.pid: int | None = None
        self.snapshot: dict[str, tuple[float, str]] = {}

    def run(self) -> None:
        while time.monotonic() < self.deadline:
            pids = [int(m.group(1)) for line in list(self.logs)
                    if (m := re.match(r"\[ray\] worker 0 ready on node \S+ \(pid (\d+)", line))]
            rows = _rows(self.store) if pids else {}
            if rows:
                self.snapshot = rows
                self.pid = pids[0]
                os.kill(self.pid, signal.SIGKILL)
                return
            time.sleep(0.02)


@pytest.mark.parametrize("max_restarts", [2, pytest.param(0, marks=pytest.mark.slow)])
def test_ray_cluster_survives_a_killed_worker_without_losing_or_repeating_work(smollm2, hf_teacher, tmp_path,
                                                                               max_restarts):
    """max_restarts 2: Ray restarts the killed worker and re-runs its unfinished chunks there; 0: the worker is
    dropped and its chunks go back to the queue for the other one."""
    run_dir = prepared_run(tmp_path, n=N_PROMPTS)
    teacher = BackendConfig(backend="hf", model=smollm2, max_tokens=8, batch_size=2)  # 8 chunks of 2
    cfg = DistillConfig(teacher=teacher, progress=False,
                        ray=RayConfig(address="local", workers=2, local_cpus=2, max_restarts=max_restarts))
    store = run_dir / "distill" / "cache.sqlite"
    logs: list[str] = []
    killer = Killer(logs, store)
    killer.start()
    res = run(cfg, run_dir, log=logs.append)
    killer.join(timeout=5)

    # The kill really happened in the middle of the run; Ray restarted the worker, or the pool dropped it.
    assert killer.pid is not None, "\n".join(logs)
    assert 0 < len(killer.snapshot) < N_PROMPTS
    ray_stats = res.manifest["stats"]["ray"]
    assert ray_stats["workers"] == 2 and ray_stats["chunks"] == N_PROMPTS // 2, ray_stats
    if max_restarts:
        assert ray_stats["restarts"] >= 1 and ray_stats["dropped_workers"] == 0, ray_stats
        assert any(f"worker 0 was restarted (pid {killer.pid} -> " in x for x in logs), "\n".join(logs)
    else:
        assert ray_stats["dropped_workers"] == 1 and ray_stats["requeued_chunks"] >= 1, ray_stats
        assert any("worker 0 dropped after 0 restart(s)" in x for x in logs), "\n".join(logs)
    stats = res.manifest["stats"]

    # Complete and duplicate-free, in prepare's order.
    rows = list(read_jsonl(run_dir / "distill" / "data.jsonl"))
    prep = [r["id"] for r in read_jsonl(run_dir / "prepare" / "data.jsonl")]
    assert [r["id"] for r in rows] == prep and len(set(prep)) == N_PROMPTS
    assert all(r["completion"] and r["completion_tokens"] == 8 for r in rows)

    # Never repeated: each result arrived once, and the rows stored before the kill were never written again.
    assert stats["sent"] == N_PROMPTS and stats["cached"] == 0
    after = _rows(store)
    assert len(after) == N_PROMPTS
    assert all(after[k] == v for k, v in killer.snapshot.items())

    # The same results, under the same keys, as one process generating the same chunks.
    ref = run_requests(teacher.model_copy(update={"device": "cpu"}),
                       [text_request(r["id"], r["prompt"], teacher)
                        for r in read_jsonl(run_dir / "prepare" / "data.jsonl")],
                       tmp_path / "ref.sqlite", progress=False, backend=hf_teacher)
    assert {r["id"]: r["completion"] for r in rows} == {i: r.text for i, r in ref.items()}
    assert set(_rows(tmp_path / "ref.sqlite")) == set(after)

    assert run(cfg, run_dir, log=logs.append).skipped  # up to date


def test_worker_planning_follows_the_cluster():
    from nift.llm.backends.ray_pool import plan_workers

    hf = BackendConfig(backend="hf")
    vllm = BackendConfig(backend="vllm", tensor_parallel=4)
    assert plan_workers(RayConfig(address="auto"), hf, {"CPU": 2.0}) == (2, 0.0, 1.0)
    assert plan_workers(RayConfig(address="auto", cpus_per_worker=4), hf, {"CPU": 16.0}) == (4, 0.0, 4.0)
    assert plan_workers(RayConfig(address="auto"), hf, {"CPU": 64.0, "GPU": 8.0}) == (8, 1.0, 1.0)
    assert plan_workers(RayConfig(address="auto"), vllm, {"CPU": 128.0, "GPU": 16.0}) == (4, 4.0, 1.0)
    with pytest.raises(ConfigError, match="2 GPUs: 3 worker"):
        plan_workers(RayConfig(address="auto", workers=3), hf, {"CPU": 8.0, "GPU": 2.0})
    with pytest.raises(ConfigError, match="the vllm teacher needs GPUs and the Ray cluster has none"):
        plan_workers(RayConfig(address="auto"), vllm, {"CPU": 8.0})
    with pytest.raises(ConfigError, match=r"must equal --teacher\.tensor-parallel 4"):
        plan_workers(RayConfig(address="auto", gpus_per_worker=2), vllm, {"GPU": 8.0})


def test_ray_mode_errors_are_clear(smollm2, tmp_path, capsys, monkeypatch):
    run_dir = prepared_run(tmp_path, n=2)
    # An API teacher is not spread over Ray: the error points to the multi-machine recipe.
    assert main(["distill", "--run-dir", str(run_dir), "--teacher.backend", "openai", "--teacher.model",
                 "gpt-4o-mini", "--ray.address", "local"]) == 2
    err = capsys.readouterr().err
    assert "in-process teachers (hf, vllm)" in err and "--shard I/N" in err and "docs/scaling.md" in err
    # ray missing: named with the extra that installs it
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(NiftError, match=r"'ray' is needed for --ray.address .*pip install 'nift\[ray\]'"):
        run(DistillConfig(teacher=BackendConfig(model=smollm2), ray=RayConfig(address="local")), run_dir,
            log=lambda *_: None)
    assert main(["distill", "--run-dir", str(run_dir), "--ray.workers", "0"]) == 2
    assert "--ray.workers: Input should be greater than or equal to 1" in capsys.readouterr().err


def test_ray_options_are_volatile_and_documented(capsys):
    base = DistillConfig()
    spread = DistillConfig(ray=RayConfig(address="auto", workers=8, gpus_per_worker=1))
    assert base.config_hash() == spread.config_hash()  # where it ran does not change what it produced
    assert "ray" not in json.dumps(base.hashable())
    with pytest.raises(SystemExit):
        main(["distill", "--help"])
    out = capsys.readouterr().out
    for flag in ("--ray.address", "--ray.workers", "--ray.gpus-per-worker", "--ray.max-restarts", "--shard",
                 "--teacher.tensor-parallel"):
        assert flag in out
