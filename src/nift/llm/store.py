"""The durable request store: one SQLite file in WAL mode, one row per completed request, committed the moment the
result arrives (synchronous=FULL, so a result survives `kill -9` and power loss once `put` returns).

Rows are keyed by `request_key(...)`: a hash of what determines the answer (backend family, model, the exact
messages or prompt, the generation parameters), never of the caller's id, so identical requests are paid once and
any stage that asks again gets the stored answer. Batch jobs submitted to a provider are recorded here too (intent
first, then the provider's batch id), so a crash between submit and download resumes from the stored batch.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from nift.config import hash_obj
from nift.errors import InputError, NiftError
from nift.io import read_jsonl
from nift.llm.types import Result
from nift.locks import writer_lock

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    result TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    local_id TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    batch_id TEXT,
    state TEXT NOT NULL,          -- submitting | submitted | done | failed
    keys TEXT NOT NULL,           -- JSON list of request keys in this batch
    info TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
-- Requests on the wire: written before a request leaves, removed when its answer is stored or the server refused
-- it. A row left behind by a process that died (kill -9, Ctrl-C, a crash) is work the server may have done and
-- billed: the next run (which holds the store's lock, so that process is gone) moves it to `lost`.
CREATE TABLE IF NOT EXISTS in_flight (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    sent_at REAL NOT NULL,
    max_cost_usd REAL             -- prompt tokens + max_tokens at the price; NULL when the model has no price
);
CREATE TABLE IF NOT EXISTS lost (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    sent_at REAL NOT NULL,
    max_cost_usd REAL,
    reason TEXT NOT NULL
);
"""


class StoreFull(NiftError):
    """The store cannot be written (a full or read-only disk): the answers already delivered are saved aside."""


def request_key(family: str, model: str, payload: dict[str, Any]) -> str:
    """The cache key of a request: sha256 over (backend family, model, canonical payload)."""
    return hash_obj({"backend": family, "model": model, "request": payload})


class Store:
    """A SQLite request store safe to share between threads of one process and between processes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # Answers SQLite could not take (a full disk) go here, beside the store, until the next run reads them back.
        self.unsaved_path = self.path.with_name(self.path.name + ".unsaved.jsonl")
        self.failure: sqlite3.OperationalError | None = None
        self.saved_to: Path | None = None
        self.unsaved = self.held = 0
        self._db = sqlite3.connect(str(self.path), timeout=60, check_same_thread=False, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            self._db.close()
            if isinstance(e, sqlite3.OperationalError):  # full, read-only, locked: the environment, not the file
                raise
            raise InputError(
                f"{self.path}: the request store is damaged ({e}). Move it aside and run again (its answers are "
                f"asked for again); `sqlite3 {self.path} .recover` may save what it holds") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------------------------------------- results

    def get_many(self, keys: list[str]) -> dict[str, Result]:
        out: dict[str, Result] = {}
        with self._lock:
            for i in range(0, len(keys), 500):
                chunk = keys[i:i + 500]
                marks = ",".join("?" * len(chunk))
                for key, blob in self._db.execute(f"SELECT key, result FROM results WHERE key IN ({marks})", chunk):
                    out[key] = Result.from_json(json.loads(blob), cached=True)
        return out

    def put(self, key: str, backend: str, model: str, result: Result, attempt: int | None = None) -> None:
        """Store one result durably (and settle the attempt that brought it); returns once it is on disk."""
        self.put_many([(key, backend, model, result)], attempts=[attempt])

    def put_many(self, rows: list[tuple[str, str, str, Result]], attempts: list[int | None] | None = None) -> None:
        """Store several results in one transaction (a local chunk, a batch download); returns once on disk.

        When SQLite cannot write (a full disk: 'database or disk is full'; a read-only one), the answers, already
        paid for, are appended to `unsaved_path` beside the store and `StoreFull` says how many and where; from then
        on every answer goes there. The next run reads them back (`read_back_unsaved`) instead of asking again."""
        entries = [{"key": k, "backend": b, "model": m, "result": json.dumps(r.to_json(), ensure_ascii=False),
                    "attempt": a} for (k, b, m, r), a in zip(rows, attempts or [None] * len(rows), strict=True)]
        if not entries:
            return
        with self._lock:
            if self.failure is None:
                try:
                    self._insert(entries)
                    return
                except sqlite3.OperationalError as e:
                    self.failure = e
            self._save_aside(entries)
        raise StoreFull(self.failure_message())

    def _insert(self, entries: list[dict[str, Any]]) -> None:
        self._db.execute("BEGIN")
        try:
            self._db.executemany(
                "INSERT OR REPLACE INTO results (key, backend, model, result, created_at) VALUES (?, ?, ?, ?, ?)",
                [(e["key"], e["backend"], e["model"], e["result"], time.time()) for e in entries])
            self._db.executemany("DELETE FROM in_flight WHERE id = ?",
                                 [(e["attempt"],) for e in entries if e["attempt"] is not None])
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _save_aside(self, entries: list[dict[str, Any]]) -> None:
        """Append answers SQLite could not take to the fallback file (a JSON line is far smaller than a SQLite
        transaction with its journal); failing that, a file in the temp directory; failing both, they are only in
        memory and the error says so."""
        lines = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries)
        for path in (self.unsaved_path, Path(tempfile.gettempdir()) / f"nift-{self.unsaved_path.name}"):
            if self.saved_to not in (None, path):
                continue
            try:
                with open(path, "a", encoding="utf-8") as f:
                    f.write(lines)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError:
                continue
            self.saved_to = path
            self.unsaved += len(entries)
            return
        self.held += len(entries)

    def failure_message(self) -> str:
        s = f"the request store {self.path} cannot be written (SQLite: {self.failure}): "
        if self.unsaved:
            s += f"{self.unsaved} answer(s) already delivered were saved to {self.saved_to}"
            if self.saved_to != self.unsaved_path:
                s += f" (move that file to {self.unsaved_path})"
            s += "; "
        if self.held:
            s += (f"{self.held} answer(s) already delivered could not be saved anywhere (no space left for "
                  f"{self.unsaved_path} either) and will be asked for again; ")
        return s + ("free some space or choose another --run-dir, then run the same command again: saved answers "
                    "are read back into the store, not asked for again")

    def read_back_unsaved(self) -> int:
        """Move answers an earlier run saved aside into the store (call while holding the store's lock); returns
        how many. Their attempts are settled, so they are not counted as lost in transit."""
        if not self.unsaved_path.is_file():
            return 0
        entries = list(read_jsonl(self.unsaved_path))
        with self._lock:
            self._insert(entries)
        os.unlink(self.unsaved_path)
        return len(entries)

    # -------------------------------------------------------------------------------------- requests in transit

    def begin_attempt(self, key: str, max_cost_usd: float | None) -> int:
        """Record a request about to leave (durably, before it does); returns the attempt's id. A store that cannot
        be written raises `StoreFull`: no request leaves whose answer could not be kept."""
        with self._lock:
            if self.failure is None:
                try:
                    return self._db.execute("INSERT INTO in_flight (key, sent_at, max_cost_usd) VALUES (?, ?, ?)",
                                            (key, time.time(), max_cost_usd)).lastrowid
                except sqlite3.OperationalError as e:
                    self.failure = e
        raise StoreFull(self.failure_message())

    def end_attempt(self, attempt: int) -> None:
        """The server refused the request (429, a 4xx): no work done, nothing to count."""
        with self._lock:
            self._db.execute("DELETE FROM in_flight WHERE id = ?", (attempt,))

    def lose_attempt(self, attempt: int, reason: str) -> None:
        """No usable answer came back (timeout, dropped connection, garbled reply, 5xx): possibly paid."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.execute("INSERT INTO lost (id, key, sent_at, max_cost_usd, reason) SELECT id, key, "
                                 "sent_at, max_cost_usd, ? FROM in_flight WHERE id = ?", (reason, attempt))
                self._db.execute("DELETE FROM in_flight WHERE id = ?", (attempt,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def recover_in_flight(self) -> int:
        """Move the requests an earlier process left on the wire to `lost`; call only while holding the store's
        lock (then that process is gone). Returns how many."""
        reason = "in flight when an earlier process stopped"
        with self._lock:
            self._db.execute("BEGIN")
            try:
                n = self._db.execute("INSERT INTO lost (id, key, sent_at, max_cost_usd, reason) SELECT id, key, "
                                     "sent_at, max_cost_usd, ? FROM in_flight", (reason,)).rowcount
                self._db.execute("DELETE FROM in_flight")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return n

    def lost_for(self, keys: list[str]) -> tuple[int, float, int]:
        """(requests lost in transit, their most possible cost, how many of them have no price) for these keys."""
        n, usd, unpriced = 0, 0.0, 0
        with self._lock:
            for i in range(0, len(keys), 500):
                chunk = keys[i:i + 500]
                marks = ",".join("?" * len(chunk))
                a, b, c = self._db.execute(
                    f"SELECT COUNT(*), COALESCE(SUM(max_cost_usd), 0), SUM(max_cost_usd IS NULL) FROM lost "
                    f"WHERE key IN ({marks})", chunk).fetchone()
                n, usd, unpriced = n + a, usd + b, unpriced + (c or 0)
        return n, usd, unpriced

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    # ---------------------------------------------------------------------------------------------- batches

    def batch_intent(self, local_id: str, backend: str, model: str, keys: list[str], info: dict[str, Any]) -> None:
        """Record a batch before it is submitted, so a crash during submission can find it on the provider."""
        now = time.time()
        with self._lock:
            self._db.execute("INSERT INTO batches (local_id, backend, model, batch_id, state, keys, info, created_at, "
                             "updated_at) VALUES (?, ?, ?, NULL, 'submitting', ?, ?, ?, ?)",
                             (local_id, backend, model, json.dumps(keys), json.dumps(info), now, now))

    def batch_update(self, local_id: str, *, batch_id: str | None = None, state: str | None = None,
                     info: dict[str, Any] | None = None) -> None:
        sets, vals = ["updated_at = ?"], [time.time()]
        if batch_id is not None:
            sets.append("batch_id = ?")
            vals.append(batch_id)
        if state is not None:
            sets.append("state = ?")
            vals.append(state)
        if info is not None:
            sets.append("info = ?")
            vals.append(json.dumps(info))
        with self._lock:
            self._db.execute(f"UPDATE batches SET {', '.join(sets)} WHERE local_id = ?", (*vals, local_id))

    def open_batches(self, backend: str) -> list[dict[str, Any]]:
        """Batches of this backend not yet downloaded (states submitting and submitted)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT local_id, backend, model, batch_id, state, keys, info, created_at FROM batches "
                "WHERE backend = ? AND state IN ('submitting', 'submitted') ORDER BY created_at", (backend,),
            ).fetchall()
        return [{"local_id": r[0], "backend": r[1], "model": r[2], "batch_id": r[3], "state": r[4],
                 "keys": json.loads(r[5]), "info": json.loads(r[6]), "created_at": r[7]} for r in rows]

    def all_batches(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT local_id, backend, batch_id, state, keys, info FROM batches "
                                    "ORDER BY created_at").fetchall()
        return [{"local_id": r[0], "backend": r[1], "batch_id": r[2], "state": r[3], "n": len(json.loads(r[4])),
                 "info": json.loads(r[5])} for r in rows]


# ------------------------------------------------------------------------------------------------ several stores


def _check_store(path: Path) -> None:
    if not path.is_file():
        raise InputError(f"{path}: no such request store")
    try:
        with closing(sqlite3.connect(str(path))) as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as e:
        raise InputError(f"{path}: not a SQLite file ({e})") from None
    if "results" not in tables:
        raise InputError(f"{path}: not a nift request store (it has no results table)")


def merge_stores(target: str | Path, sources: list[str | Path]) -> list[dict[str, Any]]:
    """Copy every result (and batch record) of `sources` into `target`, never replacing one already there: how the
    stores of machines that distilled different shards become one. Returns per source what was added."""
    target = Path(target)
    report = []
    with writer_lock(target, "the request store", directory=False), Store(target) as store:
        for src in map(Path, sources):
            _check_store(src)
            if src.resolve() == target.resolve():
                raise InputError(f"{src}: is the target store itself")
            with store._lock:
                db = store._db
                db.execute("ATTACH DATABASE ? AS src", (str(src),))
                try:
                    db.execute("BEGIN")
                    n_src = db.execute("SELECT COUNT(*) FROM src.results").fetchone()[0]
                    added = db.execute("INSERT OR IGNORE INTO results (key, backend, model, result, created_at) "
                                       "SELECT key, backend, model, result, created_at FROM src.results").rowcount
                    has_batches = db.execute("SELECT COUNT(*) FROM src.sqlite_master WHERE type = 'table' AND "
                                             "name = 'batches'").fetchone()[0]
                    batches = db.execute("INSERT OR IGNORE INTO batches SELECT * FROM src.batches").rowcount \
                        if has_batches else 0
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                finally:
                    db.execute("DETACH DATABASE src")
            report.append({"source": str(src), "results": n_src, "added": added, "already_there": n_src - added,
                           "batches_added": batches})
    return report


def describe_store(path: str | Path) -> dict[str, Any]:
    """Results per backend and model, and batch records per state (for `nift cache info`)."""
    path = Path(path)
    _check_store(path)
    with closing(sqlite3.connect(str(path))) as db:
        models = [{"backend": b, "model": m, "results": n} for b, m, n in db.execute(
            "SELECT backend, model, COUNT(*) FROM results GROUP BY backend, model ORDER BY backend, model")]
        batches = dict(db.execute("SELECT state, COUNT(*) FROM batches GROUP BY state").fetchall()) \
            if db.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'batches'").fetchone()[0] else {}
    return {"path": str(path), "results": sum(m["results"] for m in models), "by_model": models,
            "batches": batches}
