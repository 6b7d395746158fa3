"""Merge memory and speed on a synthetic multi-GB model, side by side with the disk-speed limit.

Run as: python bench/merge.py [--size-gb 3] [--shard-gb 0.5] [--dtype bfloat16] [--repeats 2] [--no-naive]

Builds (once, cached in --workdir) a random llama-shaped safetensors checkpoint of about --size-gb in shards of
about --shard-gb, and a rank-16 LoRA adapter on every linear layer in PEFT's format. Then, each in a fresh
subprocess so that its peak RSS is its own:

- copy:   plain read + write of the same shard bytes (16 MiB blocks, fsync per file): the disk-speed limit;
- merge:  `nift.merge.merge_weights`, the streaming merge itself (read, B·A in float32, cast, write, fsync);
- stage:  `nift merge` as the CLI runs it (adds the checks, config/tokenizer files and the manifest's sha256 of
          every written byte), verification off;
- naive:  what one would write with PEFT: load the whole model, PeftModel + merge_and_unload, save_pretrained.

Reports wall time, the ratio to copy, and the RSS added during the work (sampled) against the largest shard and the
whole model. Results go to bench/results/merge.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def llama_config(size_gb: float, dtype: str) -> dict:
    """A TinyLlama-like shape (hidden 2048, MLP 5632, GQA 32/4 heads) with as many layers as fit the size."""
    hidden, inter, vocab, kv = 2048, 5632, 32000, 4
    head = hidden // 32
    per_layer = 2 * hidden * hidden + 2 * hidden * kv * head + 3 * hidden * inter + 2 * hidden
    nbytes = 2 if dtype in ("bfloat16", "float16") else 4
    layers = max(1, round((size_gb * 1e9 / nbytes - 2 * vocab * hidden) / per_layer))
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
            "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": 32,
            "num_key_value_heads": kv, "head_dim": head, "vocab_size": vocab, "max_position_embeddings": 2048,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False, "hidden_act": "silu",
            "bos_token_id": 1, "eos_token_id": 2, "dtype": dtype}


def shapes(cfg: dict) -> list[tuple[str, tuple[int, ...]]]:
    h, i, kvd = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_key_value_heads"] * cfg["head_dim"]
    out = [("model.embed_tokens.weight", (cfg["vocab_size"], h))]
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}."
        out += [(p + "input_layernorm.weight", (h,)), (p + "post_attention_layernorm.weight", (h,)),
                (p + "self_attn.q_proj.weight", (h, h)), (p + "self_attn.k_proj.weight", (kvd, h)),
                (p + "self_attn.v_proj.weight", (kvd, h)), (p + "self_attn.o_proj.weight", (h, h)),
                (p + "mlp.gate_proj.weight", (i, h)), (p + "mlp.up_proj.weight", (i, h)),
                (p + "mlp.down_proj.weight", (h, i))]
    return [*out, ("model.norm.weight", (h,)), ("lm_head.weight", (cfg["vocab_size"], h))]


def build(work: Path, size_gb: float, shard_gb: float, dtype: str) -> tuple[Path, Path]:
    """The synthetic model and adapter, reused when a previous run built the same spec."""
    import torch
    from safetensors.torch import save_file

    spec = {"size_gb": size_gb, "shard_gb": shard_gb, "dtype": dtype, "version": 1}
    model, adapter = work / "model", work / "adapter"
    if (work / "spec.json").is_file() and json.loads((work / "spec.json").read_text()) == spec:
        return model, adapter
    shutil.rmtree(work, ignore_errors=True)
    model.mkdir(parents=True)
    cfg = llama_config(size_gb, dtype)
    tdtype = getattr(torch, dtype)
    print(f"building a {cfg['num_hidden_layers']}-layer llama-shaped model of ~{size_gb} GB in {work} ...", flush=True)
    gen = torch.Generator().manual_seed(0)
    groups: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for name, shape in shapes(cfg):
        n = torch.Size(shape).numel() * tdtype.itemsize
        if groups[-1] and size + n > shard_gb * 1e9:
            groups.append([])
            size = 0
        groups[-1].append((name, shape))
        size += n
    weight_map, total = {}, 0
    for k, group in enumerate(groups, start=1):
        fname = f"model-{k:05d}-of-{len(groups):05d}.safetensors"
        tensors = {name: (torch.randn(shape, generator=gen) * 0.02).to(tdtype) for name, shape in group}
        save_file(tensors, str(model / fname), metadata={"format": "pt"})
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        weight_map.update({name: fname for name in tensors})
        del tensors
    (model / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    (model / "config.json").write_text(json.dumps(cfg, indent=2))

    write_adapter(adapter, shapes(cfg), model, 16, gen)
    (work / "spec.json").write_text(json.dumps(spec))
    return model, adapter


def write_adapter(adapter: Path, tensors: list[tuple[str, tuple[int, ...]]], model: Path, r: int,
                  gen=None) -> Path:
    """A random rank-r LoRA adapter in PEFT's format on every linear layer among `tensors` (name, shape)."""
    import torch
    from peft import LoraConfig
    from safetensors.torch import save_file

    gen = gen if gen is not None else torch.Generator().manual_seed(0)
    adapter.mkdir(parents=True, exist_ok=True)
    state = {}
    for name, shape in tensors:
        if name.split(".")[-2] in LINEAR:
            mod = "base_model.model." + name.removesuffix(".weight")
            state[mod + ".lora_A.weight"] = torch.randn((r, shape[1]), generator=gen) * 0.01
            state[mod + ".lora_B.weight"] = torch.randn((shape[0], r), generator=gen) * 0.01
    save_file(state, str(adapter / "adapter_model.safetensors"), metadata={"format": "pt"})
    LoraConfig(r=r, lora_alpha=2 * r, target_modules=LINEAR, base_model_name_or_path=str(model)).save_pretrained(
        str(adapter))
    return adapter


# ------------------------------------------------------------------------------- measured in subprocesses


def do_copy(model: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for f in sorted(model.glob("*.safetensors")):
        with open(f, "rb") as src, open(out / f.name, "wb") as dst:
            while block := src.read(16 << 20):
                dst.write(block)
            dst.flush()
            os.fsync(dst.fileno())


def do_merge(model: Path, adapter: Path, out: Path) -> None:
    from nift.merge import build_plan, check_plan, merge_weights
    from nift.merge.config import MergeConfig

    plan, _, _ = build_plan(MergeConfig(adapter=str(adapter), verify="off", progress=False), out / "run")
    check_plan(plan, log=lambda *_: None)
    merge_weights(plan, out / "model")


def do_stage(model: Path, adapter: Path, out: Path) -> None:
    from nift.merge import run
    from nift.merge.config import MergeConfig

    run(MergeConfig(adapter=str(adapter), verify="off", progress=False), out, force=True, log=lambda *_: None)


def do_naive(model: Path, adapter: Path, out: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(model, dtype=torch.bfloat16)
    m = PeftModel.from_pretrained(m, str(adapter)).merge_and_unload()
    m.save_pretrained(out / "model")


def do_baseline(model: Path, adapter: Path, out: Path) -> None:
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    import nift.merge.stage  # noqa: F401  (the package itself imports its modules lazily)


KINDS = {"copy": lambda m, a, o: do_copy(m, o), "merge": do_merge, "stage": do_stage, "naive": do_naive}


class PeakRSS:
    """Samples this process's RSS every 2 ms in a thread. (ru_maxrss would not do: on Linux a child inherits the
    parent's high-water mark across fork + exec, and the parent holds the model it just generated.)"""

    def __init__(self) -> None:
        import psutil

        self._proc = psutil.Process()
        self.before = self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def run_kind(kind: str, model: Path, adapter: Path, out: Path) -> dict:
    do_baseline(model, adapter, out)  # imports outside the measured region, as in a long-running process
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        KINDS[kind](model, adapter, out)
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rss_before_mib": rss.before / 2**20, "peak_rss_mib": rss.peak / 2**20,
            "peak_above_start_mib": (rss.peak - rss.before) / 2**20}


def child(kind: str, model: Path, adapter: Path, out: Path) -> None:
    print(json.dumps(run_kind(kind, model, adapter, out)))


def measure(kind: str, model: Path, adapter: Path, work: Path) -> dict:
    out = work / f"out-{kind}"
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, __file__, "--child", kind, str(model), str(adapter), str(out)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{proc.stderr[-3000:]}")
    shutil.rmtree(out, ignore_errors=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-gb", type=float, default=3.0)
    ap.add_argument("--shard-gb", type=float, default=0.5)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-naive", action="store_true", help="skip the whole-model PEFT merge")
    ap.add_argument("--workdir", default="/tmp/nift-bench-merge")
    ap.add_argument("--child", nargs=4, metavar=("KIND", "MODEL", "ADAPTER", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, model, adapter, out = args.child
        child(kind, Path(model), Path(adapter), Path(out))
        return

    work = Path(args.workdir)
    model, adapter = build(work, args.size_gb, args.shard_gb, args.dtype)
    shards = sorted(model.glob("*.safetensors"))
    model_mb = sum(f.stat().st_size for f in shards) / 2**20
    shard_mb = max(f.stat().st_size for f in shards) / 2**20
    adapter_mb = (adapter / "adapter_model.safetensors").stat().st_size / 2**20
    print(f"model {model_mb:.0f} MiB in {len(shards)} shards (largest {shard_mb:.0f} MiB), "
          f"adapter {adapter_mb:.0f} MiB", flush=True)
    kinds = ["copy", "merge", "stage"] + ([] if args.no_naive else ["naive"])
    results: dict[str, list[dict]] = {k: [] for k in kinds}
    measure("copy", model, adapter, work)  # warm the page cache so every contender reads from memory alike
    for _ in range(args.repeats):
        for kind in kinds:  # interleaved: a burst of load from other processes hits all kinds alike
            r = measure(kind, model, adapter, work)
            results[kind].append(r)
            print(f"  {kind:6} {r['seconds']:7.2f} s  peak RSS {r['peak_rss_mib']:6.0f} MiB "
                  f"({r['peak_above_start_mib']:+.0f} MiB during the work)", flush=True)

    best = {k: min(v, key=lambda r: r["seconds"]) for k, v in results.items()}
    low = {k: min(r["peak_above_start_mib"] for r in v) for k, v in results.items()}
    copy_s = best["copy"]["seconds"]
    print(f"\n{'':8}{'time s':>9}{'x copy':>9}{'+RSS MiB':>10}{'/ shard':>9}{'/ model':>9}")
    for kind in kinds:
        print(f"{kind:8}{best[kind]['seconds']:9.2f}{best[kind]['seconds'] / copy_s:9.2f}{low[kind]:10.0f}"
              f"{low[kind] / shard_mb:9.2f}{low[kind] / model_mb:9.2f}")
    print(f"(time: best of {args.repeats}; +RSS: peak RSS during the work minus RSS before it, python + torch + "
          f"transformers + peft already imported (~{best['merge']['rss_before_mib']:.0f} MiB); copy = read + write "
          "+ fsync of the same bytes)")
    print(f"\nmerge / copy time ratio: {best['merge']['seconds'] / copy_s:.2f}; merge +RSS {low['merge']:.0f} MiB "
          f"for a {model_mb:.0f} MiB model (largest shard {shard_mb:.0f} MiB, adapter {adapter_mb:.0f} MiB)")
    out = ROOT / "bench" / "results" / "merge.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": {k: v for k, v in vars(args).items() if k != "child"},
                               "model_mib": model_mb, "largest_shard_mib": shard_mb, "adapter_mib": adapter_mb,
                               "shards": len(shards), "runs": results, "best_time": best,
                               "lowest_rss_above_start_mib": low}, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
