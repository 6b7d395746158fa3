"""Benchmark: batched vs one-at-a-time answer generation for `nift eval`, same prompts, same model, side by side.

Run as: python bench/eval.py [--model smollm2-135m-instruct] [--n 16] [--max-new-tokens 64] [--batch 16]

Both runs go through the same path `nift eval` uses (the distill engine's hf backend via `nift.eval.generation`),
each with a fresh answer store so nothing is cached: IFEval prompts from ../shared/data (the first N), the model's
chat template, greedy. Reports generated tokens, wall seconds, tokens/s and the ratio batched / one-at-a-time; writes
bench/results/eval.json. On a CUDA machine the same script measures the GPU (device cuda). On a CPU shared with
other work, `OMP_NUM_THREADS=1` keeps torch's threads from spinning against each other (both runs alike).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NIFT_SHARED", REPO.parent / "shared")) / "data"


def measure(model: str, items: list[dict], batch: int, max_new: int, device: str | None) -> dict:
    from nift.eval.generation import Generator, GenSettings
    from nift.llm.config import BackendConfig

    cfg = BackendConfig(backend="hf", model=model, endpoint="completions", batch_size=batch, device=device)
    with tempfile.TemporaryDirectory() as tmp:
        gen = Generator(cfg, Path(tmp) / "answers.sqlite", progress=False, log=lambda *a: None)
        # Warm-up outside the timing (first-call kernel selection, allocator growth).
        gen.answer("warmup", items[:1], GenSettings("chat", 4), lambda it: 0.0)
        t0 = time.perf_counter()
        rows = gen.answer("ifeval", items, GenSettings("chat", max_new), lambda it: 0.0)
        wall = time.perf_counter() - t0
        gen.close()
    tokens = sum(r["completion_tokens"] for r in rows)
    return {"batch_size": batch, "answers": len(rows), "tokens": tokens, "wall_s": round(wall, 2),
            "tokens_per_s": round(tokens / wall, 2),
            "stopped": sum(r["finish_reason"] == "stop" for r in rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--n", type=int, default=16, help="prompts (default 16)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16, help="batch size of the batched run (default 16)")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: CUDA if available)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from nift.eval.data import load_ifeval

    items = load_ifeval(str(DATA / "ifeval"))[: args.n]
    one = measure(args.model, items, 1, args.max_new_tokens, args.device)
    batched = measure(args.model, items, args.batch, args.max_new_tokens, args.device)
    ratio = batched["tokens_per_s"] / one["tokens_per_s"]
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    print(f"model {args.model}, {args.n} IFEval prompts, {args.max_new_tokens} new tokens, greedy, device {device}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'run':16} {'batch':>5} {'tokens':>7} {'wall s':>8} {'tok/s':>8} {'stopped':>7}")
    for label, r in (("one-at-a-time", one), ("batched", batched)):
        print(f"{label:16} {r['batch_size']:>5} {r['tokens']:>7} {r['wall_s']:>8} {r['tokens_per_s']:>8} "
              f"{r['stopped']:>7}")
    print(f"ratio batched / one-at-a-time: {ratio:.2f}x tokens/s")
    out = REPO / "bench" / "results" / "eval.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": args.model, "n": args.n, "max_new_tokens": args.max_new_tokens,
                               "device": device, "machine": platform.processor() or platform.machine(),
                               "torch_threads": torch.get_num_threads(), "one_at_a_time": one, "batched": batched,
                               "ratio_tokens_per_s": round(ratio, 2)}, indent=2) + "\n")
    print(f"written {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
