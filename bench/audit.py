"""Audit throughput: rows/s of heuristics and decontamination on 100k synthetic rows, against the 541 + 80 + 500 +
805 benchmark prompts, side by side with a plain Python n-gram-set baseline.

Run as: NIFT_SHARED=../shared python bench/audit.py [--rows 100000] [--baseline-rows 20000]

Synthetic rows: prompt and continuation are random windows (150 and 100 words) of the 800 real OpenWebText
documents in shared/data, 1% of continuations carrying a planted 20-word slice of a benchmark prompt. Measured in one
process, one after the other on the same rows:

1. decontamination, baseline: per row, the set of its word 13-grams intersected with the benchmarks' 13-gram set (the
   usual GPT-3-style script);
2. decontamination, nift: the batched numpy prefix-hash filter plus exact check (`NgramIndex.scan`);
3. heuristics without and with the language check;
4. the whole stage (`nift audit`, no judge) on a 100k-row distill file: read, join to prepare, flag, write; in one
   process and with a worker per core (`workers`).

Results go to bench/results/audit.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from nift.artifacts import write_json, write_jsonl  # noqa: E402
from nift.audit.benchmarks import load_benchmarks  # noqa: E402
from nift.audit.decontam import NgramIndex  # noqa: E402
from nift.audit.heuristics import Heuristics  # noqa: E402

_WORD = re.compile(r"\w+")


def synthetic(n: int, docs: list[list[str]], prompts, seed: int = 0) -> tuple[list[dict], list[dict], int]:
    rng = random.Random(seed)
    prep, dist, planted = [], [], 0
    long_prompts = [p for p in prompts if len(p.text.split()) >= 25]
    for i in range(n):
        words = docs[rng.randrange(len(docs))]
        start = rng.randrange(max(1, len(words) - 250))
        prompt = " ".join(words[start:start + 150])
        completion = " ".join(words[start + 150:start + 250]) or "the end"
        if rng.random() < 0.01:
            # a slice of 20 whitespace-separated words holding at least 13 words as the scan counts them (\w+)
            while True:
                bp = rng.choice(long_prompts)
                slice_ = " ".join(bp.text.split()[2:22])
                if len(_WORD.findall(slice_)) >= 13:
                    break
            completion = completion[:200] + " " + slice_ + " " + completion[200:]
            planted += 1
        rid = f"r{i:07d}"
        prep.append({"id": rid, "doc_hash": rid, "prompt": prompt, "reference": " " + completion, "cut_word": 150,
                     "n_words": 250, "source": "synthetic"})
        dist.append({"id": rid, "completion": " " + completion, "finish_reason": "stop", "prompt_tokens": 200,
                     "completion_tokens": 130, "cost_usd": 0.0, "teacher": "synthetic", "latency_s": 0.0})
    return prep, dist, planted


def baseline_scan(rows: list[tuple[str, str]], grams: set[tuple[str, ...]], n: int) -> set[int]:
    hit = set()
    for i, (p, c) in enumerate(rows):
        for text in (p, c):
            w = _WORD.findall(text.lower())
            if {tuple(w[j:j + n]) for j in range(len(w) - n + 1)} & grams:
                hit.add(i)
                break
    return hit


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--baseline-rows", type=int, default=20_000)
    args = ap.parse_args()
    shared = Path(os.environ.get("NIFT_SHARED", ROOT.parent / "shared")) / "data"
    prompts, info = load_benchmarks(["ifeval", "mt_bench", "arena_hard", "alpaca_eval"], str(shared), log=print)
    docs = [json.loads(line)["text"].split() for line in (shared / "corpus" / "openwebtext_800.jsonl").open()]
    prep, dist, planted = synthetic(args.rows, docs, prompts)
    pairs = [(p["prompt"], d["completion"]) for p, d in zip(prep, dist, strict=True)]
    mb = sum(len(a) + len(b) for a, b in pairs) / 1e6
    print(f"{args.rows} rows ({mb:.0f} MB of text), {planted} planted; benchmarks: "
          + ", ".join(f"{k} {v['prompts']}" for k, v in info.items()))

    index, t_index = timed(lambda: NgramIndex(prompts, 13, 8))
    grams: set[tuple[str, ...]] = set()
    for p in prompts:
        w = _WORD.findall(p.text.lower())
        grams.update(tuple(w[j:j + 13]) for j in range(len(w) - 12))
    nb = min(args.baseline_rows, args.rows)
    base_hits, t_base = timed(lambda: baseline_scan(pairs[:nb], grams, 13))

    def ours(rows):
        hits = set()
        for s in range(0, len(rows), 256):
            hits.update(s + k for k in index.scan(rows[s:s + 256]))
        return hits

    our_sub, t_our_sub = timed(lambda: ours(pairs[:nb]))
    assert our_sub >= base_hits, "nift missed a row the baseline found"
    our_all, t_our_all = timed(lambda: ours(pairs))

    h_plain = Heuristics(language=None)
    _, t_heur = timed(lambda: [h_plain.check(p["prompt"], d["completion"], p["reference"], "stop")
                               for p, d in zip(prep, dist, strict=True)])
    h_lang = Heuristics(language="en")
    h_lang.detector.detect("warm up the model")
    nl = min(args.rows, 20_000)
    _, t_lang = timed(lambda: [h_lang.check(p["prompt"], d["completion"], p["reference"], "stop")
                               for p, d in zip(prep[:nl], dist[:nl], strict=True)])

    from nift.audit import run
    from nift.audit.config import AuditConfig

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        write_jsonl(run_dir / "prepare" / "data.jsonl", prep)
        write_json(run_dir / "prepare" / "manifest.json", {"stage": "prepare"})
        write_jsonl(run_dir / "distill" / "data.jsonl", dist)
        write_json(run_dir / "distill" / "manifest.json", {"stage": "distill"})
        stage_t = {}
        for workers in (1, 0):
            cfg = AuditConfig(benchmark_dir=str(shared), progress=False, language="en", drop=["contaminated"],
                              workers=workers)
            res, stage_t[workers] = timed(lambda cfg=cfg: run(cfg, run_dir, force=True, log=lambda m: None))
            stage_contaminated = res.manifest["stats"]["datasets"]["distill"]["flags"].get("contaminated", 0)

    rows = [
        ("decontamination, Python n-gram sets (baseline)", nb, t_base),
        ("decontamination, nift NgramIndex.scan", nb, t_our_sub),
        ("decontamination, nift, all rows", args.rows, t_our_all),
        ("heuristics, no language check", args.rows, t_heur),
        ("heuristics + language check (py3langid)", nl, t_lang),
        ("whole stage: nift audit, no judge, 1 process", args.rows, stage_t[1]),
        (f"whole stage: nift audit, no judge, {min(os.cpu_count() or 1, 8)} processes", args.rows, stage_t[0]),
    ]
    print(f"\nindex build: {t_index:.2f} s ({index.stats()['ngrams']} n-grams)\n")
    print(f"{'measurement':52} {'rows':>8} {'seconds':>8} {'rows/s':>9}")
    for name, n, t in rows:
        print(f"{name:52} {n:8d} {t:8.2f} {n / t:9.0f}")
    ratio = (nb / t_our_sub) / (nb / t_base)
    print(f"\nratio whole stage, all cores / 1 process: {stage_t[1] / stage_t[0]:.2f}x")
    print(f"ratio nift / baseline decontamination: {ratio:.2f}x (same {nb} rows; hits {len(our_sub)} vs "
          f"{len(base_hits)}; planted in all rows: {planted}, found: {len(our_all)}, stage flagged: "
          f"{stage_contaminated})")
    out = ROOT / "bench" / "results" / "audit.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "rows": args.rows, "text_mb": round(mb, 1), "planted": planted, "found": len(our_all),
        "benchmarks": {k: v["prompts"] for k, v in info.items()},
        "measurements": [{"name": n, "rows": r, "seconds": round(t, 3), "rows_per_s": round(r / t)}
                         for n, r, t in rows],
        "ratio_decontam_vs_baseline": round(ratio, 2),
        "ratio_stage_cores_vs_1": round(stage_t[1] / stage_t[0], 2), "cpu_count": os.cpu_count(),
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()
