"""One writer at a time: an exclusive, cross-process lock on a stage directory or a request store.

    with writer_lock(run_dir / "distill", "the distill stage", directory=True):  # .nift.lock inside it
        ...
    with writer_lock(store_path, "the request store", directory=False):  # cache.sqlite.nift.lock beside it
        ...

Two `nift distill` on one run dir (a forgotten tmux session) would otherwise both send every request and pay twice.
The lock is the OS's (`flock`, through the `filelock` package; it falls back to an exclusive-create marker on file
systems without flock): the kernel releases it when its process dies, so a lock left by `kill -9` or a crash is
free for the next run, which says whose it was. Beside the lock a sidecar (`*.nift.lock.json`) names the holder —
pid, host, command, start time — so that a second process stops at once with a message naming them, or, with
`--wait-lock [SECONDS]` (the `NIFT_WAIT_LOCK` environment variable, inherited by launched workers), waits.

Within one process the lock is shared: the stages and the request engine may take the same lock again (eval's
generation and judging use one store) without blocking themselves.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nift.errors import NiftError

LOCK_SUFFIX = ".nift.lock"
HOLDER_SUFFIX = LOCK_SUFFIX + ".json"
WAIT_ENV = "NIFT_WAIT_LOCK"

_held: dict[str, list[Any]] = {}  # lock path -> [FileLock, depth], the locks this process holds
_guard = threading.Lock()


class LockHeld(NiftError):
    """Another process is writing the same stage directory or request store."""


def is_lock_file(name: str) -> bool:
    """Whether a file name is one of the lock's own files (never cleaned away, hashed or reported)."""
    return name.endswith((LOCK_SUFFIX, HOLDER_SUFFIX))


def lock_paths(target: str | Path, directory: bool) -> tuple[Path, Path]:
    """(lock file, holder sidecar) beside the directory or file they guard: a stage directory holds only what the
    stage wrote (the stage contract), so `run/prepare/` is guarded by `run/.prepare.nift.lock`. A linked directory
    (a sweep point's shared upstream stage) is guarded where it really is."""
    target = Path(target).resolve()
    if directory:
        hidden = "." + target.name
        return target.with_name(hidden + LOCK_SUFFIX), target.with_name(hidden + HOLDER_SUFFIX)
    return target.with_name(target.name + LOCK_SUFFIX), target.with_name(target.name + HOLDER_SUFFIX)


def wait_seconds() -> float:
    """How long to wait for a held lock: `NIFT_WAIT_LOCK` (seconds, `inf` or empty = forever); unset = not at all."""
    raw = os.environ.get(WAIT_ENV)
    if raw is None:
        return 0.0
    raw = raw.strip().lower()
    if raw in ("", "inf", "forever"):
        return math.inf
    try:
        return max(0.0, float(raw))
    except ValueError:
        raise NiftError(f"{WAIT_ENV}={raw!r}: expected a number of seconds or 'inf'") from None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def read_holder(sidecar: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else None


def _describe(holder: dict[str, Any] | None) -> str:
    if holder is None:
        return "another process (it has not written its name yet)"
    cmd = f", `{holder['command']}`" if holder.get("command") else ""
    return f"pid {holder['pid']} on host {holder.get('host', '?')} (since {holder.get('since', '?')}{cmd})"


def _gone(holder: dict[str, Any] | None) -> bool:
    return holder is not None and holder.get("host") == socket.gethostname() and not pid_alive(holder["pid"])


def _write_holder(sidecar: Path) -> None:
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
          "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300] if sys.argv else ""}
    tmp = sidecar.with_name(sidecar.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(me) + "\n", encoding="utf-8")
    os.replace(tmp, sidecar)


@contextlib.contextmanager
def writer_lock(target: str | Path, what: str, *, directory: bool, wait: float | None = None,
                log: Callable[[str], Any] = print) -> Iterator[None]:
    """Hold the writer lock of `target` (a directory or a file, locked from beside it).

    Raises `LockHeld` naming the holder's pid and host when another process holds it and `wait` (default: from
    `NIFT_WAIT_LOCK`, else 0) runs out. A lock whose holder died is taken over (the OS freed it), and said so."""
    from filelock import FileLock, Timeout

    lock_file, sidecar = lock_paths(target, directory)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    key = str(lock_file.resolve())
    with _guard:
        if key in _held:  # this process holds it already (a stage and its engine, eval's two request sets)
            _held[key][1] += 1
            mine = True
        else:
            mine = False
    if not mine:
        wait = wait_seconds() if wait is None else wait
        lock = FileLock(str(lock_file), timeout=-1 if math.isinf(wait) else wait, thread_local=False)
        announced = False
        deadline = time.monotonic() + wait
        while True:
            try:
                lock.acquire(timeout=0)
                break
            except Timeout:
                holder = read_holder(sidecar)
                if holder is None or _gone(holder):
                    # The holder is between taking the lock and naming itself; its name follows within moments.
                    time.sleep(0.05)
                    holder = read_holder(sidecar)
                if time.monotonic() >= deadline:
                    hint = "pass --wait-lock to wait for it" if wait == 0 else f"waited {wait:g} s"
                    raise LockHeld(
                        f"{what} ({target}) is being written by {_describe(holder)}: one writer at a time, or "
                        f"requests are paid twice. Let it finish or stop it, then run again ({hint}). "
                        f"Lock file: {lock_file}") from None
                if not announced:
                    log(f"[lock] {what} ({target}) is held by {_describe(holder)}; waiting"
                        + ("" if math.isinf(wait) else f" up to {wait:g} s"))
                    announced = True
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        previous = read_holder(sidecar)
        if previous is not None and previous.get("pid") != os.getpid():
            log(f"[lock] taking over the lock of {what} left by pid {previous['pid']} on host "
                f"{previous.get('host', '?')}, which no longer holds it (it stopped without releasing it)")
        try:
            _write_holder(sidecar)
        except BaseException:
            lock.release()
            raise
        with _guard:
            _held[key] = [lock, 1]
    try:
        yield
    finally:
        with _guard:
            entry = _held[key]
            entry[1] -= 1
            last = entry[1] == 0
            if last:
                del _held[key]
        if last:
            with contextlib.suppress(OSError):
                if (read_holder(sidecar) or {}).get("pid") == os.getpid():
                    sidecar.unlink()
            entry[0].release()
