"""Benchmark `nift train` against a plain TRL SFTTrainer set up the naive way, side by side.

Run as: python bench/train.py [--examples 64] [--threads 1] [--arms trl nift nift-padded]

Same student (SmolLM2-135M on CPU), same real continuations, same hyperparameters (LoRA r 8 / alpha 16 / dropout 0
on all linear layers, per-device batch 8 x grad-accum 4, lr 5e-5 cosine, max length 1024, bf16 autocast, gradient
checkpointing, seed 42), each arm in a fresh process; trl and nift run at the same time (one thread each) so that
both see the same load on a shared machine, nift-padded after them:

- trl: `SFTTrainer` on a prompt/completion dataset with its defaults: pad to the longest example of each batch, no
  packing, no padding-free; the model loaded the plain way (`from_pretrained(path)`, fp32 weights).
- nift: `nift train` with its defaults (frozen base stored in bf16, padding-free packing with attention per
  example, the output head only at completion positions).
- nift-padded: `nift train --no-packing`, to show what packing alone is worth.

Data: no distill output exists on this machine, so the pairs are real OpenWebText documents from
../shared/data/corpus, cut by `nift prepare` (the paper's 25-75% cut): prompt = the last <= 200 words of the prompt,
continuation = the first <= 100 words of the document's own remainder (standing in for a teacher's continuation).
Nothing is truncated at 1024 tokens, so every arm trains on exactly the same tokens.

Measured per arm: steady-state throughput in real (unpadded) tokens, from the end of the first micro-batch to the
end of the last (the first one is warm-up), per second of the process's own CPU time (the headline: on a machine
shared with other work, wall time mostly measures the others) and per wall-clock second; peak resident memory while
training (sampled every 20 ms) and its growth over the resident memory at the start of training.

FLOP utilisation uses 4N FLOPs per trained token (LoRA: forward 2N, backward through activations 2N, no weight
gradients for the frozen base; N = all parameters, the tied output head included; every real token, prompt or
completion, goes forward and backward), per CPU-second, against (a) the CPU's theoretical bf16 peak, AMX: 1024
FLOP/cycle/core x the nominal clock from /proc/cpuinfo x threads, and (b) a measured 2048^3 bf16 matmul with the same
threads. Gradient checkpointing recomputes the forward pass (2N more), which the 4N convention does not count.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NIFT_SHARED", ROOT.parent / "shared"))
MODEL = "smollm2-135m-instruct"
HYPER = {"per_device_batch_size": 8, "grad_accum": 4, "lr": 5e-5, "max_length": 1024, "lora_r": 8,
         "lora_alpha": 16, "lora_dropout": 0.0, "seed": 42}


# ------------------------------------------------------------------------------------------------- data


def make_pairs(n: int, out: Path, prompt_words: int = 200, completion_words: int = 100) -> Path:
    """n real prompt/continuation pairs: `nift prepare` on OpenWebText, then word limits (see the docstring)."""
    from nift.io import read_jsonl
    from nift.prepare import PrepareConfig
    from nift.prepare import run as prepare

    corpus = SHARED / "data" / "corpus" / "openwebtext_800.jsonl"
    prepare(PrepareConfig(input=[str(corpus)], n_docs=n, progress=False), out, log=lambda *_: None)
    rows = []
    for r in read_jsonl(out / "prepare" / "data.jsonl"):
        prompt = " ".join(r["prompt"].split()[-prompt_words:])
        completion = " " + " ".join(r["reference"].split()[:completion_words])
        rows.append({"id": r["id"], "prompt": prompt, "completion": completion})
    path = out / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------- measurement


def _probes():
    """A step timer (time and real tokens seen at the end of every micro-batch) and a resident-memory sampler; on a
    GPU also the peak GPU memory of training (weights included), and each mark waits for the GPU to finish, since
    its work is queued asynchronously."""
    import psutil
    import torch
    from transformers import TrainerCallback

    proc = psutil.Process()
    cuda = torch.cuda.is_available()

    class Probe(TrainerCallback):
        def __init__(self):
            self.marks: list[tuple[float, float, int]] = []
            self.rss_start = 0
            self.rss_peak = 0
            self._stop = threading.Event()

        def _sample(self):
            while not self._stop.is_set():
                self.rss_peak = max(self.rss_peak, proc.memory_info().rss)
                time.sleep(0.02)

        def on_train_begin(self, args, state, control, **kw):
            self.rss_start = self.rss_peak = proc.memory_info().rss
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            threading.Thread(target=self._sample, daemon=True).start()

        def _mark(self, state):
            if cuda:
                torch.cuda.synchronize()
            self.marks.append((time.perf_counter(), time.process_time(), state.num_input_tokens_seen))

        def on_substep_end(self, args, state, control, **kw):
            self._mark(state)

        def on_step_end(self, args, state, control, **kw):
            self._mark(state)

        def on_train_end(self, args, state, control, **kw):
            self._stop.set()

        def result(self) -> dict:
            (t0, c0, n0), (t1, c1, n1) = self.marks[0], self.marks[-1]
            return {"tokens": n1 - n0, "tokens_total": n1, "seconds": t1 - t0, "tokens_per_s": (n1 - n0) / (t1 - t0),
                    "cpu_seconds": c1 - c0, "tokens_per_cpu_s": (n1 - n0) / (c1 - c0),
                    "micro_batches_timed": len(self.marks) - 1, "rss_start_mb": self.rss_start / 2**20,
                    "rss_peak_mb": self.rss_peak / 2**20, "rss_growth_mb": (self.rss_peak - self.rss_start) / 2**20,
                    "gpu_peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
                    "gpu_peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if cuda else None}

    return Probe()


def child_nift(data: Path, out: Path, steps: int, packing: bool) -> dict:
    import nift.train.stage
    from nift.train.config import TrainConfig

    probe = _probes()
    base = nift.train.stage.callbacks
    nift.train.stage.callbacks = lambda log_path: [*base(log_path), probe]
    cfg = TrainConfig(model=MODEL, data=str(data), max_steps=steps, packing=packing, precision="bf16",
                      gradient_checkpointing=True, eval_fraction=0.0, logging_steps=1, save_steps=10_000,
                      progress=False, **HYPER)
    res = nift.train.run(cfg, out, force=True, log=lambda *_: None)
    return {**probe.result(), "final_loss": res.manifest["stats"]["final_logged_loss"]}


def child_trl(data: Path, out: Path, steps: int) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from nift.models import resolve

    path = resolve(MODEL).path
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    rows = [json.loads(x) for x in data.read_text().splitlines()]
    ds = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    probe = _probes()
    args = SFTConfig(
        output_dir=str(out), per_device_train_batch_size=HYPER["per_device_batch_size"],
        gradient_accumulation_steps=HYPER["grad_accum"], learning_rate=HYPER["lr"], lr_scheduler_type="cosine",
        max_steps=steps, max_length=HYPER["max_length"], packing=False, padding_free=False, bf16=True,
        gradient_checkpointing=True, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
        seed=HYPER["seed"], include_num_input_tokens_seen="non_padding", dataloader_num_workers=0,
    )
    lora = LoraConfig(r=HYPER["lora_r"], lora_alpha=HYPER["lora_alpha"], lora_dropout=HYPER["lora_dropout"],
                      target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=lora,
                         callbacks=[probe])
    trainer.train()
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    return {**probe.result(), "final_loss": losses[-1] if losses else None}


# ----------------------------------------------------------------------------------------------- peaks


def cpu_peak(threads: int) -> dict:
    """Theoretical bf16 peak from the ISA and the nominal clock, and a measured large bf16 matmul."""
    import torch

    info = Path("/proc/cpuinfo").read_text()
    ghz = None
    if m := re.search(r"model name\s*:.*@\s*([\d.]+)GHz", info):
        ghz = float(m.group(1))
    elif m := re.search(r"bogomips\s*:\s*([\d.]+)", info):
        ghz = float(m.group(1)) / 2000  # BogoMIPS is twice the clock in MHz on x86
    amx = "amx_bf16" in info
    per_cycle = 1024 if amx else (128 if "avx512_bf16" in info else 64)
    torch.set_num_threads(threads)
    a = torch.randn(2048, 2048, dtype=torch.bfloat16)
    b = torch.randn(2048, 2048, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    t = time.process_time()
    n = 10
    for _ in range(n):
        a @ b
    measured = 2 * 2048**3 * n / (time.process_time() - t)
    return {"clock_ghz": ghz, "isa": "AMX-BF16" if amx else "AVX-512", "flop_per_cycle_per_core": per_cycle,
            "theoretical_flops": per_cycle * (ghz or 0) * 1e9 * threads, "measured_matmul_flops": measured}


# ------------------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--examples", type=int, default=64, help="training examples (8 micro-batches of 8 = 2 steps)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads per arm (1: steadier on a shared machine; both arms get the same)")
    ap.add_argument("--arms", nargs="+", default=["trl", "nift", "nift-padded"])
    ap.add_argument("--parallel", action=argparse.BooleanOptionalAction, default=True,
                    help="run trl and nift at the same time (same machine load); --no-parallel: one after another")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    steps = a.examples // (HYPER["per_device_batch_size"] * HYPER["grad_accum"])
    if a.child:
        import torch

        torch.set_num_threads(a.threads)
        fn = {"trl": lambda: child_trl(Path(a.data), Path(a.out), steps),
              "nift": lambda: child_nift(Path(a.data), Path(a.out), steps, True),
              "nift-padded": lambda: child_nift(Path(a.data), Path(a.out), steps, False)}[a.child]
        print("RESULT " + json.dumps(fn()))
        return

    tmp = Path(tempfile.mkdtemp(prefix="nift-bench-train-"))
    data = make_pairs(a.examples, tmp)
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    results = {}
    # trl and nift run at the same time, one thread each, so that both see the same load from anything else on the
    # machine; the first to finish leaves the other more CPU for its last steps, which favours the slower one.
    groups = [[x for x in a.arms if x in ("trl", "nift")], [x for x in a.arms if x not in ("trl", "nift")]]
    for group in [g for g in groups if g] if a.parallel else [[x] for x in a.arms]:
        print(f"running {' + '.join(group)} ...", flush=True)
        procs = {arm: subprocess.Popen([sys.executable, __file__, "--child", arm, "--data", str(data), "--out",
                                        str(tmp / arm), "--threads", str(a.threads)], env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for arm in group}
        for arm, p in procs.items():
            out, err = p.communicate()
            line = [x for x in out.splitlines() if x.startswith("RESULT ")]
            if p.returncode or not line:
                sys.exit(f"{arm} failed:\n{err[-3000:]}")
            results[arm] = json.loads(line[-1][7:])

    import torch

    from nift.models import resolve

    n_params = _param_count(resolve(MODEL).path)
    peak = cpu_peak(a.threads)
    print(f"\nSmolLM2-135M (N = {n_params / 1e6:.1f}M parameters), {a.examples} real OpenWebText pairs, "
          f"{a.threads} thread(s), torch {torch.__version__}")
    print(f"CPU bf16 peak: {peak['isa']} {peak['flop_per_cycle_per_core']} FLOP/cycle/core x {peak['clock_ghz']} GHz "
          f"x {a.threads} = {peak['theoretical_flops'] / 1e12:.2f} TFLOP/s theoretical; "
          f"measured 2048^3 bf16 matmul {peak['measured_matmul_flops'] / 1e12:.3f} TFLOP/s\n")
    print(f"{'arm':12} {'tok/CPU-s':>9} {'vs trl':>7} {'tok/wall-s':>10} {'vs trl':>7} {'peak RSS MB':>11} "
          f"{'growth MB':>9} {'MFU theor.':>10} {'MFU matmul':>10} {'final loss':>10}")
    base = results.get("trl")
    for arm, r in results.items():
        # FLOP utilisation per CPU-second: the thread's own compute, not the share of it other programs took.
        flops = 4 * n_params * r["tokens_per_cpu_s"]
        r["mfu_theoretical"] = flops / peak["theoretical_flops"] if peak["theoretical_flops"] else None
        r["mfu_measured_matmul"] = flops / peak["measured_matmul_flops"]
        r["speedup_vs_trl"] = r["tokens_per_cpu_s"] / base["tokens_per_cpu_s"] if base else None
        r["wall_speedup_vs_trl"] = r["tokens_per_s"] / base["tokens_per_s"] if base else None
        print(f"{arm:12} {r['tokens_per_cpu_s']:9.1f} {r['speedup_vs_trl'] or 0:6.2f}x {r['tokens_per_s']:10.1f} "
              f"{r['wall_speedup_vs_trl'] or 0:6.2f}x {r['rss_peak_mb']:11.0f} {r['rss_growth_mb']:9.0f} "
              f"{(r['mfu_theoretical'] or 0) * 100:9.2f}% {r['mfu_measured_matmul'] * 100:9.2f}% "
              f"{r['final_loss'] or float('nan'):10.4f}")
    out = ROOT / "bench" / "results" / "train.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"examples": a.examples, "threads": a.threads, "hyperparameters": HYPER,
                               "n_params": n_params, "cpu": peak, "results": results}, indent=2) + "\n")
    print(f"\nwrote {out}")


def _param_count(path: str) -> int:
    from safetensors import safe_open

    with safe_open(str(Path(path) / "model.safetensors"), "pt") as f:
        return sum(_prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118 - no __iter__


def _prod(shape) -> int:
    out = 1
    for s in shape:
        out *= s
    return out


if __name__ == "__main__":
    main()
