"""`nift audit`: flag, judge, decontaminate and filter a training set (the paper's §6, Tables 8 and 9).

Run as: nift audit --run-dir runs/x                      # this run's distill output
        nift audit --input alpaca_data.json --run-dir runs/alpaca-audit --judge '{...}'

Three streaming passes over the input, memory bounded by a batch and the judge sample:

1. heuristics and decontamination on every row (batches of rows through the n-gram index), per-row results to a
   scratch file; the judge sample (k smallest seeded keys per dataset) is chosen on the way;
2. the sampled rows go to the judge in chunks through the distill engine (SQLite cache by request hash, retries,
   cost ledger): a crash or Ctrl-C loses no paid call, a re-run asks only what is missing;
3. judge labels are merged in, the drop policy decides, and `flags.jsonl` (every row), `data.jsonl` (kept rows in
   their input schema: for distill input exactly what `nift train` reads), `judge.jsonl` and `summary.md` are
   written; the manifest holds the Table-8 numbers, flag counts, contamination counts and drop counts.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from nift.artifacts import StageContext, atomic_open, read_manifest, run_stage
from nift.audit.benchmarks import load_benchmarks
from nift.audit.config import AuditConfig
from nift.audit.decontam import NgramIndex
from nift.audit.heuristics import Heuristics, LanguageDetector, majority_language
from nift.audit.judge import Sampler
from nift.audit.rows import AuditRow, Dataset, detect_format, first_row, iter_rows, sibling_prepare
from nift.audit.summary import DatasetTally, markdown
from nift.errors import InputError
from nift.io import RECORD_SUFFIXES, count_lines, expand, read_jsonl

OUTPUT = "data.jsonl"
FLAGS = "flags.jsonl"
JUDGE = "judge.jsonl"
SUMMARY = "summary.md"
CACHE = "judge_cache"  # folder of the engine's SQLite request store: survives config changes, never hashed
SCRATCH = "_pass1.jsonl"
BATCH = 256
LANGUAGE_SAMPLE = 200


# ----------------------------------------------------------------------------------------------- inputs


def resolve_datasets(cfg: AuditConfig, run_dir: Path, log: Callable[[str], None]) -> tuple[list[Dataset], dict]:
    """The datasets to audit and the upstream stage folders that are inputs of this stage."""
    if not cfg.input:
        distill = run_dir / "distill"
        prepare = run_dir / "prepare"
        for d in (prepare, distill):
            if not (d / "manifest.json").is_file():
                raise InputError(f"{d}/manifest.json is missing: run `nift {d.name}` first, or name the data to "
                                 "audit with --input")
        man = read_manifest(distill) or {}
        teacher = _teacher_name(man)
        name = cfg.dataset_names[0] if cfg.dataset_names else f"{teacher} continuous" if teacher else "distill"
        return [Dataset(name, str(distill / "data.jsonl"), "distill", str(prepare / "data.jsonl"))], {
            "prepare": prepare, "distill": distill}
    paths = [src.spec for src in expand(cfg.input, RECORD_SUFFIXES, skip_other_files=True)]
    if cfg.dataset_names and len(cfg.dataset_names) != len(paths):
        raise InputError(f"dataset_names has {len(cfg.dataset_names)} names for {len(paths)} inputs "
                         f"({', '.join(paths)}): give one name per input file")
    out: list[Dataset] = []
    for i, path in enumerate(paths):
        fmt = cfg.format
        if fmt == "auto":
            fmt = detect_format(first_row(path), cfg.text_field, path)
            log(f"[audit] {path}: format {fmt} (from its fields; set --format to override)")
        prepare = sibling_prepare(path) if fmt == "distill" and not path.startswith("hf:") else None
        name = cfg.dataset_names[i] if cfg.dataset_names else _default_name(path, fmt)
        out.append(Dataset(name, path, fmt, prepare))
    names = [d.name for d in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"two inputs share the dataset name {dup[0]!r}: give dataset_names, one per input")
    return out, {}


def _teacher_name(manifest: dict[str, Any]) -> str | None:
    cfg = manifest.get("config") or {}
    for key in ("teacher", "backend"):
        t = cfg.get(key)
        if isinstance(t, dict) and t.get("model"):
            return str(t["model"])
    return None


def _default_name(path: str, fmt: str) -> str:
    p = Path(path.removeprefix("hf:"))
    if p.name in ("data.jsonl",) and p.parent.name in ("distill", "prepare"):
        return f"{p.parent.parent.name}/{p.parent.name}"  # runs/x/distill/data.jsonl -> x/distill
    return p.stem if not path.startswith("hf:") else path


def _fingerprint(datasets: list[Dataset], bench_info: dict[str, Any]) -> str:
    """What the stage contract cannot see: the contents of user-named files and of the benchmark prompts."""
    h = hashlib.sha256()
    for d in datasets:
        for p in (d.path, d.prepare):
            if p and not p.startswith("hf:"):
                st = os.stat(p)
                h.update(f"{p}\x00{st.st_size}\x00{st.st_mtime_ns}\x00".encode())
            elif p:
                h.update(p.encode())
    h.update(json.dumps(bench_info, sort_keys=True).encode())
    return h.hexdigest()


# -------------------------------------------------------------------------------------------------- run


def run(cfg: AuditConfig, run_dir: str | Path, force: bool = False, log: Callable[[str], None] = print):
    """Run the audit stage into `run_dir/audit/`."""
    run_dir = Path(run_dir)
    stage_dir = run_dir / "audit"
    datasets, upstream = resolve_datasets(cfg, run_dir, log)
    bench_prompts, bench_info = load_benchmarks(cfg.benchmarks, cfg.benchmark_dir, log) if cfg.benchmarks else ([], {})
    judge = _make_judge(cfg, stage_dir, log)
    fingerprint = _fingerprint(datasets, bench_info)
    old = read_manifest(stage_dir)
    if old and old.get("stats", {}).get("input_fingerprint") != fingerprint:
        force = True  # a user file or the benchmark set changed under the same config

    def body(ctx: StageContext) -> None:
        _audit(ctx, cfg, datasets, bench_prompts, bench_info, judge, fingerprint, log)

    result = run_stage("audit", stage_dir, cfg, body, inputs=upstream, keep=[CACHE], exclude_from_hash=[CACHE],
                       force=force, log=log)
    if not result.skipped:
        log((stage_dir / SUMMARY).read_text(encoding="utf-8").rstrip())
        s = result.manifest["stats"]
        log(f"[audit] {s['rows']} rows: {s['kept']} kept in {stage_dir / OUTPUT}, {s['dropped']} dropped; "
            f"per-row flags in {stage_dir / FLAGS}")
    return result


def _make_judge(cfg: AuditConfig, stage_dir: Path, log: Callable[[str], None]):
    spec = getattr(cfg, "judge", None)
    if spec is None or not cfg.judge_prompts:
        return None
    from nift.audit.judging import Judge

    return Judge(cfg, stage_dir / CACHE, log)


def _progress(total: int | None, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="row", desc=desc, mininterval=0.5)


def _batches(rows: Iterator[AuditRow], n: int) -> Iterator[list[AuditRow]]:
    batch: list[AuditRow] = []
    for r in rows:
        batch.append(r)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


# ------------------------------------------------------------------------------------------ pass 1 workers

_WORKER: dict[str, Any] = {}


def _init_worker(heur: Heuristics, index: NgramIndex | None) -> None:
    _WORKER["heur"], _WORKER["index"] = heur, index


def flag_batch(items: list[tuple[str | None, str, str | None, str | None]]) -> list[dict[str, Any]]:
    """Heuristics and decontamination for (prompt, completion, reference, finish_reason) tuples."""
    heur: Heuristics = _WORKER["heur"]
    index: NgramIndex | None = _WORKER["index"]
    hits = index.scan([(p, c) for p, c, _, _ in items]) if index is not None else {}
    out = []
    for i, (p, c, ref, fr) in enumerate(items):
        found: dict[str, Any] = heur.check(p, c, ref, fr)
        if i in hits:
            found["contaminated"] = [h.as_dict() for h in hits[i]]
        out.append(found)
    return out


class Flagger:
    """Runs `flag_batch` in order over a stream of batches: in this process, or in forked workers with a bounded
    number of batches in flight (memory stays bounded; results come back in input order)."""

    def __init__(self, heur: Heuristics, index: NgramIndex | None, workers: int):
        self.workers = workers if workers > 0 else min(os.cpu_count() or 1, 8)
        if heur.language:
            heur.detector.detect("warm up")  # load the model once, before forking: workers inherit it
        _init_worker(heur, index)
        self.heur, self.index, self.pool = heur, index, None

    def __enter__(self) -> Flagger:
        if self.workers > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self.pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("fork"),
                                            initializer=_init_worker, initargs=(self.heur, self.index))
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    @staticmethod
    def _items(batch: list[AuditRow]) -> list[tuple[str | None, str, str | None, str | None]]:
        return [(r.prompt, r.completion, r.reference, r.finish_reason) for r in batch]

    def map(self, batches: Iterator[list[AuditRow]]) -> Iterator[tuple[list[AuditRow], list[dict[str, Any]]]]:
        if self.pool is None:
            for batch in batches:
                yield batch, flag_batch(self._items(batch))
            return
        from collections import deque

        window: deque = deque()
        for batch in batches:
            window.append((batch, self.pool.submit(flag_batch, self._items(batch))))
            if len(window) >= 2 * self.workers:
                b, fut = window.popleft()
                yield b, fut.result()
        while window:
            b, fut = window.popleft()
            yield b, fut.result()


def _audit(ctx: StageContext, cfg: AuditConfig, datasets: list[Dataset], bench_prompts, bench_info, judge,
           fingerprint: str, log: Callable[[str], None]) -> None:
    detector = LanguageDetector()
    language = cfg.language
    if language == "auto":
        texts = []
        for r in iter_rows(datasets[0], cfg.text_field, "skip", Counter()):
            texts.append(r.prompt or r.completion)
            if len(texts) >= LANGUAGE_SAMPLE:
                break
        language = majority_language(texts, detector, cfg.language_min_chars)
        log(f"[audit] corpus language: {language or 'undetermined (language check off)'} "
            f"(majority of the first {len(texts)} prompts of {datasets[0].name})")
    heur = Heuristics(cfg.preamble_patterns, cfg.refusal_patterns, cfg.echo_words, language,
                      cfg.language_min_confidence, cfg.language_min_chars, detector)
    index = NgramIndex(bench_prompts, cfg.ngram, cfg.short_prompt_min_words) if bench_prompts else None
    kinds = list(cfg.judge_prompts) if judge is not None else []

    tallies = [DatasetTally(d.name, d.format, d.path) for d in datasets]
    skipped: Counter = Counter()
    samplers = [Sampler(cfg.judge_sample, cfg.seed) for _ in datasets]

    # pass 1: heuristics + decontamination, streaming (in worker processes when there are cores for them)
    flagger = Flagger(heur, index, cfg.workers)
    with ctx.timed("flags_s"), flagger, atomic_open(ctx.path(SCRATCH)) as scratch:
        for d, tally, sampler in zip(datasets, tallies, samplers, strict=True):
            total = count_lines(d.path) if d.path.endswith((".jsonl", ".ndjson")) else None
            bar = _progress(total, f"audit {d.name}", cfg.progress)
            batches = _batches(iter_rows(d, cfg.text_field, cfg.on_bad_row, skipped), BATCH)
            for batch, found_all in flagger.map(batches):
                for r, found in zip(batch, found_all, strict=True):
                    for b in {h["benchmark"] for h in found.get("contaminated", ())}:
                        tally.contaminated_by[b] += 1
                    tally.rows += 1
                    tally.flags.update(found.keys())
                    sampler.offer(r.id)
                    scratch.write(json.dumps({"id": r.id, "details": found, "row": r.original},
                                             ensure_ascii=False) + "\n")
                if bar is not None:
                    bar.update(len(batch))
            if bar is not None:
                bar.close()
            if tally.rows == 0:
                raise InputError(f"{d.path}: no usable row (skipped: {dict(skipped) or 'none'})")

    # pass 2: the judge, on the sample, through the distill engine's cache and ledger
    labels: list[dict[str, dict[str, bool | None]]] = [{} for _ in datasets]
    if judge is not None:
        with ctx.timed("judge_s"), atomic_open(ctx.path(JUDGE)) as jf:
            for di, (d, tally, sampler) in enumerate(zip(datasets, tallies, samplers, strict=True)):
                chosen = sampler.chosen()
                rows = (r for r in iter_rows(d, cfg.text_field, "skip", Counter())
                        if chosen is None or r.id in chosen)
                for batch in _batches(rows, judge.chunk):
                    for rec in judge.classify(batch, kinds, desc=f"judge {d.name}"):
                        jf.write(json.dumps({"dataset": d.name, **rec}, ensure_ascii=False) + "\n")
                        kind = rec["prompt"]
                        labels[di].setdefault(rec["id"], {})[kind] = rec["label"]
                        tally.judged[kind] += 1
                        tally.parse_how.setdefault(kind, Counter())[rec["parse"]] += 1
                        if rec["label"] is not None:
                            tally.parsed[kind] += 1
                            tally.yes[kind] += rec["label"]
        ctx.cost.update(judge.ledger())

    # pass 3: merge, drop policy, outputs
    drop = list(cfg.drop)
    with ctx.timed("write_s"), atomic_open(ctx.path(FLAGS)) as ff, atomic_open(ctx.path(OUTPUT)) as df:
        scratch_rows = read_jsonl(ctx.path(SCRATCH))
        for di, tally in enumerate(tallies):
            for _ in range(tally.rows):
                rec = next(scratch_rows)
                details = rec["details"]
                judged = labels[di].get(rec["id"])
                if judged:
                    for kind, label in judged.items():
                        if label:
                            tally.flags[kind] += 1
                            details[kind] = {"judge": True}
                flags = [f for f in details]
                hit = [f for f in drop if f in details]
                kept = not hit
                if kept:
                    tally.kept += 1
                    df.write(json.dumps(rec["row"], ensure_ascii=False) + "\n")
                else:
                    tally.dropped += 1
                    tally.dropped_first[hit[0]] += 1
                    tally.dropped_by_flag.update(hit)
                out = {"id": rec["id"], "dataset": tally.name, "flags": flags, "kept": kept, "dropped_by": hit,
                       "details": details}
                if judged is not None:
                    out["judge"] = judged
                ff.write(json.dumps(out, ensure_ascii=False) + "\n")
    ctx.path(SCRATCH).unlink()

    rows = sum(t.rows for t in tallies)
    kept = sum(t.kept for t in tallies)
    dropped = sum(t.dropped for t in tallies)
    assert kept + dropped == rows and all(sum(t.dropped_first.values()) == t.dropped for t in tallies)
    extra = {"benchmarks": bench_info, "ngram": cfg.ngram, "judge": judge.describe() if judge else None}
    with atomic_open(ctx.path(SUMMARY)) as f:
        f.write(markdown(tallies, kinds, drop, extra))
    ctx.stats.update({
        "rows": rows, "kept": kept, "dropped": dropped, "skipped": dict(skipped),
        "language": language, "drop": drop,
        "datasets": {t.name: t.as_dict(kinds) for t in tallies},
        "table8": {t.name: {k: t.judge_pct(k)["percent"] for k in kinds} for t in tallies} if kinds else None,
        "judge": extra["judge"],
        "decontamination": {"benchmarks": bench_info, **(index.stats() if index else {})},
        "input_fingerprint": fingerprint,
    })
