"""One writer at a time: a second process on the same stage directory or request store stops at once, naming the
holder; `--wait-lock` waits; a lock left by a killed process is taken over."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers.faultproxy import FaultProxy
from helpers.processes import nift_cmd, nift_env

from nift.locks import LockHeld, lock_paths, writer_lock

_HOLD = """
import sys, time
from nift.locks import writer_lock
with writer_lock(sys.argv[1], "test", directory=sys.argv[2] == "dir", log=lambda *_: None):
    print("locked", flush=True)
    time.sleep(float(sys.argv[3]))
"""


def _holder(target: Path, directory: bool, seconds: float) -> subprocess.Popen:
    """A second real process that holds the lock of `target` for `seconds` (returns once it holds it)."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(target), "dir" if directory else "file", str(seconds)],
                            env=nift_env(), stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _distill_args(run_dir: Path, fake, base_url: str, *extra: str) -> list[str]:
    return ["distill", "--run-dir", str(run_dir), "--teacher.backend", "openai", "--teacher.model", "gpt-4o-mini",
            "--teacher.base-url", base_url, "--teacher.api-key-env", fake.key_env, "--teacher.concurrency", "1",
            "--no-progress", *extra]


@pytest.mark.parametrize("shared", ["run_dir", pytest.param("cache", marks=pytest.mark.slow)])
def test_second_distill_stops_at_once_naming_the_holder(prepared, fake, tmp_path, shared):
    """Two `nift distill` on one run dir, or on two run dirs sharing one store through --cache: the second stops
    in about a second with exit 2 and the first's pid and host; every prompt reaches the server once."""
    arrived, gate = threading.Event(), threading.Event()

    def plan(key: str, attempt: int) -> str:
        arrived.set()
        gate.wait(20)  # the first process's requests wait until the second has been turned away
        return "pass"

    extra: tuple[str, ...] = ()
    second_dir = prepared
    if shared == "cache":
        extra = ("--cache", str(tmp_path / "shared.sqlite"))
        second_dir = tmp_path / "second"
        second_dir.mkdir()
        import shutil

        shutil.copytree(prepared / "prepare", second_dir / "prepare")
    with FaultProxy(fake.root, plan) as proxy:
        first = subprocess.Popen(nift_cmd(*_distill_args(prepared, fake, proxy.base_url, *extra)), env=nift_env(),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 30
            while not arrived.wait(0.05):  # the first holds both locks once its first request is out
                assert first.poll() is None, first.stdout.read()
                assert time.monotonic() < deadline
            t0 = time.monotonic()
            second = subprocess.run(nift_cmd(*_distill_args(second_dir, fake, proxy.base_url, *extra)),
                                    env=nift_env(), capture_output=True, text=True, timeout=30)
            took = time.monotonic() - t0
        finally:
            gate.set()
        out, _ = first.communicate(timeout=60)
    assert first.returncode == 0, out
    assert second.returncode == 2, second.stderr
    assert f"pid {first.pid} on host {socket.gethostname()}" in second.stderr
    assert ("the distill stage" if shared == "run_dir" else "the request store") in second.stderr
    assert "--wait-lock" in second.stderr and "Traceback" not in second.stderr
    assert took < 5
    entries = proxy.entries()
    assert len(entries) == 6 and len({e.key for e in entries}) == 6  # 6 prompts, 6 requests: none paid twice
    assert all(e.delivered for e in entries)


def test_store_shared_through_cache_is_locked_across_run_dirs(prepared, fake, tmp_path):
    """The fast twin of the `cache` case above: another process holds the shared store; a distill in another run
    dir stops before it makes a backend, naming that process."""
    from nift.distill import run
    from nift.distill.config import DistillConfig
    from nift.llm.config import BackendConfig

    store = tmp_path / "shared.sqlite"
    holder = _holder(store, False, 30)
    try:
        teacher = BackendConfig(backend="openai", model="gpt-4o-mini", base_url=fake.openai_url,
                                api_key_env=fake.key_env)
        with pytest.raises(LockHeld, match=f"the request store .*pid {holder.pid} on host {socket.gethostname()}"):
            run(DistillConfig(teacher=teacher, cache=str(store), progress=False), prepared, log=lambda *_: None)
    finally:
        holder.kill()
        holder.wait()
    assert not fake.chats and not store.exists()  # nothing sent, the store untouched


def test_wait_lock_waits_for_the_holder(tmp_path):
    stage = tmp_path / "run" / "distill"
    holder = _holder(stage, True, 1.0)
    logs: list[str] = []
    t0 = time.monotonic()
    with writer_lock(stage, "the distill stage", directory=True, wait=20, log=logs.append):
        waited = time.monotonic() - t0
    holder.wait(10)
    assert 0.3 < waited < 10
    assert any(f"pid {holder.pid}" in line and "waiting" in line for line in logs)


def test_wait_lock_gives_up_after_its_seconds(tmp_path):
    store = tmp_path / "cache.sqlite"
    holder = _holder(store, False, 30)
    try:
        t0 = time.monotonic()
        with pytest.raises(LockHeld, match=f"pid {holder.pid} on host"), \
                writer_lock(store, "the request store", directory=False, wait=0.4, log=lambda *_: None):
            pass
        assert time.monotonic() - t0 < 3
    finally:
        holder.kill()
        holder.wait()


def test_lock_of_a_killed_process_is_taken_over(tmp_path):
    store = tmp_path / "cache.sqlite"
    holder = _holder(store, False, 60)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    _, sidecar = lock_paths(store, directory=False)
    assert sidecar.is_file()  # the dead holder could not clean up
    logs: list[str] = []
    t0 = time.monotonic()
    with writer_lock(store, "the request store", directory=False, log=logs.append):
        assert time.monotonic() - t0 < 1
        assert f'"pid": {os.getpid()}' in sidecar.read_text()
    assert any(f"left by pid {holder.pid}" in line for line in logs)
    assert not sidecar.exists()  # released cleanly: nothing left to take over


def test_same_process_may_take_its_own_lock_again(tmp_path):
    stage = tmp_path / "s"
    with writer_lock(stage, "a", directory=True), writer_lock(stage, "a", directory=True):
        pass
    with writer_lock(stage, "a", directory=True):  # released after the outer block
        pass


def test_run_stage_keeps_its_lock_files_out_of_cleanup_and_hashes(tmp_path):
    from nift.artifacts import run_stage
    from nift.prepare import PrepareConfig

    stage = tmp_path / "prepare"

    def body(ctx):
        (ctx.dir / "data.jsonl").write_text('{"id": "a"}\n')
        assert lock_paths(stage, directory=True)[0].exists()

    res = run_stage("prepare", stage, PrepareConfig(), body, log=lambda *_: None)
    assert set(res.manifest["files"]) == {"data.jsonl"}
