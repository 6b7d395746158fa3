"""Fixtures for the merge tests: a tiny random-initialised base, same-shape siblings, and an adapter on the base."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from merge_helpers import make_adapter, tiny_model


@pytest.fixture(scope="session")
def tokenizer(smollm2):
    from transformers import AutoTokenizer

    from nift.models import demo_model_dir

    return AutoTokenizer.from_pretrained(demo_model_dir(smollm2))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tokenizer) -> SimpleNamespace:
    """base: float32, sharded; inst / inst_bf16: a same-shape sibling with other weights (random-initialised
    stand-ins for an instruct model); adapter: LoRA on every linear layer of base, with train's nift_train.json."""
    root: Path = tmp_path_factory.mktemp("tiny")
    base = tiny_model(root / "base", tokenizer, seed=0)
    inst = tiny_model(root / "inst", tokenizer, seed=2)
    inst_bf16 = tiny_model(root / "inst_bf16", tokenizer, seed=2, dtype=torch.bfloat16)
    adapter = make_adapter(base, root / "train", seed=1)
    return SimpleNamespace(root=root, base=base, inst=inst, inst_bf16=inst_bf16, adapter=adapter,
                           tokenizer=tokenizer)
