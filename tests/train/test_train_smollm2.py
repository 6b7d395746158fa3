"""`nift train` on the real SmolLM2-135M with real OpenWebText continuations: every LoRA weight moves, the loss goes
down on a small set seen twice, and a run interrupted after a checkpoint resumes to the same curve and adapter."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import nift.train.stage
from nift.artifacts import read_manifest
from nift.models import resolve
from nift.train import run
from nift.train.config import TrainConfig
from nift.train.student import build_student

QUIET = {"log": lambda *_: None}


def _losses(d):
    return [json.loads(x)["loss"] for x in (d / "log.jsonl").read_text().splitlines() if '"loss"' in x]


@pytest.fixture(scope="module")
def cfg(smollm2, owt_pairs) -> TrainConfig:
    # 8 real pairs (32 words of prompt, the next 16 as completion), batch 4: 2 steps an epoch, 2 epochs. Gradient
    # checkpointing (the default, covered by the tiny-model tests) is off to save time.
    return TrainConfig(model=smollm2, data=str(owt_pairs), max_examples=8, max_length=128, lr=2e-3, max_steps=4,
                       per_device_batch_size=4, grad_accum=1, save_steps=2, precision="bf16", eval_fraction=0.0,
                       logging_steps=1, progress=False, gradient_checkpointing=False)


@pytest.fixture(scope="module")
def straight(cfg, tmp_path_factory):
    out = tmp_path_factory.mktemp("smol-straight")
    run(cfg, out, **QUIET)
    return out / "train"


def test_smollm2_learns_and_moves_every_lora_weight(cfg, straight):
    from peft import get_peft_model_state_dict

    losses = _losses(straight)
    assert len(losses) == 4
    assert sum(losses[2:]) < sum(losses[:2]) - 0.2  # the second pass over the same 8 pairs costs less
    before = get_peft_model_state_dict(build_student(cfg, resolve(cfg.model), "cpu", "bf16"))
    after = load_file(straight / "adapter" / "adapter_model.safetensors")
    assert set(after) == set(before) and len(after) == 30 * 7 * 2  # A and B on 7 linear layers x 30 blocks
    unchanged = [k for k, w in after.items() if torch.equal(w, before[k].to(w.dtype))]
    assert not unchanged
    meta = json.loads((straight / "nift_train.json").read_text())
    assert meta["base_model"] == "smollm2-135m-instruct" and meta["eos_token"] == "<|im_end|>"
    assert sorted(meta["lora"]["target_modules"]) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


def test_smollm2_interrupted_run_resumes_to_the_same_result(cfg, straight, tmp_path, monkeypatch):
    """Interrupted right after the step-2 checkpoint (as Ctrl-C would), then the same call again. Tolerance: on CPU
    the resumed run repeats the uninterrupted one exactly (checked to 1e-6 on losses and adapter weights)."""
    make = nift.train.stage.trainer_class

    def interrupting():
        base = make()

        class Interrupted(base):
            def _save_checkpoint(self, model, trial):
                super()._save_checkpoint(model, trial)
                if self.state.global_step == 2:
                    raise KeyboardInterrupt

        return Interrupted

    monkeypatch.setattr(nift.train.stage, "trainer_class", interrupting)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, tmp_path, **QUIET)
    assert read_manifest(tmp_path / "train") is None
    monkeypatch.setattr(nift.train.stage, "trainer_class", make)
    res = run(cfg, tmp_path, **QUIET)
    assert res.manifest["stats"]["resumed_from"].endswith("checkpoint-2")
    a, b = _losses(tmp_path / "train"), _losses(straight)
    assert len(a) == len(b) == 4 and max(abs(x - y) for x, y in zip(a, b, strict=True)) <= 1e-6
    wa = load_file(tmp_path / "train" / "adapter" / "adapter_model.safetensors")
    wb = load_file(straight / "adapter" / "adapter_model.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6, rtol=0) for k in wa)
