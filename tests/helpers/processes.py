"""`nift` as a real child process that imports this checkout's code."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def nift_env(**extra: str) -> dict[str, str]:
    """The environment of a `nift` child process that imports this checkout's code."""
    path = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def nift_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "nift.cli", *args]
