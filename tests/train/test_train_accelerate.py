"""`nift train` under `accelerate launch` with the shipped configs, two processes on CPU (gloo): the run is what
accelerate says it is (DDP, DeepSpeed ZeRO-2/3; FSDP shards on GPUs only, on CPUs accelerate runs DDP and nift says
so) and learns exactly what one process learns from the same effective batch (same loss curve, same adapter, to float
rounding). DDP is in the default run; FSDP and DeepSpeed, slower to start, are marked slow (DeepSpeed needs
`pip install deepspeed`; on CPU it builds a small communication kernel on first use). The one-GPU FSDP run with its
tokens/s is marked gpu."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nift.artifacts import read_manifest
from nift.train import META, accelerate_config, run

REPO = Path(__file__).resolve().parents[2]
COMMON = {"lr": 1e-2, "max_steps": 4, "grad_accum": 1, "precision": "fp32", "logging_steps": 1}


def _losses(stage_dir: Path) -> list[float]:
    rows = [json.loads(x) for x in (stage_dir / "log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    """The toy set of tests/train/conftest.py (every prompt continued by the same sentence), module-wide."""
    rows = [{"id": f"t{i}", "prompt": f"Note {i}: the colour of the sky is",
             "completion": " blue, and the grass is green."} for i in range(32)]
    path = tmp_path_factory.mktemp("toy") / "toy.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def one_process(tiny_model, pairs, tmp_path_factory) -> Path:
    """The reference: one process, per-device batch 8 (= 2 processes x 4)."""
    from nift.train.config import TrainConfig

    out = tmp_path_factory.mktemp("one")
    cfg = TrainConfig(model=tiny_model, data=str(pairs), per_device_batch_size=8, progress=False, eval_fraction=0.0,
                      save_steps=1000, **COMMON)
    run(cfg, out, log=lambda *_: None)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("name,kind", [
    ("ddp", "MULTI_CPU"),  # accelerate's name for DDP over gloo (MULTI_GPU on GPUs)
    # accelerate shards with FSDP on GPUs only; on CPUs it quietly runs DDP, which nift reports and says so.
    pytest.param("fsdp", "MULTI_CPU", marks=pytest.mark.slow),
    pytest.param("deepspeed_zero2", "DEEPSPEED", marks=pytest.mark.slow),
    pytest.param("deepspeed_zero3", "DEEPSPEED", marks=pytest.mark.slow),
])
def test_accelerate_launch_two_cpu_processes_matches_one(name, kind, tiny_model, pairs, one_process, tmp_path):
    if kind == "DEEPSPEED":
        pytest.importorskip("deepspeed")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    # No --cpu: for accelerate that means one process; on a machine without GPUs the processes use gloo anyway.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config(name)),
           "--num_processes", "2", "--main_process_port", str(_free_port()),
           "-m", "nift.cli", "train", "--run-dir", str(tmp_path),
           "--model", tiny_model, "--data", str(pairs), "--per-device-batch-size", "4", "--no-progress",
           "--eval-fraction", "0", "--lr", "1e-2", "--max-steps", "4", "--grad-accum", "1", "--precision", "fp32",
           "--logging-steps", "1"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert ("asks for FSDP but accelerate set up MULTI_CPU" in out.stdout) == (name == "fsdp")
    d = tmp_path / "train"
    stats = read_manifest(d)["stats"]
    assert stats["world_size"] == 2 and stats["distributed"] == kind and stats["effective_batch"] == 8
    meta = json.loads((d / META).read_text())
    assert meta["hyperparameters"]["world_size"] == 2 and meta["hyperparameters"]["distributed"] == kind

    # Gradients really were combined across the two processes: the same steps as one process with batch 8.
    ref = one_process / "train"
    assert _losses(d) == pytest.approx(_losses(ref), abs=1e-5) and len(_losses(d)) == 4
    a = load_file(d / "adapter" / "adapter_model.safetensors")
    b = load_file(ref / "adapter" / "adapter_model.safetensors")
    assert set(a) == set(b) and all(a[k].shape == b[k].shape for k in a)  # gathered whole, also from ZeRO-3
    assert all(torch.allclose(a[k], b[k], atol=1e-5, rtol=0) for k in a)
    assert all(a[k].abs().sum() > 0 for k in a if "lora_B" in k)  # B starts at zero: it was trained


@pytest.mark.gpu
def test_fsdp_on_one_gpu_trains_smollm2_and_reports_tokens_per_second(smollm2, owt_pairs, tmp_path):
    """The shipped FSDP2 config on one GPU (accelerate counts one launched GPU process as MULTI_GPU, so FSDP
    applies): real sharded training of SmolLM2 on OpenWebText pairs; prints the measured tokens/s."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config("fsdp")),
           "--num_processes", "1", "--main_process_port", str(_free_port()),
           "-m", "nift.cli", "train", "--run-dir", str(tmp_path), "--model", smollm2, "--data", str(owt_pairs),
           "--per-device-batch-size", "8", "--grad-accum", "1", "--max-steps", "8", "--logging-steps", "1",
           "--lr", "1e-3", "--no-progress", "--eval-fraction", "0"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    stats = read_manifest(tmp_path / "train")["stats"]
    assert stats["distributed"] == "FSDP" and stats["device"].startswith("cuda")
    rows = [json.loads(x) for x in (tmp_path / "train" / "log.jsonl").read_text().splitlines()]
    rates = [r["tokens_per_s"] for r in rows if r.get("tokens_per_s")]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert rates and losses[-1] < losses[0]
    print(f"FSDP, one GPU, SmolLM2-135M LoRA: {sorted(rates)[len(rates) // 2]:.0f} tokens/s (median of "
          f"{len(rates)} logged steps)")
