"""Fixtures for the reliability tests: a prepared run and the fake provider API (`nift` as a real process:
helpers.processes)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.corpora import prepared_run
from helpers.fake_providers import FakeProviders


@pytest.fixture
def prepared(tmp_path) -> Path:
    return prepared_run(tmp_path, n=6)


@pytest.fixture
def fake():
    with FakeProviders() as f:
        yield f
