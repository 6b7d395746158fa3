"""`nift train` end to end on a tiny random-initialised Llama: learning happens, every LoRA weight moves, the output
contract holds, a killed run resumes to the same result, two DDP processes on CPU work, bad input is a clear error."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nift.artifacts import read_manifest
from nift.cli import main
from nift.errors import ConfigError, InputError, NiftError
from nift.models import resolve
from nift.train import META, accelerate_config, run
from nift.train.config import TrainConfig
from nift.train.student import build_student

REPO = Path(__file__).resolve().parents[2]
QUIET = {"log": lambda *_: None}


def _losses(stage_dir: Path) -> list[tuple[int, float]]:
    rows = [json.loads(x) for x in (stage_dir / "log.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def _initial_adapter(cfg: TrainConfig) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    model = build_student(cfg, resolve(cfg.model), "cpu", "fp32")
    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


def test_tiny_model_learns_and_writes_the_contract(tiny_model, toy_data, tmp_path, train_cfg):
    cfg = train_cfg(model=tiny_model, data=str(toy_data), lr=3e-2, max_steps=12, per_device_batch_size=4,
                    grad_accum=2, eval_fraction=0.1, save_steps=6, precision="fp32", lora_dropout=0.1)
    res = run(cfg, tmp_path, **QUIET)
    d = tmp_path / "train"
    losses = [loss for _, loss in _losses(d)]
    assert len(losses) == 12 and losses[-1] < losses[0] - 0.5  # a learnable set: the loss must drop clearly

    after = load_file(d / "adapter" / "adapter_model.safetensors")
    before = _initial_adapter(cfg)
    assert set(after) == set(before) and len(after) == 2 * 7 * 2  # A and B of 7 linear layers x 2 blocks
    for name, w in after.items():
        assert not torch.equal(w, before[name]), f"{name} did not change"

    meta = json.loads((d / META).read_text())
    assert meta["base_model"] == tiny_model and meta["method"] == "lora" and meta["template"] == "vanilla"
    assert meta["eos_token"] == "<|im_end|>" and meta["output_dir"] == "adapter"
    assert meta["lora"]["r"] == 8 and meta["lora"]["alpha"] == 16 and "q_proj" in meta["lora"]["target_modules"]
    assert meta["hyperparameters"]["effective_batch"] == 8 and meta["hyperparameters"]["lr"] == 3e-2
    from nift.models import load_tokenizer, tokenizer_hash

    assert meta["tokenizer_hash"] == tokenizer_hash(load_tokenizer(tiny_model))
    assert len(meta["data_manifest_hash"]) == 64 and meta["data"]["source"] == "file"
    assert (d / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (d / "checkpoints").exists() and not (d / "adapter" / "training_args.bin").exists()
    rows = [json.loads(x) for x in (d / "log.jsonl").read_text().splitlines()]
    assert any("eval_loss" in r for r in rows) and res.manifest["stats"]["eval_loss"] is not None
    assert res.manifest["stats"]["tokens_seen"] > 0 and "adapter/adapter_model.safetensors" in res.manifest["files"]

    from peft import AutoPeftModelForCausalLM

    model = AutoPeftModelForCausalLM.from_pretrained(d / "adapter")
    assert torch.isfinite(model(input_ids=torch.tensor([[1, 2, 3]])).logits).all()
    assert run(cfg, tmp_path, **QUIET).skipped  # same config and data: up to date


def test_trains_on_distill_joined_to_prepare_and_reruns_when_upstream_changes(tiny_model, owt_corpus, tmp_path,
                                                                              train_cfg):
    from nift.artifacts import write_json, write_jsonl
    from nift.prepare import PrepareConfig
    from nift.prepare import run as prepare

    prepare(PrepareConfig(input=[str(owt_corpus)], n_docs=6, progress=False), tmp_path, **QUIET)
    ids = [json.loads(x)["id"] for x in (tmp_path / "prepare" / "data.jsonl").read_text().splitlines()]
    # A distill stage's files as the contract describes them (the teacher's text here is a stand-in).
    write_jsonl(tmp_path / "distill" / "data.jsonl",
                [{"id": i, "completion": f" and then the story went on, part {n}.", "finish_reason": "stop"}
                 for n, i in enumerate(ids)])
    write_json(tmp_path / "distill" / "manifest.json", {"stage": "distill", "version": 1})
    cfg = train_cfg(model=tiny_model, max_steps=2, per_device_batch_size=3, grad_accum=1, max_length=96)
    first = run(cfg, tmp_path, **QUIET)
    meta = json.loads((tmp_path / "train" / META).read_text())
    assert meta["data"]["source"] == "distill" and set(meta["data"]["inputs"]) == {"distill", "prepare"}
    assert first.manifest["stats"]["examples"]["train"] == 6 and first.manifest["stats"]["truncated"] > 0
    assert run(cfg, tmp_path, **QUIET).skipped
    write_json(tmp_path / "distill" / "manifest.json", {"stage": "distill", "version": 2})
    assert not run(cfg, tmp_path, **QUIET).skipped  # new upstream output: trained again


ARGS = ["--lr", "1e-2", "--max-steps", "14", "--per-device-batch-size", "4", "--grad-accum", "2",
        "--logging-steps", "1", "--save-steps", "2", "--no-progress", "--precision", "fp32", "--eval-fraction", "0"]


def _cli(run_dir: Path, model: str, data: Path) -> list[str]:
    return [sys.executable, "-m", "nift.cli", "train", "--run-dir", str(run_dir), "--model", model,
            "--data", str(data), *ARGS]


def test_killed_run_resumes_to_the_same_loss_curve_and_adapter(tiny_model, toy_data, tmp_path, capsys):
    """A real SIGKILL in the middle of training; the same command then resumes from the last complete checkpoint.
    Tolerance: on CPU in fp32 the resumed run is bitwise identical (checked to 1e-6)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    killed = tmp_path / "killed"
    p = subprocess.Popen(_cli(killed, tiny_model, toy_data), env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    ckpt = killed / "train" / "checkpoints" / "checkpoint-4"
    deadline = time.time() + 120
    while p.poll() is None and not (ckpt / "trainer_state.json").exists() and time.time() < deadline:
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL, p.stderr.read().decode()[-2000:]
    assert read_manifest(killed / "train") is None  # it really was interrupted

    # The same command again (in this process, to save a start-up), then an uninterrupted run to compare with.
    assert main(_cli(killed, tiny_model, toy_data)[3:]) == 0
    assert "resuming from" in capsys.readouterr().out
    assert main(_cli(tmp_path / "straight", tiny_model, toy_data)[3:]) == 0

    a, b = _losses(killed / "train"), _losses(tmp_path / "straight" / "train")
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(1, 15))
    assert max(abs(x - y) for (_, x), (_, y) in zip(a, b, strict=True)) <= 1e-6
    wa = load_file(killed / "train" / "adapter" / "adapter_model.safetensors")
    wb = load_file(tmp_path / "straight" / "train" / "adapter" / "adapter_model.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6, rtol=0) for k in wa)
    assert "checkpoints/checkpoint-" in read_manifest(killed / "train")["stats"]["resumed_from"]


def test_two_process_ddp_on_cpu(tiny_model, toy_data, tmp_path):
    """torchrun, two processes, gloo: the same command; process 0 writes a valid adapter."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "nift.cli", "train", "--run-dir", str(tmp_path), "--model", tiny_model, "--data", str(toy_data),
           "--lr", "1e-2", "--max-steps", "4", "--per-device-batch-size", "4", "--grad-accum", "1",
           "--logging-steps", "1", "--no-progress", "--eval-fraction", "0.1"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    d = tmp_path / "train"
    meta = json.loads((d / META).read_text())
    assert meta["hyperparameters"]["world_size"] == 2 and meta["hyperparameters"]["effective_batch"] == 8
    assert "2 processes" in out.stdout
    w = load_file(d / "adapter" / "adapter_model.safetensors")
    assert w and all(torch.isfinite(t).all() for t in w.values())
    assert all(t.abs().sum() > 0 for k, t in w.items() if "lora_B" in k)  # B starts at zero: it was trained
    assert len(_losses(d)) == 4 and read_manifest(d)["stats"]["world_size"] == 2


def test_full_fine_tuning_writes_a_model_folder(tiny_model, toy_data, tmp_path, train_cfg):
    from transformers import AutoModelForCausalLM

    cfg = train_cfg(model=tiny_model, data=str(toy_data), method="full", lr=1e-3, max_steps=2,
                    per_device_batch_size=4, grad_accum=1, precision="fp32")
    run(cfg, tmp_path, **QUIET)
    d = tmp_path / "train"
    assert json.loads((d / META).read_text())["method"] == "full" and (d / "model" / "config.json").is_file()
    tuned = AutoModelForCausalLM.from_pretrained(d / "model")
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    changed = [not torch.equal(a, b) for a, b in zip(tuned.parameters(), base.parameters(), strict=True)]
    assert all(changed)


@pytest.mark.parametrize("kw,rows,error,needle", [
    ({}, [], InputError, "no training examples"),
    ({}, [{"prompt": "a", "completion": ""}], InputError, r"no training examples.*empty_completion"),
    ({"model": "no-such-model"}, None, NiftError, "cannot resolve model 'no-such-model'"),
    ({"model": "/nonexistent/dir"}, None, NiftError, "model path not found"),
    ({"method": "qlora"}, None, ConfigError, "qlora needs a CUDA GPU"),
    ({"max_length": 8}, None, InputError, "every example.*completion longer than --max-length 8"),
    ({"max_length": 12, "truncation": "error"}, None, InputError, r"toy.jsonl:1 \(id 't0'\).*exceed"),
    ({"effective_batch": 10}, None, ConfigError, "--effective-batch 10 is not a multiple"),
    ({"template": "chat", "model": "gemma-3-270m"}, None, ConfigError, "has no chat template"),
])
def test_bad_input_is_a_clear_error(tiny_model, toy_data, tmp_path, train_cfg, write_rows, kw, rows, error,
                                    needle):
    data = toy_data if rows is None else write_rows(tmp_path / "d.jsonl", rows)
    cfg = train_cfg(**{"model": tiny_model, "data": str(data), "max_steps": 1, **kw})
    with pytest.raises(error, match=needle):
        run(cfg, tmp_path, **QUIET)


def test_cli_help_explains_effective_batch_and_ships_accelerate_configs(capsys):
    from accelerate.commands.config.config_args import load_config_from_file

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--effective-batch 256" in capsys.readouterr().out
    for name in ("ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"):
        assert main(["accelerate-config", name]) == 0
        path = capsys.readouterr().out.strip()
        assert path == str(accelerate_config(name)) and Path(path).is_file()
        cfg = load_config_from_file(path)  # accelerate's own parser accepts it
        assert cfg.mixed_precision == "no"  # nift picks the precision
    assert load_config_from_file(str(accelerate_config("fsdp"))).fsdp_config["fsdp_version"] == 2
    assert load_config_from_file(str(accelerate_config("deepspeed_zero3"))).deepspeed_config["zero_stage"] == 3


def test_precision_follows_the_device():
    from nift.models import cpu_has_bf16
    from nift.train.student import resolve_precision

    assert resolve_precision("auto", "cpu") == ("bf16" if cpu_has_bf16() else "fp32")
    assert resolve_precision("fp32", "cpu") == "fp32"
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        resolve_precision("fp16", "cpu")


@pytest.mark.slow
def test_two_process_ddp_on_cpu_with_smollm2(smollm2, owt_pairs, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "nift.cli", "train", "--run-dir", str(tmp_path), "--model", smollm2, "--data", str(owt_pairs),
           "--max-examples", "16", "--max-length", "128", "--lr", "1e-3", "--max-steps", "2",
           "--per-device-batch-size", "4", "--grad-accum", "1", "--logging-steps", "1", "--no-progress"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    w = load_file(tmp_path / "train" / "adapter" / "adapter_model.safetensors")
    assert len(w) == 420 and all(t.abs().sum() > 0 for k, t in w.items() if "lora_B" in k)


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_cuda_precision_and_qlora(tiny_model, toy_data, tmp_path, train_cfg, method):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    cfg = train_cfg(model=tiny_model, data=str(toy_data), method=method, lr=1e-2, max_steps=3,
                    per_device_batch_size=4, grad_accum=1)
    res = run(cfg, tmp_path, **QUIET)
    want = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    assert res.manifest["stats"]["precision"] == want and res.manifest["stats"]["device"] == "cuda"
    meta = json.loads((tmp_path / "train" / META).read_text())
    assert meta["lora"]["quantized_base"] == (method == "qlora")
