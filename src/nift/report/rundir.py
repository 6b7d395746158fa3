"""What a run directory holds, read for the report: which stages finished, their manifests, data and evaluations.

Only a stage with a `manifest.json` counts as finished: a folder without one is an interrupted (or running) stage,
and its files are not trusted. Files are read as nift wrote them; a damaged file is an error naming file and line.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nift import io
from nift.artifacts import MANIFEST, sha256_file
from nift.errors import InputError
from nift.stages import NAMES

# The pipeline's stages in order, with the command that makes each (for "missing" notes).
PIPELINE = tuple(n for n in NAMES if n != "report")  # the stages a report reads
COMMANDS = {
    "prepare": "nift prepare --run-dir {run}",
    "distill": "nift distill --run-dir {run}",
    "audit": "nift audit --run-dir {run}",
    "train": "nift train --run-dir {run}",
    "merge": "nift merge --run-dir {run}",
    "eval": "nift eval --run-dir {run} --name {name} --model ...",
}


def read_json(path: Path) -> dict[str, Any]:
    try:
        return io.read_json(path)
    except InputError as e:
        raise InputError(f"{e}; re-run the stage that wrote it") from None


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    try:
        yield from io.read_jsonl(path)
    except InputError as e:
        raise InputError(f"{e}; re-run the stage that wrote it") from None
    except OSError as e:
        raise InputError(f"{path}: cannot be read ({e.strerror})") from None


@dataclass
class Stage:
    name: str  # prepare, ..., or eval/<name>
    dir: Path
    manifest: dict[str, Any] | None

    @property
    def done(self) -> bool:
        return self.manifest is not None

    @property
    def config(self) -> dict[str, Any]:
        return (self.manifest or {}).get("config", {})

    @property
    def stats(self) -> dict[str, Any]:
        return (self.manifest or {}).get("stats", {})

    @property
    def cost(self) -> dict[str, Any]:
        return (self.manifest or {}).get("cost", {})

    @property
    def timings(self) -> dict[str, Any]:
        return (self.manifest or {}).get("timings", {})


@dataclass
class RunDir:
    path: Path
    stages: dict[str, Stage] = field(default_factory=dict)  # finished or interrupted, by name
    evals: dict[str, Stage] = field(default_factory=dict)  # eval/<name>, by name

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        path = Path(path)
        if not path.is_dir():
            raise InputError(f"{path}: no such run directory (give the --run-dir of a run)")
        run = cls(path)
        for name in PIPELINE[:-1]:
            d = path / name
            if d.is_dir():
                run.stages[name] = Stage(name, d, _manifest(d))
        ev = path / "eval"
        if ev.is_dir():
            for d in sorted(ev.iterdir()):
                # an evaluation has a manifest (or an interrupted one its _started.json); comparison folders and the
                # engine's _cache have neither
                if d.is_dir() and not d.name.startswith("_") and (
                        (d / MANIFEST).is_file() or (d / "_started.json").is_file()):
                    run.evals[d.name] = Stage(f"eval/{d.name}", d, _manifest(d))
        return run

    def done(self, name: str) -> Stage | None:
        s = self.stages.get(name)
        return s if s is not None and s.done else None

    def order_evals(self, first: tuple[str, ...]) -> None:
        """Put the evaluations named in `first` (before, after) ahead of the others, which stay in name order."""
        names = [n for n in first if n in self.evals] + [n for n in self.evals if n not in first]
        self.evals = {n: self.evals[n] for n in names}

    def done_evals(self) -> dict[str, Stage]:
        return {k: v for k, v in self.evals.items() if v.done}

    def finished(self) -> list[Stage]:
        """Every finished stage, in pipeline order (evaluations last)."""
        return [s for s in self.stages.values() if s.done] + list(self.done_evals().values())

    def command(self, stage: str, name: str = "") -> str:
        return COMMANDS[stage].format(run=self.path, name=name or "NAME")

    def compare_dir(self, before: str, after: str) -> Path | None:
        """A comparison of eval/BEFORE with eval/AFTER that is up to date: `nift run`'s `eval/compare/` or the
        folder `nift compare` writes by default. Up to date: its `inputs.json` (nift run) names the current
        manifests of both, or without one, it was written after both."""
        ev = self.path / "eval"
        b, a = self.evals.get(before), self.evals.get(after)
        if b is None or a is None or not (b.done and a.done):
            return None
        for d in (ev / "compare", ev / f"compare-{before}-vs-{after}"):
            cmp = d / "compare.json"
            if not cmp.is_file():
                continue
            got = read_json(cmp)
            if (Path(str(got.get("a", ""))).name, Path(str(got.get("b", ""))).name) != (before, after):
                continue
            marker = d / "inputs.json"
            if marker.is_file():
                ident = read_json(marker)
                if ident.get("before") == sha256_file(b.dir / MANIFEST) and \
                        ident.get("after") == sha256_file(a.dir / MANIFEST):
                    return d
            elif cmp.stat().st_mtime >= max((b.dir / MANIFEST).stat().st_mtime, (a.dir / MANIFEST).stat().st_mtime):
                return d
        return None

    def compare_fingerprint(self, before: str, after: str) -> dict[str, str]:
        d = self.compare_dir(before, after)
        return {"compare": sha256_file(d / "compare.json")} if d else {}


def _manifest(d: Path) -> dict[str, Any] | None:
    p = d / MANIFEST
    return read_json(p) if p.is_file() else None
