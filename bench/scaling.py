"""The arithmetic of a paper-scale run: 300k documents, a 70B teacher on local GPUs (or an API teacher), an 8B or 70B
student — tokens, GPU-hours and dollars, reproducible from this script (docs/scaling.md prints its tables).

Run as: python bench/scaling.py [--docs 300000] [--max-tokens 512] [--gpu-hour-usd 2.5] [--markdown]

Every number is labelled by where it comes from:

- MEASURED here: the token statistics of the corpus sample (../shared/data/corpus/openwebtext_800.jsonl) after
  `nift prepare`'s cut (uniform between 25% and 75% of the words), tokenized with real tokenizers of the demo models
  (Qwen2.5's 151k BPE stands in for Llama-3's 128k one, which is not on this machine); the CPU rates of
  bench/results/distill.json, train.json and distill_ray.json (when present).
- PUBLISHED: vLLM output throughput of Llama-3.1-70B on H100-80GB-SXM (Lambda Labs' vLLM benchmark, v0.6.0,
  TP=4, multi-step scheduling 10: 3,542.88 output tokens/s on 4 GPUs) and of Llama-3.1-8B (TP=1: 8,088.35 tokens/s);
  H100 SXM dense bf16 peak 989 TFLOP/s; API list prices from `nift.llm.prices`.
- ASSUMED (flags change them): the teacher writes min(the document's own remainder, --max-tokens) tokens; training
  sustains --hfu of the GPU's bf16 peak on the FLOPs it executes (Llama 3 reports 38-43% bf16 MFU pre-training on
  H100s); --gpu-hour-usd per H100-hour.

FLOPs per trained token: LoRA 4N (forward 2N, backward through the activations 2N; no weight gradients for the
frozen base), full fine-tuning 6N; nift's default gradient checkpointing re-runs the forward pass, +2N executed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NIFT_SHARED", ROOT.parent / "shared"))
RESULTS = ROOT / "bench" / "results"

H100_BF16_PEAK = 989e12  # dense, SXM (PUBLISHED, NVIDIA datasheet)
LLAMA_70B, LLAMA_8B = 70.6e9, 8.03e9  # parameters of Llama-3.1-70B / -8B
# PUBLISHED: Lambda Labs, "LLMs inference benchmarks, using vLLM" (github.com/LambdaLabsML/vllm-benchmark,
# benchmark_v0.md): vLLM v0.6.0, num-scheduler-steps 10, 5000 prompts, max-num-seq 256, max-seq-len 2048.
VLLM_70B_TP4_OUTPUT_TOK_S = 3542.88
VLLM_8B_TP1_OUTPUT_TOK_S = 8088.35
PAPER_SYSTEM_PROMPT = "Please continue directly from the end of the given sentence without repeating it."
TOKENIZERS = {"qwen2.5-coder-0.5b-instruct": "Qwen2.5 BPE 151k (proxy for Llama-3 128k)",
              "smollm2-135m-instruct": "SmolLM2 BPE 49k", "gemma-3-270m": "Gemma-3 SentencePiece 262k"}
API_TEACHERS = ["gpt-3.5-turbo-0125", "gpt-4-0125-preview", "gpt-4o-mini", "gpt-4o", "gpt-4.1-mini",
                "claude-3-haiku-20240307", "claude-3-sonnet-20240229", "claude-3-opus-20240229",
                "claude-haiku-4-5", "claude-sonnet-4-5"]


# ------------------------------------------------------------------------------------------ measured tokens


def prepared_rows(corpus: Path) -> list[dict]:
    """`nift prepare` on the whole sample (every document, the default seed): prompts and their remainders."""
    from nift.io import read_jsonl
    from nift.prepare import PrepareConfig
    from nift.prepare import run as prepare

    with tempfile.TemporaryDirectory() as tmp:
        prepare(PrepareConfig(input=[str(corpus)], n_docs=None, progress=False), tmp, log=lambda *_: None)
        return list(read_jsonl(Path(tmp) / "prepare" / "data.jsonl"))


def describe(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {"mean": round(statistics.fmean(xs), 1), "p50": xs[len(xs) // 2], "p90": xs[int(len(xs) * 0.9)],
            "max": xs[-1]}


def token_stats(rows: list[dict], name: str, max_tokens: int, max_length: int) -> dict:
    """Per document: prompt tokens (raw and as a chat request with the paper's system prompt), the remainder's
    tokens, the assumed teacher output (remainder capped at max_tokens), and the training sequence nift builds
    (prompt + output + EOS, prompt cut from the left at max_length)."""
    from nift.models import load_tokenizer

    tok = load_tokenizer(name, log=lambda *_: None)
    prompts = [len(x) for x in tok([r["prompt"] for r in rows], add_special_tokens=False)["input_ids"]]
    refs = [len(x) for x in tok([r["reference"] for r in rows], add_special_tokens=False)["input_ids"]]
    chat_overhead = None
    system_tokens = len(tok(PAPER_SYSTEM_PROMPT, add_special_tokens=False)["input_ids"])
    if tok.chat_template:  # the system prompt given explicitly: templates that add a default one do not
        msgs = [{"role": "system", "content": PAPER_SYSTEM_PROMPT}, {"role": "user", "content": "x"}]
        text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        chat_overhead = len(tok(text, add_special_tokens=False)["input_ids"]) - 1
    outputs = [min(r, max_tokens) for r in refs]
    train = [min(p + o + 1, max_length) for p, o in zip(prompts, outputs, strict=True)]
    return {
        "tokenizer": name, "what": TOKENIZERS[name], "documents": len(rows),
        "words": describe([r["n_words"] for r in rows]),
        "prompt_tokens": describe(prompts), "remainder_tokens": describe(refs),
        "teacher_output_tokens": describe(outputs),
        "capped_at_max_tokens": round(sum(r > max_tokens for r in refs) / len(refs), 3),
        "chat_overhead_tokens": chat_overhead, "system_prompt_tokens": system_tokens,
        "train_sequence_tokens": describe(train),
        "train_truncated": round(sum(p + o + 1 > max_length for p, o in zip(prompts, outputs, strict=True))
                                 / len(rows), 3),
    }


# ------------------------------------------------------------------------------------------------- plan


def plan(stats: dict, docs: int, epochs: float, hfu: float, gpu_hour_usd: float, measured: dict) -> dict:
    prompt, out = stats["prompt_tokens"]["mean"], stats["teacher_output_tokens"]["mean"]
    chat = stats["chat_overhead_tokens"] or 0
    seq = stats["train_sequence_tokens"]["mean"]
    tokens = {"prompt": docs * prompt, "prompt_chat": docs * (prompt + chat), "output": docs * out,
              "train_per_epoch": docs * seq, "train_total": docs * seq * epochs}

    # Teacher 70B on H100s, vLLM (PUBLISHED rate), and the FLOP floor for the same tokens.
    per_gpu = VLLM_70B_TP4_OUTPUT_TOK_S / 4
    teacher_h = tokens["output"] / per_gpu / 3600
    floor_h = 2 * LLAMA_70B * (tokens["prompt_chat"] + tokens["output"]) / (H100_BF16_PEAK * hfu) / 3600
    teacher = {"published_output_tok_s_per_gpu": round(per_gpu, 1), "gpu_hours": round(teacher_h, 1),
               "compute_floor_gpu_hours": round(floor_h, 1), "usd": round(teacher_h * gpu_hour_usd),
               "wall_hours_on_8_gpus": round(teacher_h / 8, 1),
               "note": "2 copies at TP=4 on one 8-GPU node: --ray.gpus-per-worker 4 --teacher.tensor-parallel 4"}
    teacher_8b_h = tokens["output"] / VLLM_8B_TP1_OUTPUT_TOK_S / 3600

    students = {}
    for name, n in (("8B", LLAMA_8B), ("70B", LLAMA_70B)):
        rows = {}
        for method, model_flops in (("lora", 4), ("full", 6)):
            executed = (model_flops + 2) * n * tokens["train_total"]  # + recomputation (gradient checkpointing)
            h = executed / (H100_BF16_PEAK * hfu) / 3600
            rows[method] = {"pflops": round(executed / 1e15), "gpu_hours": round(h, 1),
                            "wall_hours_on_8_gpus": round(h / 8, 1), "usd": round(h * gpu_hour_usd)}
        students[name] = rows

    api = []
    from nift.llm.prices import PRICES, cost

    for model in API_TEACHERS:
        p = PRICES[model]
        # The anthropic backend sends the paper's system prompt; the openai one sends none by default.
        pt = tokens["prompt_chat"] if model.startswith("claude") else \
            tokens["prompt_chat"] - docs * stats["system_prompt_tokens"]
        api.append({"model": model, "input_per_m": p.input, "output_per_m": p.output,
                    "online_usd": round(cost(p, int(pt), int(tokens["output"]))),
                    "batch_usd": round(cost(p, int(pt), int(tokens["output"]), batch=True))})

    cpu = {}
    if measured.get("distill"):
        rows = measured["distill"]["batching"]["rows"]
        best = max(rows, key=lambda r: r["tokens_per_s"])
        cpu["distill_smollm2_tok_s"] = best["tokens_per_s"]
        cpu["distill_smollm2_batch"] = best["batch_size"]
        cpu["distill_300k_days_here"] = round(tokens["output"] / best["tokens_per_s"] / 86400, 1)
    if measured.get("train"):
        r = measured["train"]["results"]["nift"]
        cpu["train_smollm2_tok_s"] = round(r["tokens_per_s"], 1)
        cpu["train_smollm2_threads"] = measured["train"]["threads"]
        cpu["train_smollm2_mfu_of_measured_matmul"] = round(r["mfu_measured_matmul"], 4)
        cpu["train_300k_3_epochs_days_here"] = round(tokens["train_total"] / r["tokens_per_s"] / 86400, 1)
    if measured.get("distill_ray"):
        cpu["ray_over_one_process"] = measured["distill_ray"]["ratio_ray_over_one_process"]
    return {"tokens": {k: round(v) for k, v in tokens.items()}, "teacher_70b_vllm_h100": teacher,
            "teacher_8b_vllm_h100_gpu_hours": round(teacher_8b_h, 1), "students_h100": students, "api": api,
            "measured_cpu": cpu}


# ------------------------------------------------------------------------------------------------ print


def markdown(stats: list[dict], p: dict, a: argparse.Namespace) -> str:
    out = [f"Corpus sample: {stats[0]['documents']} OpenWebText documents, cut by `nift prepare` (25-75%); "
           f"teacher output = the remainder capped at {a.max_tokens} tokens; training sequences capped at "
           f"{a.max_length}.", "",
           "| tokenizer | words (mean) | prompt tokens mean / p50 / p90 | remainder tokens mean / p50 / p90 | "
           "teacher output mean (capped share) | chat overhead | train sequence mean (truncated share) |",
           "|---|---|---|---|---|---|---|"]
    for s in stats:
        pr, re_, to, tr = s["prompt_tokens"], s["remainder_tokens"], s["teacher_output_tokens"], \
            s["train_sequence_tokens"]
        out.append(f"| {s['what']} | {s['words']['mean']:.0f} | {pr['mean']:.0f} / {pr['p50']} / {pr['p90']} | "
                   f"{re_['mean']:.0f} / {re_['p50']} / {re_['p90']} | {to['mean']:.0f} "
                   f"({s['capped_at_max_tokens']:.0%}) | {s['chat_overhead_tokens']} | {tr['mean']:.0f} "
                   f"({s['train_truncated']:.0%}) |")
    t = p["tokens"]
    out += ["", f"**Tokens for {a.docs:,} documents** (Qwen2.5 tokenizer as the Llama-3 proxy): prompts "
            f"{t['prompt'] / 1e6:,.0f}M ({t['prompt_chat'] / 1e6:,.0f}M as chat requests with the paper's system "
            f"prompt), teacher output {t['output'] / 1e6:,.0f}M, training {t['train_per_epoch'] / 1e6:,.0f}M per "
            f"epoch, {t['train_total'] / 1e6:,.0f}M over {a.epochs:g} epochs.", ""]
    te = p["teacher_70b_vllm_h100"]
    out += ["| teacher | basis | GPU-hours | on 8 H100 | cost at "
            f"${a.gpu_hour_usd:.2f}/GPU-h |", "|---|---|---|---|---|",
            f"| Llama-3.1-70B, vLLM, H100 (TP=4) | PUBLISHED {te['published_output_tok_s_per_gpu']:.0f} output "
            f"tok/s/GPU | {te['gpu_hours']:,.1f} | {te['wall_hours_on_8_gpus']:,.1f} h | ${te['usd']:,} |",
            f"| same tokens, compute floor | 2N FLOPs/token at {a.hfu:.0%} of bf16 peak (ASSUMED) | "
            f"{te['compute_floor_gpu_hours']:,.1f} | {te['compute_floor_gpu_hours'] / 8:,.1f} h | "
            f"${te['compute_floor_gpu_hours'] * a.gpu_hour_usd:,.0f} |",
            f"| Llama-3.1-8B, vLLM, H100 (TP=1) | PUBLISHED {VLLM_8B_TP1_OUTPUT_TOK_S:,.0f} output tok/s/GPU | "
            f"{p['teacher_8b_vllm_h100_gpu_hours']:,.1f} | {p['teacher_8b_vllm_h100_gpu_hours'] / 8:,.1f} h | "
            f"${p['teacher_8b_vllm_h100_gpu_hours'] * a.gpu_hour_usd:,.0f} |", ""]
    out += [f"| student | method | executed PFLOPs | GPU-hours at {a.hfu:.0%} of H100 bf16 peak (ASSUMED) | "
            f"on 8 H100 | cost at ${a.gpu_hour_usd:.2f}/GPU-h |", "|---|---|---|---|---|---|"]
    for name, rows in p["students_h100"].items():
        for method, r in rows.items():
            out.append(f"| {name} | {method} | {r['pflops']:,} | {r['gpu_hours']:,.1f} | "
                       f"{r['wall_hours_on_8_gpus']:,.1f} h | ${r['usd']:,} |")
    out += ["", f"| API teacher | $/M in | $/M out | {a.docs:,} docs online | Batch API (half) |",
            "|---|---|---|---|---|"]
    for r in p["api"]:
        out.append(f"| {r['model']} | {r['input_per_m']} | {r['output_per_m']} | ${r['online_usd']:,} | "
                   f"${r['batch_usd']:,} |")
    c = p["measured_cpu"]
    if c:
        out += ["", "MEASURED on this 2-core CPU (bench/results): "
                + "; ".join(filter(None, [
                    c.get("distill_smollm2_tok_s") and f"SmolLM2-135M teacher {c['distill_smollm2_tok_s']} "
                    f"tok/s at batch {c['distill_smollm2_batch']} (300k documents: "
                    f"{c['distill_300k_days_here']} days here)",
                    c.get("train_smollm2_tok_s") and f"SmolLM2-135M LoRA student {c['train_smollm2_tok_s']} "
                    f"tok/s on {c['train_smollm2_threads']} thread ({c['train_smollm2_mfu_of_measured_matmul']:.1%}"
                    f" of a measured bf16 matmul; 300k x 3 epochs: {c['train_300k_3_epochs_days_here']} days here)",
                    c.get("ray_over_one_process") and f"Ray pool (2 workers x 1 thread) / one process (2 threads): "
                    f"{c['ray_over_one_process']:.2f}x",
                ])) + "."]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=300_000)
    ap.add_argument("--corpus", type=Path, default=SHARED / "data" / "corpus" / "openwebtext_800.jsonl")
    ap.add_argument("--max-tokens", type=int, default=512, help="teacher max_tokens (nift's default)")
    ap.add_argument("--max-length", type=int, default=1024, help="training max length (nift's default)")
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--hfu", type=float, default=0.40, help="ASSUMED share of the bf16 peak sustained")
    ap.add_argument("--gpu-hour-usd", type=float, default=2.50, help="ASSUMED price of one H100-hour")
    ap.add_argument("--markdown", action="store_true", help="print the tables as Markdown (docs/scaling.md)")
    ap.add_argument("--json", type=Path, default=RESULTS / "scaling.json")
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not a.corpus.is_file():
        print(f"corpus sample not found: {a.corpus} (set NIFT_SHARED or --corpus)", file=sys.stderr)
        return 2
    rows = prepared_rows(a.corpus)
    stats = [token_stats(rows, name, a.max_tokens, a.max_length) for name in TOKENIZERS]
    measured = {k: json.loads((RESULTS / f"{k}.json").read_text()) for k in ("distill", "train", "distill_ray")
                if (RESULTS / f"{k}.json").is_file()}
    p = plan(stats[0], a.docs, a.epochs, a.hfu, a.gpu_hour_usd, measured)
    result = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
              "token_stats": stats, "plan": p}
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(stats, p, a) if a.markdown else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
