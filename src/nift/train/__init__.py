"""`nift train`: the train stage (`stage`), its config (`config`), its data (`data`), the student model (`student`)
and the training loop with its loss (`trainer`)."""

from __future__ import annotations

from importlib import import_module
from typing import Any

# Each public name and the module that holds it, imported on first use, not with `nift.train.config`: the config
# loader reads that, and loading a config must not load the trainer.
_WHERE = {"ACCELERATE_CONFIGS": "stage", "META": "stage", "accelerate_config": "stage", "run": "stage",
          "TrainConfig": "config"}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f"nift.train.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
