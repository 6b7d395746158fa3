"""Fixtures for the reliability tests: a prepared run, the fake provider API, and `nift` as a real process."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from helpers.corpora import prepared_run
from helpers.fake_providers import FakeProviders

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def prepared(tmp_path) -> Path:
    return prepared_run(tmp_path, n=6)


@pytest.fixture
def fake():
    with FakeProviders() as f:
        yield f


def nift_env(**extra: str) -> dict[str, str]:
    """The environment of a `nift` child process that imports this checkout's code."""
    path = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def nift_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "nift.cli", *args]
