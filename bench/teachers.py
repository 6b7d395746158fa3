"""Teacher study for the embedded default: which packaged instruct model, asked which way, continues a document
instead of answering, restating or summarising it?

For each teacher (SmolLM2-135M, Qwen2.5-Coder-0.5B, Qwen2.5-Coder-1.5B; all instruct, all from PyPI packages) and each
way of asking it —

- `chat+system`: the prompt as the user message, with the paper's system prompt for its Claude teachers
  ("Please continue directly from the end of the given sentence without repeating it.");
- `chat`: the prompt as the user message, no system prompt (the paper's GPT teachers);
- `completions`: the prompt continued as raw text, no chat template (what a Completions endpoint does);

— `nift distill` (hf backend, greedy; bf16 only where the CPU has it) continues the same N prompts that
`nift prepare` cut from `../shared/data/corpus/` (OpenWebText), and `nift audit`'s heuristics measure the continuations:

- echo: the continuation restates the prompt (audit `echo`);
- upper-case start where the original does not (the paper's §6 rule, audit `uppercase_start`): a new text, not a
  continuation of the sentence;
- preamble / refusal: "Sure, here is ...", "I'm sorry, but ...";
- truncated: the teacher hit max_tokens (trained without EOS, see `train.cut_at_max_tokens`);
- teacher tokens/s: generated tokens over the engine's wall time (this machine, alone on it, 2 threads).

Run as: python bench/teachers.py [--n 64] [--max-tokens 128] [--teachers ...] [--modes ...] [--out PATH]
Writes bench/results/teachers.json and prints the table that docs/reproduction.md quotes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see tests/conftest.py: spinning threads on a shared CPU

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
SHARED = Path(os.environ.get("NIFT_SHARED", REPO.parent / "shared"))

from nift.artifacts import read_manifest, write_json  # noqa: E402
from nift.audit.heuristics import Heuristics  # noqa: E402
from nift.distill.config import DistillConfig  # noqa: E402
from nift.io import read_jsonl  # noqa: E402
from nift.llm.config import PAPER_SYSTEM_PROMPT, BackendConfig  # noqa: E402
from nift.prepare import PrepareConfig  # noqa: E402

TEACHERS = ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"]
MODES = {
    "chat+system": {"endpoint": "chat", "system_prompt": PAPER_SYSTEM_PROMPT},
    "chat": {"endpoint": "chat", "system_prompt": ""},
    "completions": {"endpoint": "completions"},
}
FLAGS = ("echo", "uppercase_start", "preamble", "refusal", "truncated", "empty")


def prepare(run_dir: Path, n: int, seed: int) -> None:
    from nift.prepare import run

    corpus = SHARED / "data" / "corpus" / "openwebtext_800.jsonl"
    if not corpus.is_file():
        sys.exit(f"bench/teachers.py: {corpus} is missing (the shared data sits beside the checkout)")
    run(PrepareConfig(input=[str(corpus)], n_docs=n, seed=seed, progress=False), run_dir, log=lambda *_: None)


def distill(run_dir: Path, prep: Path, teacher: str, mode: str, max_tokens: int, batch: int, context: int) -> dict:
    from nift.distill import run

    arm = run_dir / f"{teacher}--{mode}"
    arm.mkdir(parents=True, exist_ok=True)
    if not (arm / "prepare").exists():
        (arm / "prepare").symlink_to(prep.resolve(), target_is_directory=True)
    teacher_cfg = BackendConfig(backend="hf", model=teacher, max_tokens=max_tokens, batch_size=batch,
                                context_tokens=context, **MODES[mode])
    t0 = time.perf_counter()
    run(DistillConfig(teacher=teacher_cfg, progress=False), arm, log=lambda *_: None)
    wall = time.perf_counter() - t0
    return {"dir": arm, "wall_s": wall, "manifest": read_manifest(arm / "distill")}


def measure(arm: dict, prep_rows: dict[str, dict], heur: Heuristics) -> dict:
    rows = list(read_jsonl(arm["dir"] / "distill" / "data.jsonl"))
    counts = dict.fromkeys(FLAGS, 0)
    samples = []
    for r in rows:
        p = prep_rows[r["id"]]
        flags = heur.check(p["prompt"], r["completion"] or "", p["reference"], r.get("finish_reason"))
        for f in FLAGS:
            counts[f] += f in flags
        if len(samples) < 3:
            samples.append({"id": r["id"], "prompt_end": p["prompt"][-160:],
                            "completion": (r["completion"] or "")[:240], "reference_start": p["reference"][:160],
                            "flags": sorted(flags)})
    st = arm["manifest"]["stats"]
    ledger = arm["manifest"].get("cost") or {}
    total = (ledger.get("total") or {}) if isinstance(ledger, dict) else {}
    out_tokens = total.get("completion_tokens") or sum(r.get("completion_tokens") or 0 for r in rows)
    gen_s = arm["manifest"].get("timings", {}).get("generate_s") or arm["wall_s"]
    n = len(rows)
    return {
        "n": n, **{f"{f}_rate": round(counts[f] / n, 4) for f in FLAGS},
        "completion_tokens_mean": round(out_tokens / n, 1), "finish_reason": st.get("finish_reason"),
        "tokens_per_s": round(out_tokens / arm["wall_s"], 1), "wall_s": round(arm["wall_s"], 1),
        "generate_s": round(gen_s, 1) if isinstance(gen_s, (int, float)) else None, "samples": samples,
    }


def table(results: dict) -> str:
    head = ("| teacher | asked as | echo | upper-case start (original not) | preamble | truncated | mean tokens "
            "| tokens/s |\n|---|---|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for key, r in results["arms"].items():
        teacher, mode = key.split("--")
        lines.append(f"| {teacher} | {mode} | {r['echo_rate']:.0%} | {r['uppercase_start_rate']:.0%} | "
                     f"{r['preamble_rate']:.0%} | {r['truncated_rate']:.0%} | {r['completion_tokens_mean']} | "
                     f"{r['tokens_per_s']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=64, help="documents of the shared OpenWebText sample")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--context", type=int, default=512,
                    help="teacher context in tokens: a longer prompt keeps its last context - max_tokens tokens")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--teachers", nargs="+", default=TEACHERS)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "bench-teachers")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "teachers.json")
    args = ap.parse_args()

    prepare(args.work, args.n, args.seed)
    prep = args.work / "prepare"
    prep_rows = {r["id"]: r for r in read_jsonl(prep / "data.jsonl")}
    heur = Heuristics(language=None)
    old = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results = {"n_docs": args.n, "seed": args.seed, "max_tokens": args.max_tokens, "context_tokens": args.context,
               "batch_size": args.batch_size, "corpus": "shared/data/corpus/openwebtext_800.jsonl",
               "load_average_before": os.getloadavg(), "arms": dict(old.get("arms", {}))}
    for teacher in args.teachers:
        for mode in args.modes:
            print(f"[teachers] {teacher} asked as {mode} ...", flush=True)
            arm = distill(args.work, prep, teacher, mode, args.max_tokens, args.batch_size, args.context)
            results["arms"][f"{teacher}--{mode}"] = measure(arm, prep_rows, heur)
            shown = {k: v for k, v in results["arms"][f"{teacher}--{mode}"].items() if k != "samples"}
            print(f"[teachers]   {json.dumps(shown)}", flush=True)
            results["arms"][f"{teacher}--{mode}"]["load_average_after"] = os.getloadavg()
            write_json(args.out, results)  # after every arm: an interrupted study keeps what it measured
    results["load_average_after"] = os.getloadavg()
    write_json(args.out, results)
    print(table(results))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
