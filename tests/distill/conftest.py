"""Fixtures for the distill tests: a small prepared run, a loaded hf teacher, the fake provider API."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.corpora import prepared_run
from helpers.fake_providers import FakeProviders

from nift.llm.config import BackendConfig


@pytest.fixture
def prepared(tmp_path) -> Path:
    return prepared_run(tmp_path)


@pytest.fixture(scope="module")
def hf_teacher(smollm2):
    """SmolLM2 loaded once per module (pass as backend= to run_requests)."""
    from nift.llm.backends.hf import HFBackend

    cfg = BackendConfig(backend="hf", model=smollm2, max_tokens=8, batch_size=4, device="cpu")
    backend = HFBackend(cfg)
    backend.load()
    return backend


@pytest.fixture
def fake():
    with FakeProviders(polls_to_end=2) as f:
        yield f
