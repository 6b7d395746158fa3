"""What `--model` can name: model references, merge/model folders (with the merge manifest as the stage input),
train folders (validated before anything is loaded); and the vLLM path on a GPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nift.errors import InputError
from nift.eval.target import resolve_target


def test_merge_folder_is_a_stage_input_and_fingerprinted(tmp_path: Path):
    model = tmp_path / "merge" / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text('{"model_type": "llama"}')
    (model / "model.safetensors").write_bytes(b"\0" * 16)
    (tmp_path / "merge" / "manifest.json").write_text("{}")
    t = resolve_target(str(model))
    assert t.kind == "merge" and t.stage_dir == tmp_path / "merge" and t.load_ref == str(model.resolve())
    before = t.fingerprint
    (model / "model.safetensors").write_bytes(b"\1" * 32)  # new weights at the same path
    assert resolve_target(str(model)).fingerprint != before
    assert resolve_target("served-name", endpoint=True).kind == "endpoint"


def test_train_folder_problems_are_named(tmp_path: Path):
    train = tmp_path / "train"
    train.mkdir()
    with pytest.raises(InputError, match=r"nift_train\.json"):
        resolve_target(str(train))
    (train / "nift_train.json").write_text("{bad json")
    with pytest.raises(InputError, match=r"nift_train.json:1: not valid JSON"):
        resolve_target(str(train))
    (train / "nift_train.json").write_text(json.dumps({"template": "vanilla"}))
    with pytest.raises(InputError, match="missing field 'base_model'"):
        resolve_target(str(train))
    (train / "nift_train.json").write_text(json.dumps({"base_model": "smollm2-135m-instruct"}))
    with pytest.raises(InputError, match="no adapter/"):
        resolve_target(str(train))
    (train / "adapter").mkdir()
    (train / "adapter" / "weights.bin").write_bytes(b"x")
    with pytest.raises(InputError, match=r"adapter_config\.json is missing"):
        resolve_target(str(train))
    # the merge streams safetensors: an adapter trained on a .gguf file is refused with what to do, before any work
    (train / "adapter" / "adapter_config.json").write_text("{}")
    gguf = tmp_path / "base.gguf"
    gguf.write_bytes(b"GGUF")
    (train / "nift_train.json").write_text(json.dumps({"base_model": str(gguf), "base_model_path": str(gguf)}))
    with pytest.raises(InputError, match=r"a \.gguf file; the merge streams safetensors checkpoints: convert"):
        resolve_target(str(train))


@pytest.mark.gpu
def test_vllm_answers_an_ifeval_slice_on_gpu(smollm2, shared_data, tmp_path):
    from nift.eval.config import EvalConfig
    from nift.eval.stage import run

    cfg = EvalConfig(model=smollm2, name="vllm", backend="vllm", benchmarks=["ifeval"],
                     ifeval_data=str(shared_data / "ifeval"), limit=8, max_new_tokens=32, progress=False)
    run(cfg, tmp_path, log=lambda s: None)
    answers = [json.loads(x) for x in (tmp_path / "eval" / "vllm" / "answers" / "ifeval.jsonl").open()]
    assert len(answers) == 8 and all(a["status"] == "ok" and a["finish_reason"] in ("stop", "length")
                                     for a in answers)
