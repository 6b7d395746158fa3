"""Benchmark `nift prepare`: documents/s and peak RSS on synthetic JSONL corpora of 0.1 to 1 GB (and more).

Run as: python bench/prepare.py [--sizes-gb 0.1 0.3 1.0] [--n-docs 80000] [--workdir /tmp/nift-bench-prepare]

For each size it writes a synthetic corpus (documents of 50-2,000 words drawn from a fixed vocabulary, about 5 KB
on average, like OpenWebText), then runs, each in a fresh process so peak RSS is its own:
- `nift prepare` (one streaming pass, memory bounded by the sample size), and
- a naive baseline: read every line, parse it, dedup with a set, `random.sample` N documents and cut them.
It prints documents/s and peak RSS for both, and how they grow from the smallest to the largest corpus.
A flat RSS for nift as the corpus grows is the point: 8M documents / 40 GB sample in the same memory as 0.1 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

NAIVE = r"""
import json, random, sys
from nift.prepare import draw_cut
path, n = sys.argv[1], int(sys.argv[2])
docs = {}
with open(path, encoding="utf-8") as f:
    for line in f:
        t = json.loads(line)["text"]
        docs.setdefault(t, None)
texts = list(docs)
chosen = random.Random(0).sample(texts, min(n, len(texts)))
with open(sys.argv[3], "w", encoding="utf-8") as f:  # write the output too, as nift does
    for t in chosen:
        f.write(json.dumps(draw_cut(t, 0), ensure_ascii=False) + "\n")
print(len(chosen))
"""


def make_corpus(path: Path, size_bytes: int, seed: int = 0) -> int:
    if path.is_file() and path.stat().st_size >= size_bytes:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    rng = random.Random(seed)
    vocab = [("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))))
             for _ in range(20_000)]
    n = 0
    written = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < size_bytes:
            words = rng.choices(vocab, k=rng.randint(50, 1600))
            # paragraphs and sentences, so whitespace preservation is exercised
            text = " ".join(words).replace(" a", ".\n\nA", 3)
            line = json.dumps({"text": text, "url": f"https://example.org/{n}"}) + "\n"
            f.write(line)
            written += len(line)
            n += 1
    return n


def run_measured(cmd: list[str]) -> tuple[float, float, str]:
    """Wall seconds and peak RSS (MB) of one child process, from wait4's own rusage."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out = proc.stdout.read() + proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{out}")
    return wall, usage.ru_maxrss / 1024, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes-gb", type=float, nargs="+", default=[0.1, 0.3, 1.0])
    ap.add_argument("--n-docs", type=int, default=80_000)
    ap.add_argument("--workdir", default="/tmp/nift-bench-prepare")
    ap.add_argument("--skip-naive", action="store_true")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for gb in args.sizes_gb:
        corpus = work / f"corpus_{gb}gb.jsonl"
        n_docs = make_corpus(corpus, int(gb * 1e9))
        run_dir = work / f"run_{gb}"
        cmd = [sys.executable, "-m", "nift.cli", "prepare", "--input", str(corpus), "--n-docs", str(args.n_docs),
               "--run-dir", str(run_dir), "--no-progress", "--force"]
        wall, rss, _ = run_measured(cmd)
        row = {"size_gb": gb, "documents": n_docs, "nift_s": round(wall, 2), "nift_docs_per_s": round(n_docs / wall),
               "nift_peak_rss_mb": round(rss)}
        if not args.skip_naive:
            wall_b, rss_b, _ = run_measured([sys.executable, "-c", NAIVE, str(corpus), str(args.n_docs),
                                                 str(work / "naive_out.jsonl")])
            row.update({"naive_s": round(wall_b, 2), "naive_docs_per_s": round(n_docs / wall_b),
                        "naive_peak_rss_mb": round(rss_b), "rss_ratio_naive_over_nift": round(rss_b / rss, 2)})
        rows.append(row)
        print(json.dumps(row), flush=True)
    first, last = rows[0], rows[-1]
    growth = last["size_gb"] / first["size_gb"]
    print(f"\ncorpus grew {growth:.0f}x: nift peak RSS x{last['nift_peak_rss_mb'] / first['nift_peak_rss_mb']:.2f}, "
          f"throughput x{last['nift_docs_per_s'] / first['nift_docs_per_s']:.2f}")
    if "naive_peak_rss_mb" in last:
        print(f"naive baseline peak RSS x{last['naive_peak_rss_mb'] / first['naive_peak_rss_mb']:.2f}")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "prepare.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
