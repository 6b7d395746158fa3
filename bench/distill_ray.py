"""The Ray pool against one process, side by side, on this machine's CPUs: what spreading the teacher over Ray actors
costs or gains when the hardware is the same.

Run as: python bench/distill_ray.py [--prompts 32] [--max-tokens 16] [--batch-size 4] [--rounds 2]

Same teacher (SmolLM2-135M, bf16, greedy), same prompts (OpenWebText, cut by `nift prepare`), same chunks (the
engine's length-sorted batches), in one script:

- one process: `HFBackend.generate_chunks` with torch using every core (2 threads here);
- Ray: `RayPoolBackend.generate_chunks` on a local cluster with one worker per core (1 thread each).

Start-up (cluster, actors, model loads) is timed apart and excluded from the rates: a long run pays it once. Both
arms are warmed up on one chunk first; the arms alternate over --rounds and the ratio is of medians. Writes
bench/results/distill_ray.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NIFT_SHARED", ROOT.parent / "shared"))


def prompts(n: int) -> list[str]:
    from nift.io import read_jsonl
    from nift.prepare import PrepareConfig
    from nift.prepare import run as prepare

    with tempfile.TemporaryDirectory() as tmp:
        prepare(PrepareConfig(input=[str(SHARED / "data" / "corpus" / "openwebtext_800.jsonl")], n_docs=n,
                              progress=False), tmp, log=lambda *_: None)
        # The last 120 words of each prompt: CPU-sized requests of realistic text.
        return [" ".join(r["prompt"].split()[-120:]) for r in read_jsonl(Path(tmp) / "prepare" / "data.jsonl")]


def chunks_for(backend, texts: list[str], cfg, size: int) -> list[list[dict]]:
    from nift.llm import text_request

    payloads = [backend.payload(text_request(str(i), t, cfg)) for i, t in enumerate(texts)]
    payloads.sort(key=lambda p: -len(backend.encode(p)))
    return [payloads[i:i + size] for i in range(0, len(payloads), size)]


def timed(backend, chunks) -> tuple[float, int]:
    t0 = time.perf_counter()
    tokens = 0
    for _, results in backend.generate_chunks(chunks):
        tokens += sum(r.completion_tokens for r in results)
    return time.perf_counter() - t0, tokens


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Spinning OpenMP threads cost torch several times its speed on a CPU shared with other work (tests/conftest.py);
    # set before torch loads, and inherited by the Ray workers.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from nift.llm.backends.hf import HFBackend
    from nift.llm.backends.ray_pool import RayPoolBackend
    from nift.llm.config import BackendConfig, RayConfig

    cores = os.cpu_count() or 1
    cfg = BackendConfig(backend="hf", model="smollm2-135m-instruct", max_tokens=a.max_tokens,
                        batch_size=a.batch_size, device="cpu", dtype="bfloat16")
    texts = prompts(a.prompts)

    t0 = time.perf_counter()
    one = HFBackend(cfg, log=lambda *_: None)
    torch.set_num_threads(cores)
    chunks = chunks_for(one, texts, cfg, a.batch_size)
    timed(one, chunks[:1])
    one_start = time.perf_counter() - t0

    t0 = time.perf_counter()
    pool = RayPoolBackend(cfg, RayConfig(address="local", workers=cores, local_cpus=cores), log=lambda *_: None)
    pool._start()
    timed(pool, chunks[:cores])  # every worker loads its model
    ray_start = time.perf_counter() - t0

    rates: dict[str, list[float]] = {"one_process": [], "ray": []}
    for _ in range(a.rounds):
        for name, backend in (("one_process", one), ("ray", pool)):
            wall, tokens = timed(backend, chunks)
            rates[name].append(tokens / wall)
            print(f"{name:12} {tokens} tokens in {wall:6.1f} s = {tokens / wall:6.1f} tok/s", flush=True)
    pool.close()
    load = os.getloadavg()
    med = {k: statistics.median(v) for k, v in rates.items()}
    result = {
        "machine": {"cpus": cores, "load_avg": [round(x, 2) for x in load]},
        "setup": {"prompts": a.prompts, "max_new_tokens": a.max_tokens, "batch_size": a.batch_size,
                  "chunks": len(chunks), "model": cfg.model, "dtype": "bfloat16"},
        "one_process": {"threads": cores, "tokens_per_s": [round(x, 2) for x in rates["one_process"]],
                        "start_s": round(one_start, 1)},
        "ray": {"workers": cores, "threads_each": 1, "tokens_per_s": [round(x, 2) for x in rates["ray"]],
                "start_s": round(ray_start, 1)},
        "ratio_ray_over_one_process": round(med["ray"] / med["one_process"], 3),
    }
    out = ROOT / "bench" / "results" / "distill_ray.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nRay pool / one process (median tokens/s): {result['ratio_ray_over_one_process']:.2f}x; start-up "
          f"{ray_start:.1f} s (cluster + {cores} workers) vs {one_start:.1f} s (one model); written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
