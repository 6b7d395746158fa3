"""Builders for merge tests: tiny random-initialised models and PEFT adapters with train's metadata.

The adapter folder follows the train stage's output contract (GUIDE.md): `<dir>/adapter/` written by PEFT's
save_pretrained and `<dir>/nift_train.json` beside it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from nift.models import tokenizer_hash

LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
DATA_MANIFEST_HASH = "d" * 64  # stands for the hash of the data manifest the adapter was trained on


def tiny_config(arch: str = "llama", **overrides: Any) -> Any:
    from transformers import LlamaConfig, Qwen2Config

    kw = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, vocab_size=49152, tie_word_embeddings=False, max_position_embeddings=256)
    kw.update(overrides)
    return (LlamaConfig if arch == "llama" else Qwen2Config)(**kw)


def tiny_model(folder: Path, tokenizer: Any, seed: int = 0, dtype: torch.dtype = torch.float32,
               arch: str = "llama", shard: str | None = "2MB", **overrides: Any) -> Path:
    """A random-initialised causal LM saved as a HF folder (sharded when `shard` is set) with `tokenizer`."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, **overrides)).to(dtype)
    kw = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(folder, **kw)
    tokenizer.save_pretrained(folder)
    return folder


def make_adapter(model_dir: Path, out_dir: Path, seed: int = 1, targets: list[str] | None = None, r: int = 4,
                 alpha: int = 8, meta: bool = True, init_scale: float = 0.5,
                 meta_overrides: dict[str, Any] | None = None, **lora_kwargs: Any) -> Path:
    """A LoRA adapter on `model_dir` with non-zero A and B (so it changes the model), saved by PEFT into
    `out_dir/adapter`, and `out_dir/nift_train.json` as the train stage writes it. Returns the adapter folder."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(model_dir)
    targets = targets or LINEAR
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets, **lora_kwargs)
    peft_model = get_peft_model(model, cfg)
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:  # PEFT starts B at zero; a trained adapter has both non-zero
                p.normal_(0, init_scale / (p.shape[-1] ** 0.5))
    adapter = out_dir / "adapter"
    peft_model.save_pretrained(adapter)
    if meta:
        data = {
            "base_model": str(model_dir), "base_model_path": str(model_dir), "template": "vanilla",
            "eos_token": tok.eos_token, "tokenizer_hash": tokenizer_hash(tok),
            "data_manifest_hash": DATA_MANIFEST_HASH, "method": "lora",
            "hyperparameters": {"lr": 5e-5, "epochs": 3, "scheduler": "cosine"},
            "lora": {"r": r, "alpha": alpha, "dropout": 0.0, "target_modules": targets},
        }
        data.update(meta_overrides or {})
        (out_dir / "nift_train.json").write_text(json.dumps(data, indent=2))
    return adapter


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors model folder."""
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def dtypes(folder: Path) -> set[str]:
    """The dtypes written in a folder's safetensors headers."""
    from nift.checkpoint import read_header

    seen = set()
    for f in folder.glob("*.safetensors"):
        header, _ = read_header(f)
        seen |= {spec["dtype"] for spec in header.values()}
    return seen
