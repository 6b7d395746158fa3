"""The measured work of bench/gpu.py: model shapes, the FLOP count, and one function per arm. Each function runs in
its own forked child of bench/gpu.py and returns a JSON-able dict; none is meant to be run directly.

Reused rather than copied: nift's own stages (`nift.train.run`, `nift.merge`, the distill engine's `hf` backend),
and the CPU benchmarks' helpers (bench/train.py's step probe, bench/distill.py's engine-vs-direct generation,
bench/merge.py's copy / merge / stage kinds and RSS sampler), so the GPU figures measure the code paths the CPU ones
measure.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


def bench_module(name: str) -> Any:
    """bench/<name>.py as a module (by path: bench/ is no package, and names like `merge` are too generic to put on
    sys.path)."""
    key = f"nift_bench_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, BENCH / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[key] = mod
        spec.loader.exec_module(mod)
    return sys.modules[key]


# ---------------------------------------------------------------------------------------------------- shapes

# The public configs of the models whose shapes are measured (weights are random: no hub here or on the GPU
# machine). Token ids come from the carried SmolLM2 tokenizer (49,152 entries), which the larger vocabularies cover,
# so the output heads cost what the real models' do.
SHAPES: dict[str, dict[str, Any]] = {
    "llama3-8b": {  # meta-llama/Meta-Llama-3-8B
        "model_type": "llama", "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
        "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
        "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0},
    },
    "llama3-1b": {  # meta-llama/Llama-3.2-1B
        "model_type": "llama", "vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192,
        "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
        "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "tie_word_embeddings": True,
        "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    },
    "gemma3-270m": {  # google/gemma-3-270m
        "model_type": "gemma3_text", "vocab_size": 262144, "hidden_size": 640, "intermediate_size": 2048,
        "num_hidden_layers": 18, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256,
        "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
        "query_pre_attn_scalar": 256, "sliding_window": 512, "hidden_activation": "gelu_pytorch_tanh",
        "layer_types": (["sliding_attention"] * 5 + ["full_attention"]) * 3,
        "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
    },
}

# --tiny: the same architectures, a few layers and a narrow width, so the CPU walks every code path in seconds.
TINY: dict[str, dict[str, Any]] = {
    "llama3-8b": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                  "num_key_value_heads": 2, "head_dim": 16},
    "llama3-1b": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                  "num_key_value_heads": 2, "head_dim": 8},
    "gemma3-270m": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
                    "num_key_value_heads": 1, "head_dim": 32, "query_pre_attn_scalar": 32, "sliding_window": 16,
                    "layer_types": ["sliding_attention", "full_attention"]},
}


def shape(name: str, tiny: bool, vocab: int) -> dict[str, Any]:
    cfg = {**SHAPES[name], **(TINY[name] if tiny else {})}
    if tiny:
        cfg["vocab_size"] = vocab  # the (cut) tokenizer's
    return cfg


def matmul_params(cfg: dict[str, Any]) -> int:
    """Weights that take part in a matrix product per token: every linear layer and the output head (tied or not);
    the embedding lookup and the norms do no multiply-adds."""
    h, hd = cfg["hidden_size"], cfg["head_dim"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    per_layer = 2 * h * q + 2 * h * kv + 3 * h * cfg["intermediate_size"]
    return cfg["num_hidden_layers"] * per_layer + h * cfg["vocab_size"]


def flops_per_token(cfg: dict[str, Any], lengths: list[int]) -> dict[str, float]:
    """Model FLOPs per trained token of LoRA on a frozen base (the FLOP count behind every MFU figure here).

    Linear: 4N (forward 2N, backward through the activations 2N; the frozen base has no weight gradients; LoRA's
    own products, about 0.2% at r 8, are left out). Attention scores: causal within each example (no attention
    across packed examples; a sliding window where the layer has one), QK^T and AV, forward 4·ctx·d_q per token
    and layer, backward twice that. Gradient checkpointing's recomputation is not counted (it is overhead)."""
    n = matmul_params(cfg)
    q = cfg["num_attention_heads"] * cfg["head_dim"]
    kinds = cfg.get("layer_types") or ["full_attention"] * cfg["num_hidden_layers"]
    window = cfg.get("sliding_window") or 0

    def ctx(length: int, w: int) -> int:  # sum over positions of the keys each one attends to
        if not w or w >= length:
            return length * (length + 1) // 2
        return w * (w + 1) // 2 + (length - w) * w

    total = sum(lengths) or 1
    attn = sum(12 * q * ctx(n_tok, window if k == "sliding_attention" else 0) for n_tok in lengths for k in kinds)
    return {"linear": 4.0 * n, "attention": attn / total, "total": 4.0 * n + attn / total, "matmul_params": n}


# ------------------------------------------------------------------------------------------------ the device


def probe(tiny: bool, dtype: str) -> dict[str, Any]:
    """What the numbers were measured on, and a measured matmul rate in the training precision (the achievable
    ceiling)."""
    import torch

    out: dict[str, Any] = {"cuda": torch.cuda.is_available(), "torch_cuda": torch.version.cuda}
    if out["cuda"]:
        p = torch.cuda.get_device_properties(0)
        out.update(name=p.name, capability=f"{p.major}.{p.minor}", memory_gib=round(p.total_memory / 2**30, 1),
                   multiprocessors=p.multi_processor_count, devices=torch.cuda.device_count())
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm,power.limit",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
            out["nvidia_smi"] = smi.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out["nvidia_smi"] = None
        dev, n = "cuda", 8192
    else:
        import platform

        out.update(name=platform.processor() or platform.machine(), threads=torch.get_num_threads())
        dev, n = "cpu", 512 if tiny else 2048
    a = torch.randn(n, n, dtype=getattr(torch, dtype), device=dev)
    b = torch.randn(n, n, dtype=getattr(torch, dtype), device=dev)
    for _ in range(3):
        a @ b
    reps = 10

    def sync() -> None:
        if dev == "cuda":
            torch.cuda.synchronize()

    sync()
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync()
    out["matmul_flops"] = 2 * n**3 * reps / (time.perf_counter() - t)
    out["matmul_size"], out["matmul_dtype"] = n, dtype
    return out


# Dense bf16 peaks from the vendors' datasheets (no sparsity), by the name torch reports; the first match counts
# (GH200 matches H200).
DATASHEET_BF16 = [("H200 NVL", 835.0e12), ("H200", 989.4e12), ("H100 PCIe", 756.0e12), ("H100 NVL", 835.0e12),
                  ("H100", 989.4e12), ("H800", 989.4e12), ("A100", 312.0e12), ("A800", 312.0e12),
                  ("L40S", 362.1e12), ("L4", 121.0e12), ("A10G", 70.0e12), ("B200", 2250.0e12)]


def datasheet_peak(name: str) -> float | None:
    for key, peak in DATASHEET_BF16:
        if key in (name or ""):
            return peak
    return None


# --------------------------------------------------------------------------------------------- the models


def build_model(folder: Path, cfg: dict[str, Any], tokenizer: Path, shard: str, dtype: str) -> dict[str, Any]:
    """A randomly initialised model of `cfg`'s shape, saved as a sharded HF folder with the tokenizer.
    Initialised on the GPU where there is one (an 8B init on the CPU takes minutes)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(tokenizer)
    kw = {k: v for k, v in cfg.items() if k != "model_type"}
    conf = AutoConfig.for_model(cfg["model_type"], bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                pad_token_id=tok.pad_token_id, **kw)
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(conf, dtype=getattr(torch, dtype))
    model.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                               pad_token_id=tok.pad_token_id)
    params = sum(p.numel() for p in model.parameters())
    shutil.rmtree(folder, ignore_errors=True)
    model.save_pretrained(folder, max_shard_size=shard)
    tok.save_pretrained(folder)
    del model
    files = list(folder.glob("*.safetensors"))
    return {"params": params, "shards": len(files), "gib": sum(f.stat().st_size for f in files) / 2**30,
            "seconds": time.perf_counter() - t0, "device": device}


# -------------------------------------------------------------------------------------------------- training


def _probe_callback() -> Any:
    return bench_module("train")._probes()


def _rows(data: Path, n: int) -> list[dict[str, Any]]:
    return [json.loads(x) for x in data.read_text(encoding="utf-8").splitlines()[:n]]


def train_nift(model: str, data: Path, out: Path, hyper: dict[str, Any]) -> dict[str, Any]:
    """`nift train` as a user runs it, on its defaults (packing, per-example attention, head at scored positions)."""
    import nift.train.stage
    from nift.train.config import TrainConfig

    probe = _probe_callback()
    base = nift.train.stage.callbacks
    nift.train.stage.callbacks = lambda log_path: [*base(log_path), probe]
    n = hyper["examples"]
    subset = out / "pairs.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    subset.write_text("".join(json.dumps(r) + "\n" for r in _rows(data, n)), encoding="utf-8")
    cfg = TrainConfig(model=model, data=str(subset), epochs=1, max_length=hyper["max_length"],
                      per_device_batch_size=hyper["batch"], grad_accum=hyper["grad_accum"], lr=hyper["lr"],
                      lora_r=hyper["lora_r"], lora_alpha=hyper["lora_alpha"], lora_dropout=hyper["lora_dropout"],
                      precision=hyper["precision"], gradient_checkpointing=True, eval_fraction=0.0, logging_steps=1,
                      save_steps=10**6, seed=hyper["seed"], progress=False)
    res = nift.train.run(cfg, out, force=True, log=lambda *_: None)
    stats = res.manifest["stats"]
    return {**probe.result(), "final_loss": stats["final_logged_loss"], "examples": stats["examples"]["train"],
            "packing": stats["packing"], "device": stats["device"]}


def _dtype(hyper: dict[str, Any]) -> Any:
    import torch

    return torch.bfloat16 if hyper["precision"] == "bf16" else torch.float32


def _lora(hyper: dict[str, Any]) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=hyper["lora_r"], lora_alpha=hyper["lora_alpha"], lora_dropout=hyper["lora_dropout"],
                      target_modules="all-linear", task_type="CAUSAL_LM")


def train_trl(model: str, data: Path, out: Path, hyper: dict[str, Any], segments: bool = False) -> dict[str, Any]:
    """TRL's SFTTrainer as its docs recommend for speed and memory: best-fit-decreasing packing into rows of
    max_length (which turns on padding-free batches), loss on the completion only, the frozen base in bf16.

    TRL pairs padding-free with FlashAttention's variable-length kernel; neither flash-attn nor the hub's kernels
    can be installed on the lent machine. `trl` is what TRL then runs there: torch's sdpa over each packed row with
    transformers' block-diagonal mask (every block of the row computed). `trl-seg` stands in for the kernel TRL
    recommends: nift's per-example sdpa (`nift.train.packing.segment_attention`), which costs what varlen attention
    does, so that row isolates the trainers from the attention kernel."""
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, PrinterCallback
    from trl import SFTConfig, SFTTrainer

    rows = _rows(data, hyper["examples"])
    ds = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    probe = _probe_callback()
    init: dict[str, Any] = {"dtype": _dtype(hyper)}
    if segments:
        from transformers import AttentionInterface

        from nift.train.packing import SEGMENT_ATTENTION, segment_attention

        AttentionInterface.register(SEGMENT_ATTENTION, segment_attention)
        init["attn_implementation"] = SEGMENT_ATTENTION
    args = SFTConfig(
        output_dir=str(out), per_device_train_batch_size=hyper["batch"], gradient_accumulation_steps=hyper[
            "grad_accum"], learning_rate=hyper["lr"], lr_scheduler_type="cosine", num_train_epochs=1,
        max_length=hyper["max_length"], packing=True, packing_strategy="bfd", padding_free=True,
        completion_only_loss=True, bf16=hyper["precision"] == "bf16", gradient_checkpointing=True, logging_steps=1,
        save_strategy="no", report_to="none", seed=hyper["seed"], include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0, model_init_kwargs=init, disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=AutoTokenizer.from_pretrained(
        model), peft_config=_lora(hyper), callbacks=[probe])
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    attn = trainer.model.get_base_model().config._attn_implementation
    return {**probe.result(), "final_loss": losses[-1] if losses else None, "examples": len(rows),
            "packed_rows": len(trainer.train_dataset), "attention": attn}


def train_plain(model: str, data: Path, out: Path, hyper: dict[str, Any]) -> dict[str, Any]:
    """What one writes with transformers alone: prompt + completion + EOS, labels masked on the prompt, batches
    padded to their longest example, PEFT LoRA, `Trainer`; the same hyperparameters as the other arms."""
    import torch
    from peft import get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        PrinterCallback,
        Trainer,
        TrainingArguments,
    )

    tok = AutoTokenizer.from_pretrained(model)
    feats = []
    for r in _rows(data, hyper["examples"]):
        p = tok(r["prompt"])["input_ids"]
        c = tok(r["completion"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        feats.append({"input_ids": (p + c)[: hyper["max_length"]],
                      "labels": ([-100] * len(p) + c)[: hyper["max_length"]]})
    lm = get_peft_model(AutoModelForCausalLM.from_pretrained(model, dtype=_dtype(hyper)), _lora(hyper))
    probe = _probe_callback()
    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=hyper["batch"], gradient_accumulation_steps=hyper[
            "grad_accum"], learning_rate=hyper["lr"], lr_scheduler_type="cosine", num_train_epochs=1,
        bf16=hyper["precision"] == "bf16", gradient_checkpointing=True,
        gradient_checkpointing_kwargs={"use_reentrant": False}, logging_steps=1, save_strategy="no",
        report_to="none", seed=hyper["seed"], include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0, remove_unused_columns=False, disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = Trainer(model=lm, args=args, train_dataset=feats, callbacks=[probe],
                      data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100))
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    return {**probe.result(), "final_loss": losses[-1] if losses else None, "examples": len(feats)}


TRAIN_ARMS = {"nift": train_nift, "trl": train_trl, "trl-seg": functools.partial(train_trl, segments=True),
              "plain": train_plain}


# ------------------------------------------------------------------------------------------------ generation


def generate(model: str, prompts: list[str], batch: int, max_new: int, reps: int) -> dict[str, Any]:
    """nift's `hf` backend through the distill engine (bucketing, store, bookkeeping) against the same batched
    `model.generate` calls made directly: bench/distill.py's pair of measurements, on this model."""
    import statistics

    from nift.llm.backends.hf import HFBackend
    from nift.llm.config import BackendConfig

    dist = bench_module("distill")
    cfg = BackendConfig(backend="hf", model=model, max_tokens=max_new, batch_size=batch, endpoint="completions")
    backend = HFBackend(cfg, log=lambda *_: None)
    backend.load()
    dist._direct(backend, prompts[:batch], batch, 2)  # warm-up: kernel choice, allocator growth
    direct, engine = [], []
    for rep in range(reps):  # interleaved, order alternating
        pair = [lambda: direct.append(dist._direct(backend, prompts, batch, max_new)),
                lambda: engine.append(dist._engine(backend, cfg, prompts))]
        for run in pair if rep % 2 == 0 else reversed(pair):
            run()
    d = [tok / s for s, tok in direct]
    e = [tok / s for s, tok in engine]
    return {"prompts": len(prompts), "batch": batch, "max_new_tokens": max_new, "device": backend.device,
            "dtype": backend._dtype, "plain_tokens_per_s": max(d), "nift_tokens_per_s": max(e),
            "plain_runs": d, "nift_runs": e, "tokens": [direct[0][1], engine[0][1]],
            "ratio_best": max(e) / max(d),
            "ratio_median_of_pairs": statistics.median(x / y for x, y in zip(e, d, strict=True))}


# ----------------------------------------------------------------------------------------------------- merge


def merge_kind(kind: str, model: Path, cfg: dict[str, Any], adapter: Path, out: Path) -> dict[str, Any]:
    """One of bench/merge.py's kinds (copy: plain read + write + fsync of the same shards; stage: `nift merge` as
    the CLI runs it, verification off; merge: the streaming merge alone), with its peak host RSS. The adapter is a
    random rank-8 LoRA on every linear layer in PEFT's format, written first (outside the measurement)."""
    m = bench_module("merge")
    if not (adapter / "adapter_config.json").is_file():
        m.write_adapter(adapter, m.shapes(cfg), model, 8)
    shutil.rmtree(out, ignore_errors=True)
    try:
        return m.run_kind(kind, model, adapter, out)
    finally:
        shutil.rmtree(out, ignore_errors=True)


# ------------------------------------------------------------------------------------------------------ FSDP


def fsdp_smoke(model: str, data: Path, out: Path, steps: int, max_length: int, timeout: float) -> dict[str, Any]:
    """`nift train` with the shipped FSDP config under `accelerate launch`, one process on the one GPU."""
    from nift.artifacts import read_manifest
    from nift.train import accelerate_config

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config("fsdp")),
           "--num_processes", "1", "--main_process_port", str(port), "-m", "nift.cli", "train",
           "--run-dir", str(out), "--model", model, "--data", str(data), "--per-device-batch-size", "8",
           "--grad-accum", "1", "--max-steps", str(steps), "--max-length", str(max_length), "--logging-steps", "1",
           "--lr", "1e-4", "--no-progress", "--eval-fraction", "0"]
    t0 = time.perf_counter()
    # A session of its own, so that on a timeout the launcher's worker goes too (it would hold the GPU).
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        raise TimeoutError(f"accelerate launch ran past {timeout:.0f} s: {stderr[-1500:]}") from None
    if proc.returncode:
        raise RuntimeError(f"accelerate launch exited with {proc.returncode}:\n{stderr[-2500:]}")
    res: dict[str, Any] = {"returncode": proc.returncode, "seconds": time.perf_counter() - t0,
                           "command": " ".join(cmd[1:])}
    stats = read_manifest(out / "train")["stats"]
    rows = [json.loads(x) for x in (out / "train" / "log.jsonl").read_text().splitlines() if x.strip()]
    rates = sorted(r["tokens_per_s"] for r in rows if r.get("tokens_per_s"))
    losses = [r["loss"] for r in rows if "loss" in r]
    res.update(distributed=stats["distributed"], device=stats["device"], world_size=stats["world_size"],
               steps=stats["steps"], tokens_seen=stats["tokens_seen"], losses=losses,
               median_tokens_per_s=rates[len(rates) // 2] if rates else None,
               note=next((x for x in stdout.splitlines() if "accelerate set up" in x), None))
    return res
