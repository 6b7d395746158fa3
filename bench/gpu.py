"""GPU benchmarks in one go: `nift train` vs TRL's SFTTrainer vs plain transformers Trainer, nift's `hf` generation
vs plain batched `generate`, `nift merge` vs a plain read + write of the same shards, and `nift train` with the
shipped FSDP config under `accelerate launch`, on randomly initialised models of real shapes (Llama-3 8B, Llama-3.2
1B, Gemma-3 270M).

Run as: python bench/gpu.py --prepare                  # here, once: wheels + tokenizer + data -> bench/gpu-carry/
        python3 bench/gpu.py [--budget 450]             # on the CUDA machine, bench/gpu-carry carried along
        python bench/gpu.py --tiny                      # on a CPU, tiny shapes, the same code paths (tests run it)

Why this shape: a GPU is lent to this project for minutes, with no network, and only torch, transformers, peft and
accelerate installed. So everything the run needs travels with the tree in bench/gpu-carry/ (git-ignored, about 22
MB): the wheels of the libraries nift is tested with (transformers, peft, accelerate, and TRL, datasets and pydantic
with what they need, which the machine lacks), SmolLM2's tokenizer, and real OpenWebText prompt / continuation pairs
cut by `nift prepare` (mean 794 tokens, at most 1,865). The script installs the wheels into a scratch folder,
re-executes itself on them, and runs each arm in a forked child: an arm that crashes or runs out of memory costs
only itself, every arm's peak GPU memory is its own, and no child pays the imports again. Steps run in order of
importance under a time budget (default 450 s, so the whole run fits in 8 minutes on an H100/H200); a step that
would not fit is skipped and named as skipped. The JSON is rewritten after every step, so a run cut short still
reports what ran.

Measured:
- train, per shape, arms nift / trl / plain (and on the 8B trl-seg, see gpu_work.train_trl): tokens/s from the end
  of the first micro-batch to the end of the last (the GPU synchronised at each mark), peak GPU memory (torch's
  allocator, weights included), and MFU: tokens/s x FLOPs per token (4N + causal attention per example; see
  gpu_work.flops_per_token) over the datasheet's dense bf16 peak, and over a measured 8192^3 bf16 matmul. Same data,
  LoRA r 8 / alpha 16 on all linear layers, max length 2048, micro-batch 8 x accumulation 4, lr 5e-5 cosine, bf16,
  gradient checkpointing, one epoch. Each arm's own notion of a micro-batch: nift's is 8 examples laid end to end;
  TRL's is 8 packed rows of up to 2048 tokens each.
- generation: nift's `hf` backend through the distill engine vs the same batched `generate` calls made directly
  (bench/distill.py's two measurements), greedy, best of interleaved runs.
- merge (8B, bf16): `nift merge` as the CLI runs it (verification off) and the streaming merge alone vs a plain
  read + write + fsync of the same shards: seconds and peak host RSS (bench/merge.py's kinds).
- fsdp: a few steps of `accelerate launch --config_file $(nift accelerate-config fsdp) --num_processes 1`; whether
  accelerate set up FSDP, the loss and tokens/s.

Targets (measured against, not asserted): train on the 8B >= 2x TRL's tokens/s at <= its peak memory and >= 45% MFU;
generation >= 0.95x plain generate; merge <= 1.5x plain read + write.

Output: one JSON (default $OUT/gpu.json when $OUT is set, else bench/results/gpu.json; --tiny: in /tmp) and a
table at the end; every child's output goes to one log beside the JSON (<name>-steps.log).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata as md
import importlib.util
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(BENCH))
CARRY = BENCH / "gpu-carry"
SITE_ENV = "NIFT_GPU_BENCH_SITE"  # set once the carried wheels are installed, so the re-executed script knows
T0_ENV = "NIFT_GPU_BENCH_T0"

# Wheels carried to the GPU machine, at the versions installed here (constraints.txt). The machine has its own
# transformers, peft and accelerate, but nift is tested with these (its transformers predates TrainingArguments'
# `activation_checkpointing`, which nift.train passes); --machine-libs measures the machine's own instead.
TESTED_LIBS = ["transformers", "peft", "accelerate"]
MISSING_THERE = ["trl", "datasets", "dill", "multiprocess", "pydantic", "pydantic-core", "annotated-types",
                 "typing-inspection", "typing-extensions"]
# datasets >= 5.1 needs pyarrow >= 24 (5.2 with pyarrow 22 fails in Dataset.from_list, seen here), and the lent
# machine's pyarrow is of unknown version and too large to carry: 5.0.0, which works with pyarrow 21-26, goes along
# and replaces the tested one where the machine's pyarrow is older than 24.
OLD_PYARROW_DATASETS = ("datasets", "5.0.0", 24)

# The Python distributions of the lent machine's image ('cuda'), as its KINDS.md listed them on 2026-11-17: the
# import audit checks that every distribution the run imports is there or carried.
GPU_IMAGE = frozenset([
    "absl-py", "accelerate", "aiofiles", "aiohappyeyeballs", "aiohttp", "aiosignal", "annotated-doc", "anyio",
    "attrs", "botorch", "build", "certifi", "charset-normalizer", "chex", "click", "cloudpickle", "cmake", "colorama",
    "contourpy", "coverage", "cuda-bindings", "cuda-core", "cuda-pathfinder", "cuda-toolkit", "cupy-cuda13x",
    "cycler", "cython", "diffrax", "e3nn", "einops", "equinox", "etils", "execnet", "filelock", "flatbuffers", "flax",
    "fonttools", "formulaic", "frozenlist", "fsspec", "gpytorch", "grpcio", "h11", "h5py", "hf-xet", "httpcore",
    "httpx", "huggingface-hub", "humanize", "hypothesis", "idna", "imageio", "iniconfig", "interface-meta", "jax",
    "jax-cuda13-pjrt", "jax-cuda13-plugin", "jaxlib", "jaxtyping", "jinja2", "joblib", "kiwisolver", "lazy-loader",
    "lightning", "lightning-utilities", "linear-operator", "lineax", "llvmlite", "lxml", "markdown", "markdown-it-py",
    "markupsafe", "matplotlib", "mdurl", "meson", "ml-dtypes", "mpi4py", "mpmath", "msgpack", "multidict",
    "multipledispatch", "mypy-extensions", "nanobind", "narwhals", "networkx", "ninja", "numba", "numba-cuda",
    "numpy", "numpyro", "nvidia-cublas", "nvidia-cuda-cupti", "nvidia-cuda-nvrtc", "nvidia-cuda-runtime",
    "nvidia-cudnn-cu13", "nvidia-cufft", "nvidia-cufile", "nvidia-curand", "nvidia-cusolver", "nvidia-cusparse",
    "nvidia-cusparselt-cu13", "nvidia-ml-py", "nvidia-nccl-cu13", "nvidia-nvjitlink", "nvidia-nvshmem-cu13",
    "nvidia-nvtx", "onnx", "onnx-ir", "onnxruntime", "onnxscript", "opencv-python-headless", "optax", "opt-einsum",
    "opt-einsum-fx", "optimistix", "orbax-checkpoint", "packaging", "pandas", "pathspec", "patsy", "peft", "pillow",
    "pip", "pluggy", "portalocker", "prometheus-client", "propcache", "protobuf", "psutil", "pyarrow", "pybind11",
    "py-cpuinfo", "pygments", "pyparsing", "pyproject-hooks", "pyre-extensions", "pytest", "pytest-benchmark",
    "pytest-cov", "pytest-mock", "pytest-timeout", "pytest-xdist", "python-dateutil", "pytorch-lightning", "pyyaml",
    "regex", "requests", "rich", "sacrebleu", "safetensors", "scikit-build-core", "scikit-image", "scikit-learn",
    "scipy", "seaborn", "sentencepiece", "sentence-transformers", "setuptools", "shellingham", "simplejson", "six",
    "sortedcontainers", "statsmodels", "sympy", "tabulate", "tensorboard", "tensorboard-data-server", "tensorstore",
    "threadpoolctl", "tifffile", "tiktoken", "timm", "tokenizers", "toolz", "torch", "torchaudio", "torchdiffeq",
    "torch-geometric", "torchmetrics", "torchvision", "tqdm", "transformers", "treescope", "triton", "typer",
    "typing-extensions", "typing-inspect", "urllib3", "uvloop", "wadler-lindig", "werkzeug", "wheel", "wrapt",
    "xarray", "xxhash", "yarl", "zipp"
])

HYPER = {"batch": 8, "grad_accum": 4, "lr": 5e-5, "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "seed": 42}
# Per mode: precision (fp32 for tiny: this CPU's bf16 kernels take seconds for a 64-wide product with a 49k-row
# output head, fp32 a tenth of that), sequence length, training examples per arm, generation (prompts, batch, new
# tokens, interleaved runs), FSDP steps, shard size, the word limits of the pairs (chosen so that every pair fits
# max_length in every arm), and the tokenizer's size (None: SmolLM2's 49,152 entries).
MODES = {
    "gpu": {"precision": "bf16", "max_length": 2048, "examples": 128, "gen": (64, 32, 128, 2), "fsdp_steps": 4,
            "shard": "5GB", "words": (768, 512), "pairs": 160, "vocab": None},
    "tiny": {"precision": "fp32", "max_length": 256, "examples": 32, "gen": (8, 4, 8, 2), "fsdp_steps": 2,
             "shard": "400KB", "words": (48, 24), "pairs": 40, "vocab": 2048},
}


def norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


# ------------------------------------------------------------------------------------------------ the bundle


def prepare_bundle(dest: Path, mode: str, wheels: bool, log=print) -> Path:
    """Tokenizer, pairs, prompts (and wheels) for a run, in `dest`: everything that must travel."""
    from gpu_work import bench_module
    from transformers import AutoTokenizer

    from nift.models import resolve

    m = MODES[mode]
    shutil.rmtree(dest, ignore_errors=True)
    (dest / "tokenizer").mkdir(parents=True)
    src = Path(resolve("smollm2-135m-instruct", log=log).path)
    shutil.copy(src / "tokenizer_config.json", dest / "tokenizer" / "tokenizer_config.json")
    spec = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    if m["vocab"]:
        _cut_bpe(spec, m["vocab"])
    (dest / "tokenizer" / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    tok = AutoTokenizer.from_pretrained(dest / "tokenizer")
    with tempfile.TemporaryDirectory() as tmp:
        pairs = bench_module("train").make_pairs(m["pairs"], Path(tmp), *m["words"])
        rows = [json.loads(x) for x in pairs.read_text(encoding="utf-8").splitlines()]
    lengths = [len(tok(r["prompt"] + r["completion"])["input_ids"]) + 1 for r in rows]
    keep = [(r, n) for r, n in zip(rows, lengths, strict=True) if n <= m["max_length"] - 16]
    (dest / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r, _ in keep), encoding="utf-8")
    manifest = {"mode": mode, "pairs": len(keep), "vocab": len(tok),
                "tokenizer": "SmolLM2-135M-Instruct's" + (f", cut to its first {m['vocab']} entries" if m["vocab"]
                                                          else ""),
                "lengths": [n for _, n in keep], "word_limits": m["words"],
                "prompts": bench_module("distill").prompts(m["gen"][0], 48), "wheels": {}}
    if wheels:
        names = TESTED_LIBS + MISSING_THERE
        pins = [f"{n}=={md.version(n)}" for n in names]
        (dest / "wheels").mkdir()
        # The lent machine runs CPython 3.12 on x86-64 (manylinux): pip picks the wheels for it, not for here.
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
               "3.12", "--implementation", "cp", "--platform", "manylinux_2_28_x86_64", "--platform",
               "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64", "-d", str(dest / "wheels"), *pins]
        subprocess.run(cmd, check=True)
        name, version, _ = OLD_PYARROW_DATASETS
        subprocess.run([*cmd[:cmd.index("-d")], "-d", str(dest / "wheels" / "old-pyarrow"), f"{name}=={version}"],
                       check=True)
        manifest["wheels"] = {n: md.version(n) for n in names}
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1))
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    log(f"bundle: {dest} ({size / 2**20:.1f} MiB, {len(keep)} pairs, {len(manifest['wheels'])} wheels)")
    return dest


def _cut_bpe(spec: dict[str, Any], n: int) -> None:
    """A byte-level BPE tokenizer cut to its first n entries: the merges that build them, in their order, stay. For
    --tiny, whose models would otherwise spend nearly all their time in a 49k-row output head."""
    vocab = {t: i for t, i in spec["model"]["vocab"].items() if i < n}
    merges = [mg for mg in spec["model"]["merges"] if all(x in vocab for x in (*mg, "".join(mg)))]
    spec["model"].update(vocab=vocab, merges=merges)
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["id"] < n]


def install_carried(wheel_dir: Path, machine_libs: bool) -> None:
    """Install the carried wheels into a scratch folder and re-execute on it (before anything is imported, so
    every module comes from one place). A no-op where nothing is missing and --machine-libs is given."""
    wheels = sorted(wheel_dir.glob("*.whl"))
    if os.environ.get(SITE_ENV) or not wheels:
        return
    if machine_libs:
        wheels = [w for w in wheels if norm(w.name.split("-")[0]) not in TESTED_LIBS]
        if all(importlib.util.find_spec(n.replace("-", "_")) for n in ("trl", "datasets", "pydantic")):
            return
    name, _, major = OLD_PYARROW_DATASETS
    try:
        old = int(md.version("pyarrow").split(".")[0]) < major
    except md.PackageNotFoundError:
        old = False
    if old and (alt := sorted((wheel_dir / "old-pyarrow").glob(f"{name}-*.whl"))):
        wheels = [w for w in wheels if not w.name.startswith(f"{name}-")] + alt
        print(f"pyarrow {md.version('pyarrow')} here: carrying {alt[0].name} instead", flush=True)
    site = Path(tempfile.mkdtemp(prefix="nift-gpu-bench-site-"))
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--no-cache-dir", "--target", str(site), *map(str, wheels)], check=True)
    print(f"installed {len(wheels)} carried wheels into {site} in {time.perf_counter() - t:.1f} s", flush=True)
    env = {**os.environ, SITE_ENV: str(site),
           "PYTHONPATH": os.pathsep.join([str(site), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


# ------------------------------------------------------------------------------------------ forked children


def _child_main(conn: Any, fn: Any, args: tuple, log: Path, label: str) -> None:
    with open(log, "a", buffering=1, encoding="utf-8") as f:
        f.write(f"\n===== {label} =====\n")
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    try:
        result = fn(*args)
        conn.send(("ok", result, _top_modules()))
    except BaseException:  # noqa: BLE001 - everything, a SystemExit from a library too, is the arm's failure
        conn.send(("error", traceback.format_exc(), _top_modules()))
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        conn.close()


def _top_modules() -> list[str]:
    return sorted({m.split(".")[0] for m in list(sys.modules)})


class Runner:
    """Steps under a deadline, each in a forked child with a timeout; a record of every step, skipped ones too."""

    RESERVE_S = 8.0  # kept for the report after the last step

    def __init__(self, budget: float, log: Path, t0: float) -> None:
        import torch

        # Forked children skip the imports; that is safe while this process has not initialised CUDA (torch's
        # availability check goes through NVML here, see main). Should a library have initialised it, spawn
        # (NIFT_GPU_BENCH_START=spawn forces that, to test it).
        self.start_method = os.environ.get("NIFT_GPU_BENCH_START") or (
            "spawn" if torch.cuda.is_initialized() else "fork")
        self.deadline = t0 + budget
        self.log = log
        self.steps: list[dict[str, Any]] = []
        self.modules: set[str] = set()

    def left(self) -> float:
        return self.deadline - time.time()

    def skip(self, name: str, reason: str) -> None:
        self.steps.append({"step": name, "status": "skipped", "reason": reason})
        print(f"  {name:34} skipped: {reason}", flush=True)

    def run(self, name: str, estimate: float, fn: Any, *args: Any) -> Any:
        left = self.left() - self.RESERVE_S
        if left < estimate:
            return self.skip(name, f"time budget: ~{estimate:.0f} s needed, {max(left, 0):.0f} s left")
        ctx = multiprocessing.get_context(self.start_method)
        recv, send = ctx.Pipe(duplex=False)
        start = self.log.stat().st_size if self.log.exists() else 0
        t = time.perf_counter()
        proc = ctx.Process(target=_child_main, args=(send, fn, args, self.log, name), daemon=False)
        proc.start()
        send.close()
        status, payload, mods = "timed_out", f"killed after {left:.0f} s (the time budget)", []
        if recv.poll(left):
            try:
                status, payload, mods = recv.recv()
            except EOFError:
                proc.join(5)
                status, payload = "failed", f"the child died (exit code {proc.exitcode})"
        proc.join(30 if status == "ok" else 0)  # a finished child exits by itself; one that timed out does not
        if proc.is_alive():
            proc.kill()
            proc.join(10)
        seconds = time.perf_counter() - t
        self.modules.update(mods)
        rec: dict[str, Any] = {"step": name, "status": "ok" if status == "ok" else "failed", "seconds": seconds}
        if status != "ok":
            tail = self.log.read_text(encoding="utf-8", errors="replace")[start:][-3000:] if self.log.exists() else ""
            rec.update(status="timed_out" if status == "timed_out" else "failed", error=str(payload)[-3000:],
                       log_tail=tail)
            print(f"  {name:34} {rec['status']} after {seconds:.0f} s: {str(payload).strip().splitlines()[-1]}",
                  flush=True)
        else:
            print(f"  {name:34} ok in {seconds:5.1f} s", flush=True)
        self.steps.append(rec)
        return payload if status == "ok" else None


# --------------------------------------------------------------------------------------------------- the run


def versions() -> dict[str, Any]:
    import platform

    import nift

    out: dict[str, Any] = {"python": platform.python_version(), "nift": nift.__version__}
    for n in ("torch", "transformers", "peft", "accelerate", "trl", "datasets", "safetensors", "tokenizers"):
        try:
            out[n] = md.version(n)
        except md.PackageNotFoundError:
            out[n] = None
    return out


def disk(path: Path) -> dict[str, Any]:
    """Where models and merges are written: a tmpfs would make the merge's read + write a memory copy."""
    mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()] if Path(
        "/proc/mounts").is_file() else []
    here = str(path.resolve())
    best = max((m for m in mounts if len(m) > 2 and here.startswith(m[1].rstrip("/") + "/")), key=lambda m: len(m[1]),
               default=None)
    usage = shutil.disk_usage(path)
    return {"path": here, "filesystem": best[2] if best else None, "mount": best[1] if best else None,
            "free_gib": round(usage.free / 2**30, 1)}


def run_all(a: argparse.Namespace, bundle: Path, work: Path, runner: Runner, report: dict[str, Any],
            save: Any) -> None:
    import gpu_work as W

    mode = "tiny" if a.tiny else "gpu"
    m = MODES[mode]
    meta = json.loads((bundle / "manifest.json").read_text())
    pairs, tokenizer = bundle / "pairs.jsonl", bundle / "tokenizer"
    vocab = meta["vocab"]
    hyper = {**HYPER, "precision": m["precision"], "max_length": m["max_length"],
             "examples": min(m["examples"], meta["pairs"])}
    lengths = meta["lengths"][: hyper["examples"]]
    report.update(hyperparameters=hyper, data={"pairs": meta["pairs"], "word_limits": meta["word_limits"],
                                               "mean_tokens": sum(lengths) / len(lengths), "tokenizer":
                                               meta["tokenizer"]})
    wanted = set(a.only.split(",")) if a.only else None

    def want(kind: str) -> bool:
        return wanted is None or kind in wanted

    dtype = "bfloat16" if m["precision"] == "bf16" else "float32"
    dev = runner.run("probe", 15 if mode == "gpu" else 5, W.probe, a.tiny, dtype)
    if dev is None:
        return
    report["device"] = {**dev, "datasheet_bf16_flops": W.datasheet_peak(dev.get("name", "")) if dev["cuda"] else None}
    if mode == "gpu" and not dev["cuda"]:
        report["error"] = "no CUDA device visible: run with --tiny on a CPU"
        return
    save()

    built: dict[str, Path] = {}
    build_est = {"llama3-8b": 60, "llama3-1b": 15, "gemma3-270m": 10} if mode == "gpu" else dict.fromkeys(W.SHAPES, 4)

    def model(name: str) -> Path | None:
        if name not in built:
            cfg = W.shape(name, a.tiny, vocab)
            folder = work / "models" / name
            res = runner.run(f"build {name}", build_est[name], W.build_model, folder, cfg, tokenizer, m["shard"],
                             dtype)
            if res is None:
                return None
            report["models"][name] = {"config": cfg, **res, "flops_per_token": W.flops_per_token(cfg, lengths)}
            built[name] = folder
            save()
        return built[name]

    def measured(kind: str, name: str, label: str, est: float, call: Any) -> Any:
        """Step `label`: `call(folder)` gives the function and arguments to run on model `name`, which is built
        first where needed (and not at all when the step after it would not fit the budget either)."""
        if not want(kind):
            return None
        need = est + (0 if name in built else build_est[name])
        if name not in built and runner.left() - runner.RESERVE_S < need:
            return runner.skip(label, f"time budget: ~{need:.0f} s needed with building {name}, "
                                      f"{max(runner.left() - runner.RESERVE_S, 0):.0f} s left")
        folder = model(name)
        if folder is None:
            return runner.skip(label, f"build {name} did not complete")
        return runner.run(label, est, *call(folder))

    def train(name: str, arm: str) -> None:
        est = {"llama3-8b": 40, "llama3-1b": 25, "gemma3-270m": 20}[name] if mode == "gpu" else 10
        res = measured("train", name, f"train {name} {arm}", est, lambda f: (
            W.TRAIN_ARMS[arm], str(f), pairs, work / "runs" / f"{name}-{arm}", hyper))
        if res is not None:
            report["train"].setdefault(name, {})[arm] = res
            save()

    def merge(kind: str) -> None:
        name = "llama3-8b"
        est = {"copy": 25, "stage": 50, "merge": 45}[kind] if mode == "gpu" else 4
        res = measured("merge", name, f"merge {name} {kind}", est, lambda f: (
            W.merge_kind, kind, f, W.shape(name, a.tiny, vocab), work / "adapter", work / f"merge-{kind}"))
        if res is not None:
            report["merge"].setdefault(name, {})[kind] = res
            save()

    def generate(name: str) -> None:
        n, batch, max_new, reps = m["gen"]
        est = {"llama3-1b": 30, "gemma3-270m": 20}[name] if mode == "gpu" else 8
        res = measured("generate", name, f"generate {name}", est, lambda f: (
            W.generate, str(f), meta["prompts"][:n], batch, max_new, reps))
        if res is not None:
            report["generation"][name] = res
            save()

    def fsdp(name: str) -> None:
        res = measured("fsdp", name, f"fsdp {name}", 60, lambda f: (
            W.fsdp_smoke, str(f), pairs, work / "fsdp", m["fsdp_steps"], m["max_length"],
            max(runner.left() - runner.RESERVE_S - 5, 1)))
        if res is not None:
            report["fsdp"] = {"model": name, **res}
            save()

    # In order of importance: if the budget runs out, what is left out is named in the report.
    train("llama3-8b", "nift")
    train("llama3-8b", "trl")
    merge("copy")
    merge("stage")
    generate("llama3-1b")
    fsdp("llama3-1b")
    train("llama3-8b", "plain")
    train("llama3-8b", "trl-seg")
    merge("merge")
    for name in ("llama3-1b", "gemma3-270m"):
        for arm in ("nift", "trl", "plain"):
            train(name, arm)
    generate("gemma3-270m")


# ---------------------------------------------------------------------------------------------- the report


def derive(report: dict[str, Any]) -> None:
    """Ratios, MFU and the targets, from the raw figures."""
    dev = report.get("device") or {}
    peaks = {"datasheet": dev.get("datasheet_bf16_flops"), "matmul": dev.get("matmul_flops")}
    for name, arms in report["train"].items():
        fl = report["models"][name]["flops_per_token"]["total"]
        for r in arms.values():
            r["tokens_per_micro_batch"] = r["tokens"] / max(r["micro_batches_timed"], 1)
            for k, p in peaks.items():
                r[f"mfu_{k}"] = r["tokens_per_s"] * fl / p if p else None
        for arm, r in arms.items():
            for ref in ("trl", "trl-seg", "plain"):
                if ref in arms and ref != arm:
                    r[f"speed_vs_{ref}"] = r["tokens_per_s"] / arms[ref]["tokens_per_s"]
                    mine, theirs = r.get("gpu_peak_allocated_gib"), arms[ref].get("gpu_peak_allocated_gib")
                    key, mine, theirs = (("gpu_memory", mine, theirs) if mine and theirs else
                                         ("rss_growth", r["rss_growth_mb"], arms[ref]["rss_growth_mb"]))
                    r[f"{key}_vs_{ref}"] = mine / theirs if theirs else None
    for res in report["merge"].values():
        if "copy" in res:
            for r in res.values():
                r["time_vs_copy"] = r["seconds"] / res["copy"]["seconds"]

    t8 = report["train"].get("llama3-8b", {})
    nift8 = t8.get("nift", {})
    targets = [
        ("train llama3-8b: nift tokens/s / TRL's", ">= 2", nift8.get("speed_vs_trl"), lambda v: v >= 2),
        ("train llama3-8b: nift peak GPU memory / TRL's", "<= 1", nift8.get("gpu_memory_vs_trl"), lambda v: v <= 1),
        ("train llama3-8b: nift tokens/s / TRL's with per-example attention", ">= 2", nift8.get("speed_vs_trl-seg"),
         lambda v: v >= 2),
        ("train llama3-8b: nift peak GPU memory / that TRL's", "<= 1", nift8.get("gpu_memory_vs_trl-seg"),
         lambda v: v <= 1),
        ("train llama3-8b: nift MFU (datasheet peak)", ">= 0.45", nift8.get("mfu_datasheet"), lambda v: v >= 0.45),
    ]
    for name, g in report["generation"].items():
        targets.append((f"generate {name}: nift tokens/s / plain generate", ">= 0.95", g["ratio_best"],
                        lambda v: v >= 0.95))
    stage = report["merge"].get("llama3-8b", {}).get("stage", {})
    targets.append(("merge llama3-8b: nift merge time / plain read+write", "<= 1.5", stage.get("time_vs_copy"),
                    lambda v: v <= 1.5))
    report["targets"] = [{"what": w, "target": t, "value": v, "met": None if v is None else bool(ok(v))}
                         for w, t, v, ok in targets]


# Imported here only because an installed package tries them when present: absent, nothing is lost.
OPTIONAL_IMPORTS = {"pytz": "pandas", "sniffio": "httpcore2"}


def audit_imports(report: dict[str, Any], modules: set[str]) -> None:
    """Which distributions the run imported that the lent machine has neither installed nor carried. The
    requirements of the machine's own packages (their versions there bring their own) are not counted."""
    import re

    dists = md.packages_distributions()
    carried = {norm(n) for n in report.get("carried_wheels") or TESTED_LIBS + MISSING_THERE}
    used: dict[str, str] = {}
    for mod in modules:
        if mod in sys.stdlib_module_names or mod.startswith("_") or mod in ("nift", "gpu_work"):
            continue
        used.update({norm(d): d for d in dists.get(mod, [])})

    def requires(dist: str) -> list[str]:
        try:
            reqs = md.requires(dist) or []
        except md.PackageNotFoundError:
            return []
        return [norm(m.group(0)) for r in reqs if "extra ==" not in r and (m := re.match(r"[A-Za-z0-9._-]+", r))]

    theirs: set[str] = set()
    todo = [used[d] for d in used if d in GPU_IMAGE and d not in carried]
    while todo:
        for r in requires(todo.pop()):
            if r not in theirs:
                theirs.add(r)
                todo.append(used.get(r, r))
    report["imports"] = {"distributions": sorted(used), "missing_on_gpu_machine": sorted(
        set(used) - GPU_IMAGE - carried - theirs - set(OPTIONAL_IMPORTS))}


def table(report: dict[str, Any]) -> str:
    v, dev, h = report["versions"], report.get("device") or {}, report.get("hyperparameters") or {}
    lines = [f"nift GPU benchmarks ({report['mode']}) on {dev.get('name')} "
             + (f"(cc {dev.get('capability')}, {dev.get('memory_gib')} GiB)" if dev.get("cuda") else "(CPU)"),
             "versions: " + ", ".join(f"{k} {x}" for k, x in v.items() if x)
             + (f" (carried wheels from {report['carried_installed_in']})" if report.get("carried_installed_in")
                else ""),
             f"bf16 peak: datasheet {_f((dev.get('datasheet_bf16_flops') or 0) / 1e12 or None, 0, 0)} TFLOP/s, "
             f"measured {dev.get('matmul_size')}^3 {dev.get('matmul_dtype')} matmul "
             f"{(dev.get('matmul_flops') or 0) / 1e12:.2f} TFLOP/s; models written to {report['workdir']['path']} "
             f"({report['workdir']['filesystem']}, {report['workdir']['free_gib']} GiB free at the start)"]
    if report["train"]:
        lines += ["", f"train: LoRA r {h.get('lora_r')} all-linear, max length {h.get('max_length')}, micro-batch "
                  f"{h.get('batch')} x accumulation {h.get('grad_accum')}, {h.get('precision')}, gradient "
                  "checkpointing, "
                  f"{h.get('examples')} OpenWebText pairs (mean {report['data']['mean_tokens']:.0f} tokens)",
                  f"{'shape':12} {'arm':7} {'tok/s':>9} {'x trl':>6} {'x seg':>6} {'x plain':>7} {'GPU GiB':>8} "
                  f"{'RSS MiB':>8} "
                  f"{'MFU':>6} {'MFU mm':>6} {'tok/mb':>7} {'loss':>7}"]
        for name, arms in report["train"].items():
            for arm, r in arms.items():
                lines.append(
                    f"{name:12} {arm:7} {r['tokens_per_s']:9.0f} {_x(r.get('speed_vs_trl'))} "
                    f"{_x(r.get('speed_vs_trl-seg'))} "
                    f"{_x(r.get('speed_vs_plain'), 7)} {_f(r.get('gpu_peak_allocated_gib'), 8, 1)} "
                    f"{r['rss_peak_mb']:8.0f} {_pct(r.get('mfu_datasheet'))} {_pct(r.get('mfu_matmul'))} "
                    f"{r['tokens_per_micro_batch']:7.0f} {_f(r.get('final_loss'), 7, 3)}")
        lines.append("  (trl: TRL as recommended, on sdpa with a block-diagonal mask since FlashAttention cannot be "
                     "installed here; trl-seg: the same with per-example attention standing in for FlashAttention's "
                     "varlen kernel; tok/mb: real tokens per micro-batch; MFU: FLOPs per token = 4N + causal "
                     "attention per example, N = matmul weights incl. the output head, over the datasheet's dense "
                     "bf16 peak, and over the measured matmul)")
    for name, g in report["generation"].items():
        lines += ["", f"generation {name}: {g['prompts']} prompts, batch {g['batch']}, {g['max_new_tokens']} new "
                  f"tokens, greedy, {g['device']} {g['dtype']}: nift {g['nift_tokens_per_s']:.0f} tok/s, plain "
                  f"generate {g['plain_tokens_per_s']:.0f} tok/s, ratio {g['ratio_best']:.3f} (median of pairs "
                  f"{g['ratio_median_of_pairs']:.3f})"]
    for name, res in report["merge"].items():
        info = report["models"].get(name, {})
        lines += ["", f"merge {name} ({info.get('gib', 0):.2f} GiB of {h.get('precision')} weights in "
                  f"{info.get('shards')} shards, LoRA r {HYPER['lora_r']} on every linear layer)",
                  f"{'kind':8} {'seconds':>8} {'x copy':>7} {'peak RSS MiB':>13} {'+RSS MiB':>9}"]
        for kind, r in res.items():
            lines.append(f"{kind:8} {r['seconds']:8.2f} {_x(r.get('time_vs_copy'), 7)} {r['peak_rss_mib']:13.0f} "
                         f"{r['peak_above_start_mib']:9.0f}")
    if f := report.get("fsdp"):
        lines += ["", f"fsdp {f['model']}: exit {f['returncode']}, distributed {f.get('distributed')} on "
                  f"{f.get('device')}, {f.get('steps')} steps, loss {_f((f.get('losses') or [None])[0], 0, 3)} -> "
                  f"{_f((f.get('losses') or [None])[-1], 0, 3)}, median {_f(f.get('median_tokens_per_s'), 0, 0)} "
                  "tok/s" + (f"; {f['note'].strip()}" if f.get("note") else "")]
    lines += ["", "targets:"]
    for t in report.get("targets", []):
        state = "n/a" if t["met"] is None else ("met" if t["met"] else "NOT met")
        lines.append(f"  {t['what']:66} {t['target']:>8}  {_f(t['value'], 8, 3)}  {state}")
    if report["mode"] == "tiny":
        lines.append("  (tiny shapes on a CPU: the figures exercise the code, they measure nothing)")
    bad = [s for s in report["steps"] if s["status"] != "ok"]
    lines += ["", "steps not completed: " + ("none" if not bad else "; ".join(
        f"{s['step']} ({s['status']}: {s.get('reason') or str(s.get('error', '')).strip().splitlines()[-1]})"
        for s in bad))]
    if missing := report.get("imports", {}).get("missing_on_gpu_machine"):
        lines.append(f"imported but neither on the GPU image nor carried: {', '.join(missing)}")
    lines.append(f"total {report['elapsed_s']:.0f} s of a {report['budget_s']:.0f} s budget")
    return "\n".join(lines)


def _f(x: Any, w: int, d: int) -> str:
    return f"{x:{w}.{d}f}" if isinstance(x, (int, float)) else f"{'-':>{w}}"


def _x(x: Any, w: int = 6) -> str:
    return f"{x:{w - 1}.2f}x" if isinstance(x, (int, float)) else f"{'-':>{w}}"


def _pct(x: Any) -> str:
    return f"{x * 100:5.1f}%" if isinstance(x, (int, float)) else f"{'-':>6}"


# ------------------------------------------------------------------------------------------------------ main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny shapes on the CPU (a few minutes): the code paths only")
    ap.add_argument("--prepare", action="store_true", help="write bench/gpu-carry (wheels, tokenizer, data) and stop")
    ap.add_argument("--budget", type=float, default=None, help="seconds for the whole run (default 450; --tiny 900)")
    ap.add_argument("--carry", type=Path, default=CARRY, help="the bundle written by --prepare")
    ap.add_argument("--workdir", type=Path, default=None, help="models and runs (default: a temporary folder)")
    ap.add_argument("--out", type=Path, default=None, help="the JSON (default $OUT/gpu.json or bench/results)")
    ap.add_argument("--only", default=None, help="comma-separated: train,merge,generate,fsdp")
    ap.add_argument("--wheels", type=Path, default=None,
                    help="install these wheels first (default: the bundle's on a GPU run, none with --tiny)")
    ap.add_argument("--machine-libs", action="store_true",
                    help="use the machine's transformers/peft/accelerate instead of the carried (tested) ones")
    a = ap.parse_args()
    t0 = float(os.environ.setdefault(T0_ENV, str(time.time())))
    # NVML answers torch.cuda.is_available() without initialising CUDA, which forked children could not use.
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
                      TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1", PYTORCH_NVML_BASED_CUDA_CHECK="1")
    os.environ["PYTHONPATH"] = os.pathsep.join(x for x in [str(ROOT / "src"), os.environ.get("PYTHONPATH")] if x)
    if a.tiny:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # tiny means the CPU path, also on a machine with a GPU
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see tests/conftest.py
    if a.prepare:
        prepare_bundle(a.carry, "gpu", wheels=True)
        return
    if not a.tiny and not (a.carry / "manifest.json").is_file():
        sys.exit(f"{a.carry} is missing: run `python bench/gpu.py --prepare` first (where pip reaches PyPI), and "
                 "carry it along")
    if a.wheels or not a.tiny:
        install_carried(a.wheels or a.carry / "wheels", a.machine_libs)

    work = a.workdir or Path(tempfile.mkdtemp(prefix="nift-gpu-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    if a.out:
        out = a.out
    elif a.tiny:
        out = Path(tempfile.gettempdir()) / "nift-gpu-tiny.json"
    else:
        out = Path(os.environ["OUT"]) / "gpu.json" if os.environ.get("OUT") else BENCH / "results" / "gpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.with_name(out.stem + "-steps.log")
    log.write_text("")
    budget = a.budget or (900.0 if a.tiny else 450.0)
    print(f"nift GPU benchmarks ({'tiny, CPU' if a.tiny else 'GPU'}): budget {budget:.0f} s, work in {work}, JSON "
          f"{out}, child output in {log}", flush=True)

    # Imported once here, before any fork, so that no child pays for them (CUDA is left untouched).
    import gpu_work
    import torch  # noqa: F401
    import transformers  # noqa: F401

    import nift.llm.backends.hf
    import nift.merge.stage  # the package itself imports its modules lazily
    import nift.train  # noqa: F401

    for name in ("peft", "trl", "datasets", "train", "distill", "merge"):
        try:
            importlib.import_module(name) if name in ("peft", "trl", "datasets") else gpu_work.bench_module(name)
        except Exception as e:  # noqa: BLE001 - reported by the arm that needs it
            print(f"note: import {name} failed here ({type(e).__name__}: {e}); the arms that need it will fail")

    bundle = a.carry if not a.tiny else prepare_bundle(work / "bundle", "tiny", wheels=False)
    carried = json.loads((bundle / "manifest.json").read_text())["wheels"]
    report: dict[str, Any] = {"schema": 1, "mode": "tiny" if a.tiny else "gpu", "ran_on_gpu": False,
                              "versions": versions(), "carried_wheels": carried or None,
                              "carried_installed_in": os.environ.get(SITE_ENV), "budget_s": budget,
                              "device": None, "models": {}, "train": {}, "generation": {}, "merge": {}, "fsdp": None,
                              "steps": [], "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0))}
    report["workdir"] = disk(work)
    runner = Runner(budget, log, t0)

    def save() -> None:
        report["steps"] = runner.steps
        report["elapsed_s"] = time.time() - t0
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=1, default=str) + "\n")
        tmp.replace(out)

    try:
        run_all(a, bundle, work, runner, report, save)
    finally:
        report["ran_on_gpu"] = bool((report.get("device") or {}).get("cuda"))
        derive(report)
        audit_imports(report, runner.modules | set(_top_modules()))
        report["elapsed_s"] = time.time() - t0
        save()
        print("\n" + table(report), flush=True)
        print(f"\nwrote {out}")
        if not a.workdir:
            shutil.rmtree(work, ignore_errors=True)
        if (site := os.environ.get(SITE_ENV)) and Path(site).name.startswith("nift-gpu-bench-site-"):
            shutil.rmtree(site, ignore_errors=True)


if __name__ == "__main__":
    main()
