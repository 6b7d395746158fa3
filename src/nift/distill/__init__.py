"""`nift distill`: the teacher continues every prepared prompt, through the request engine (`nift.llm`).

Holds only the stage (`nift.distill.stage`); `run` is its entry point for the stage registry.

Run as: nift distill --config quickstart
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nift.distill.config import DistillConfig


def run(cfg: DistillConfig, run_dir, force: bool = False, log=print):
    """The `nift distill` stage (see `nift.distill.stage`)."""
    from nift.distill.stage import run as _run

    return _run(cfg, run_dir, force=force, log=log)


__all__ = ["run"]
