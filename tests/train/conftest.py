"""Fixtures for the train stage: a tiny random-initialised Llama with the real SmolLM2 tokenizer, toy and real data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nift.train.config import TrainConfig

FAST = {"progress": False, "logging_steps": 1, "save_steps": 1000, "eval_fraction": 0.0}


def _train_cfg(**kw) -> TrainConfig:
    return TrainConfig(**{**FAST, **kw})


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def train_cfg():
    """Builds a config for quick test runs: paper defaults except what the test says, no progress bar, log every
    step, no held-out split, no intermediate checkpoints."""
    return _train_cfg


@pytest.fixture
def write_rows():
    return write_jsonl


@pytest.fixture(scope="session")
def tiny_model(smollm2, tmp_path_factory) -> str:
    """A 2-layer, 32-wide Llama, randomly initialised (seed 0), saved with SmolLM2's tokenizer."""
    from helpers.models import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), smollm2)


@pytest.fixture
def toy_data(tmp_path) -> Path:
    """A learnable toy set: every prompt is continued by the same sentence."""
    rows = [{"id": f"t{i}", "prompt": f"Note {i}: the colour of the sky is",
             "completion": " blue, and the grass is green."} for i in range(32)]
    return write_jsonl(tmp_path / "toy.jsonl", rows)


@pytest.fixture(scope="session")
def owt_pairs(owt_corpus, tmp_path_factory) -> Path:
    """Real prompt -> continuation pairs from OpenWebText: the first 32 words and the 16 that follow."""
    rows = []
    for line in owt_corpus.read_text(encoding="utf-8").splitlines():
        words = json.loads(line)["text"].split()
        if len(words) >= 48:
            rows.append({"id": f"owt{len(rows)}", "prompt": " ".join(words[:32]),
                         "completion": " " + " ".join(words[32:48])})
        if len(rows) == 64:
            break
    return write_jsonl(tmp_path_factory.mktemp("owt") / "pairs.jsonl", rows)
