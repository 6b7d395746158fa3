"""The stage contract: files plus a `manifest.json` written last.

Each stage writes into `run_dir/<stage>/` and, last, `manifest.json` (stage, nift version, resolved config without
secrets, config hash, input manifest hashes, row counts, file hashes, timings, stats). A stage is

- **skipped** when its manifest matches its config hash and input manifests,
- **re-run from scratch** when either changed (files named in `keep` survive, e.g. a request cache),
- **resumed** when the manifest is missing but the `_started.json` marker matches (work already on disk is kept).

All JSONL/JSON writes are atomic: written to a temporary file, fsync'd, renamed. Reading (inputs, JSONL, JSON)
is `nift.io`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from nift import __version__
from nift.config import StageConfig, redact, scrub_values
from nift.errors import BadRow
from nift.io import count_lines, parse_json_line
from nift.locks import is_lock_file, writer_lock

MANIFEST = "manifest.json"
STARTED = "_started.json"


# ------------------------------------------------------------------------------------------- atomic writes


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open `path.tmp` for writing; on success fsync and rename it over `path`; on error remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    kwargs = {} if "b" in mode else {"encoding": "utf-8", "newline": "\n"}
    f = open(tmp, mode, **kwargs)  # noqa: SIM115 - closed below on every path
    try:
        yield f
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        # Closing flushes the buffer, which fails again on a full disk (ENOSPC): the temp file must go regardless,
        # or it stays behind and the re-run meets the same full disk.
        with contextlib.suppress(OSError):
            f.close()
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically, every string scrubbed of credentials (URL userinfo, secret URL parameters, API key
    values): manifests, results.json and every other JSON nift writes pass here."""
    obj = scrub_values(json.loads(json.dumps(obj, default=str)))
    with atomic_open(path) as f:
        json.dump(obj, f, indent=2, ensure_ascii=False, default=str)
        f.write("\n")


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows atomically; returns the row count."""
    n = 0
    with atomic_open(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# -------------------------------------------------------------------------------------------------- stages


def read_manifest(stage_dir: str | Path) -> dict[str, Any] | None:
    p = Path(stage_dir) / MANIFEST
    if not p.is_file():
        return None
    try:
        return parse_json_line(p.read_bytes(), str(p))
    except BadRow:  # a manifest cut short or damaged: the stage is incomplete and runs again
        return None


def manifest_hash(stage_dir: str | Path) -> str:
    """Hash of an upstream stage's manifest: what a downstream stage records as its input."""
    p = Path(stage_dir) / MANIFEST
    if not p.is_file():
        from nift.errors import InputError

        raise InputError(f"{p} is missing: run the stage that writes {Path(stage_dir).name}/ first")
    return sha256_file(p)


@dataclass
class StageContext:
    """What a stage body gets: its directory, its config, and places to record stats and timings."""

    dir: Path
    config: StageConfig
    resumed: bool
    stats: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    cost: dict[str, Any] = field(default_factory=dict)

    def path(self, name: str) -> Path:
        return self.dir / name

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t0, 3)


@dataclass
class StageResult:
    manifest: dict[str, Any]
    skipped: bool
    dir: Path


def _hash_files(stage_dir: Path, exclude: set[str]) -> tuple[dict[str, Any], dict[str, int]]:
    files: dict[str, Any] = {}
    rows: dict[str, int] = {}
    for p in sorted(stage_dir.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(stage_dir).as_posix()
        top = rel.split("/", 1)[0]
        if rel in (MANIFEST, STARTED) or top in exclude or rel in exclude or ".tmp" in p.name or is_lock_file(p.name):
            continue
        files[rel] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        if p.suffix == ".jsonl":
            rows[rel] = count_lines(p)
    return files, rows


def stage_identity(
    stage: str, config: StageConfig, inputs: dict[str, str | Path] | None = None,
    fingerprints: dict[str, str] | None = None,
) -> dict[str, Any]:
    """What a stage's output depends on: its config hash, upstream manifests and fingerprints of outside inputs
    (model folders, adapters given by path) that no upstream manifest covers."""
    input_hashes = {name: manifest_hash(d) for name, d in (inputs or {}).items()}
    input_hashes.update(fingerprints or {})
    return {"stage": stage, "config_hash": config.config_hash(), "inputs": input_hashes}


def up_to_date(stage_dir: str | Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The stage's manifest if it matches `identity` and every file it lists is still there, else None.

    Stages with expensive pre-checks call this first so that an up-to-date re-run returns at once."""
    stage_dir = Path(stage_dir)
    old = read_manifest(stage_dir)
    if old and all(old.get(k) == v for k, v in identity.items()) and all(
        (stage_dir / rel).is_file() for rel in old.get("files", {})
    ):
        return old
    return None


def run_stage(
    stage: str,
    stage_dir: str | Path,
    config: StageConfig,
    body: Callable[[StageContext], None],
    inputs: dict[str, str | Path] | None = None,
    keep: Iterable[str] = (),
    exclude_from_hash: Iterable[str] = (),
    force: bool = False,
    log: Callable[[str], None] = print,
    fingerprints: dict[str, str] | None = None,
) -> StageResult:
    """Run `body` under the stage contract.

    inputs: upstream stage directories by name; their manifest hashes become part of the identity of this run.
    keep: files or folders in the stage dir that survive a config change (caches keyed by request hash).
    exclude_from_hash: files or folders not hashed into the manifest (caches, checkpoints).
    fingerprints: name -> fingerprint of inputs outside the run dir (e.g. a model folder), also part of the identity.

    The stage directory is locked for the whole call (`nift.locks`): a second process on it stops at once, naming
    the holder, instead of repeating (and paying for) the same work.
    """
    stage_dir = Path(stage_dir)
    with writer_lock(stage_dir, f"the {stage} stage", directory=True, log=log):
        return _run_stage_locked(stage, stage_dir, config, body, inputs, keep, exclude_from_hash, force, log,
                                 fingerprints)


def _run_stage_locked(
    stage: str, stage_dir: Path, config: StageConfig, body: Callable[[StageContext], None],
    inputs: dict[str, str | Path] | None, keep: Iterable[str], exclude_from_hash: Iterable[str], force: bool,
    log: Callable[[str], None], fingerprints: dict[str, str] | None,
) -> StageResult:
    identity = stage_identity(stage, config, inputs, fingerprints)
    input_hashes = identity["inputs"]

    old = read_manifest(stage_dir)
    if not force and (current := up_to_date(stage_dir, identity)) is not None:
        log(f"[{stage}] up to date, skipped ({stage_dir})")
        return StageResult(current, True, stage_dir)

    started = stage_dir / STARTED
    resumed = False
    if started.is_file() and not force and old is None:
        try:
            resumed = json.loads(started.read_text(encoding="utf-8")) == identity
        except json.JSONDecodeError:
            resumed = False
    if stage_dir.exists() and not resumed:
        keep_set = set(keep)
        for p in stage_dir.iterdir():
            if p.name in keep_set or is_lock_file(p.name):
                continue
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    stage_dir.mkdir(parents=True, exist_ok=True)
    (stage_dir / MANIFEST).unlink(missing_ok=True)
    write_json(started, identity)
    if resumed:
        log(f"[{stage}] resuming an interrupted run in {stage_dir}")

    ctx = StageContext(dir=stage_dir, config=config, resumed=resumed)
    t0 = time.time()
    body(ctx)
    t1 = time.time()

    files, rows = _hash_files(stage_dir, set(exclude_from_hash) | set(keep))
    manifest = {
        "stage": stage,
        "nift_version": __version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": redact(config.model_dump(mode="json")),
        "config_hash": identity["config_hash"],
        "inputs": input_hashes,
        "rows": rows,
        "files": files,
        "timings": {"started": datetime.fromtimestamp(t0, timezone.utc).isoformat(timespec="seconds"),
                    "seconds": round(t1 - t0, 3), **ctx.timings},
        "stats": ctx.stats,
    }
    if ctx.cost:
        manifest["cost"] = ctx.cost
    write_json(stage_dir / MANIFEST, manifest)  # last: the completion marker
    started.unlink(missing_ok=True)
    return StageResult(manifest, False, stage_dir)
