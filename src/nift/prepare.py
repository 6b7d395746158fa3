"""`nift prepare`: sample documents from a corpus and cut each into prompt + reference (the paper's §3).

Run as: nift prepare --input corpus.jsonl --n-docs 80000 --run-dir runs/x

Sampling is one streaming pass with memory bounded by the sample size: every document gets a key derived from
(seed, content hash), and the N documents with the smallest keys form a uniform sample without replacement of the
*distinct* documents (equal texts get equal keys, so exact duplicates are dropped without a global hash set).
For seekable sources only (key, location) is kept and the chosen texts are read back afterwards. Because keys do
not depend on file order and the output is in key order, the first n rows of an N-sample are themselves the
n-sample with the same seed — data-size sweeps get nested subsets for free.

The cut: W = number of whitespace-separated words; k uniform in [ceil(cut_low W), floor(cut_high W)]; the prompt
is the text up to the end of word k, with its original whitespace; the reference is the rest, so that
prompt + reference == text, byte for byte.

`PrepareConfig`, the stage's settings, sits here too.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import json
import random
from collections import Counter
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from nift.artifacts import StageContext, atomic_open, run_stage
from nift.config import StageConfig, volatile
from nift.corpus import Location, Reader, ReadStats, expand_inputs, iter_documents
from nift.errors import InputError

OUTPUT = "data.jsonl"


class PrepareConfig(StageConfig):
    """`nift prepare`: sample documents from a corpus and cut each one into prompt + reference."""

    stage: ClassVar[str] = "prepare"

    input: list[str] = Field(
        default_factory=lambda: ["builtin:lee"],
        description="Corpus: JSONL / Parquet / .txt files, directories, globs, a Hugging Face `datasets` id "
        "(hf:NAME[:CONFIG][@SPLIT], needs the network) or a packaged corpus (builtin:lee: 299 ABC news articles).",
    )
    text_field: str = Field("text", description="Field that holds the document text in JSONL and Parquet inputs.")
    n_docs: int | None = Field(
        80_000, ge=1, description="Documents to sample uniformly without replacement (the paper: 80,000); "
        "null = all documents.",
    )
    seed: int = Field(0, description="Seed for the sample and the cut points; same seed, same output.")
    min_words: int = Field(
        8, ge=2, description="Documents with fewer whitespace-separated words are skipped (and counted).",
    )
    cut_low: float = Field(0.25, gt=0, lt=1, description="Lower bound of the cut, as a fraction of the words.")
    cut_high: float = Field(0.75, gt=0, lt=1, description="Upper bound of the cut, as a fraction of the words.")
    dedup: bool = Field(True, description="Drop exact duplicate documents (same content hash) before sampling.")
    on_bad_row: Literal["error", "skip"] = Field(
        "error", description="A malformed line, missing field or non-UTF-8 text: stop with an error naming the "
        "file and line, or skip it and count it in the manifest.",
    )
    progress: bool = volatile(default=True, description="Show a progress bar.")


def doc_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _derive(seed: int, h: str, purpose: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{purpose}:{h}".encode()).digest()[:8], "big")


@functools.lru_cache(maxsize=64)
def _frac(x: float) -> tuple[int, int]:
    f = Fraction(str(x))
    return f.numerator, f.denominator


def cut_bounds(n_words: int, low: float = 0.25, high: float = 0.75) -> tuple[int, int]:
    """[ceil(low W), floor(high W)], in exact integer arithmetic (0.25 * W in floats can land on the wrong side)."""
    (ln, ld), (hn, hd) = _frac(low), _frac(high)
    lo = -(-n_words * ln // ld)
    hi = n_words * hn // hd
    return max(lo, 1), min(hi, n_words - 1)  # both parts keep at least one word


def cut(text: str, k: int) -> tuple[str, str]:
    """Split after the k-th whitespace-separated word (1-based), keeping every byte.

    str.split(None, k) leaves the remainder as a suffix of `text` (trailing whitespace kept), so the remainder's
    start, minus the whitespace run before it, is the end of word k. Same whitespace definition as regex \\S+.
    """
    parts = text.split(None, k)
    if len(parts) <= k:
        raise ValueError(f"text has fewer than {k + 1} words")
    end = len(text) - len(parts[k])
    while text[end - 1].isspace():
        end -= 1
    return text[:end], text[end:]


def draw_cut(text: str, seed: int, low: float = 0.25, high: float = 0.75, h: str | None = None,
             n_words: int | None = None) -> dict | None:
    """The paper's cut for one document, reproducible from (seed, content). None if too short to cut."""
    n_words = len(text.split()) if n_words is None else n_words
    lo, hi = cut_bounds(n_words, low, high)
    if lo > hi:
        return None
    h = h or doc_hash(text)
    k = random.Random(_derive(seed, h, "cut")).randint(lo, hi)
    prompt, reference = cut(text, k)
    return {"prompt": prompt, "reference": reference, "cut_word": k, "n_words": n_words}


def sample(
    docs: Iterable[tuple[str, Location]], n: int | None, seed: int, min_words: int, dedup: bool,
    skipped: Counter, low: float = 0.25, high: float = 0.75,
) -> list[tuple[int, str, Location, str | None, int]]:
    """Bounded-memory uniform sample: the n smallest keys. Returns [(key, hash, location, text-or-None, words)]."""
    heap: list[tuple[int, str, int, Location, str | None, int | None]] = []  # max-heap via negated key
    members: set[str] = set()
    counter = 0
    # A document with more than `enough` words is always cuttable; checking that with maxsplit stops early,
    # so the full word count (the hot spot on long documents) is only paid for short ones and the chosen ones.
    ln, ld = _frac(low)
    hn, hd = _frac(high)
    enough = max(min_words, -(-ld * hd // max(hn * ld - ln * hd, 1)) + 2)
    for text, loc in docs:
        if not text or text.isspace():
            skipped["empty"] += 1
            continue
        n_words = None
        if len(text.split(None, enough)) <= enough:
            n_words = len(text.split())  # same whitespace definition as \S+
            lo, hi = cut_bounds(n_words, low, high)
            if n_words < min_words or lo > hi:
                skipped["too_short"] += 1
                continue
        h = doc_hash(text)
        key = _derive(seed, h, "sample")
        if not dedup:
            key = _derive(seed, h + loc.label(), "sample")
        if dedup and h in members:
            skipped["duplicate_of_sampled"] += 1
            continue
        keep_text = None if loc.seekable else text
        counter += 1
        item = (-key, h, counter, loc, keep_text, n_words)
        if n is None or len(heap) < n:
            heapq.heappush(heap, item)
            members.add(h)
        elif key < -heap[0][0]:
            dropped = heapq.heapreplace(heap, item)
            members.discard(dropped[1])
            members.add(h)
    return sorted(((-k, h, loc, t, w) for k, h, _, loc, t, w in heap), key=lambda x: x[0])


def run(cfg: PrepareConfig, run_dir: str | Path, force: bool = False, log=print):
    """Run the prepare stage into `run_dir/prepare/`."""
    if Fraction(str(cfg.cut_low)) >= Fraction(str(cfg.cut_high)):
        raise InputError(f"cut_low ({cfg.cut_low}) must be below cut_high ({cfg.cut_high})")
    sources = expand_inputs(cfg.input, log=log)  # resolve inputs before touching the run dir

    def body(ctx: StageContext) -> None:
        stats = ReadStats()
        skipped: Counter = Counter()
        total = sum(Path(s.path).stat().st_size for s in sources if s.kind != "hf")
        bar = _progress(total, cfg.progress)
        with ctx.timed("read_and_sample_s"):
            chosen = sample(iter_documents(sources, cfg.text_field, cfg.on_bad_row, stats, bar),
                            cfg.n_docs, cfg.seed, cfg.min_words, cfg.dedup, skipped, cfg.cut_low, cfg.cut_high)
        if bar is not None:
            bar.close()
        if not chosen:
            raise InputError(f"no usable document in {', '.join(cfg.input)} "
                             f"(rows read: {stats.rows}, skipped: {dict(stats.skipped + skipped)})")
        reader = Reader([loc for _, _, loc, t, _ in chosen if t is None], cfg.text_field)
        lengths_w, lengths_p = [], []
        with ctx.timed("cut_and_write_s"), atomic_open(ctx.path(OUTPUT)) as f:
            for _, h, loc, text, n_words in chosen:
                text = text if text is not None else reader.read(loc)
                c = draw_cut(text, cfg.seed, cfg.cut_low, cfg.cut_high, h=h, n_words=n_words)
                assert c is not None and c["prompt"] + c["reference"] == text
                row_id = h[:16] if cfg.dedup else hashlib.sha256((h + loc.label()).encode()).hexdigest()[:16]
                row = {"id": row_id, "doc_hash": h, "prompt": c["prompt"], "reference": c["reference"],
                       "cut_word": c["cut_word"], "n_words": c["n_words"], "source": loc.label()}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                lengths_w.append(c["n_words"])
                lengths_p.append(c["cut_word"])
        reader.close()
        all_skipped = dict(stats.skipped + skipped)
        ctx.stats.update({
            "files": stats.files, "bytes_read": stats.bytes, "rows_read": stats.rows,
            "documents_written": len(chosen), "requested": cfg.n_docs,
            "skipped": all_skipped, "skipped_total": sum(all_skipped.values()),
            "words": _describe(lengths_w), "prompt_words": _describe(lengths_p),
            "cut_fraction": _describe([p / w for p, w in zip(lengths_p, lengths_w, strict=False)]),
        })
        if cfg.n_docs and len(chosen) < cfg.n_docs:
            log(f"[prepare] only {len(chosen)} usable documents for the {cfg.n_docs} requested")

    result = run_stage("prepare", Path(run_dir) / "prepare", cfg, body, force=force, log=log)
    if not result.skipped:
        s = result.manifest["stats"]
        log(f"[prepare] wrote {s['documents_written']} documents to {result.dir / OUTPUT} "
            f"({s['rows_read']} rows read, {s['skipped_total']} skipped: {s['skipped'] or 'none'})")
    return result


def _describe(values: list[float]) -> dict[str, Any]:
    if not values:
        return {}
    v = sorted(values)

    def q(p: float) -> float:
        return round(v[min(len(v) - 1, int(p * len(v)))], 4)

    return {"n": len(v), "min": round(v[0], 4), "p10": q(0.1), "median": q(0.5), "p90": q(0.9),
            "max": round(v[-1], 4), "mean": round(sum(v) / len(v), 4)}


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total or None, unit="B", unit_scale=True, desc="prepare", mininterval=0.5)
