"""The one stage registry: every stage's name, in pipeline order, with where its runner lives and what it does.

The CLI makes one subcommand per entry, `nift run` takes them in this order, and the config loader builds one
section per entry (each config class names its stage in `StageConfig.stage`). Runners are imported only when a
stage runs, so reading the registry costs nothing.

This module is a leaf: it imports nothing of nift but `nift.errors`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from nift.errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class Stage:
    name: str
    runner: str  # "module:function", called as function(config, run_dir, force=..., [log=...])
    summary: str  # one line for `nift --help`

    def load(self) -> Callable[..., Any]:
        module, func = self.runner.split(":")
        return getattr(import_module(module), func)


STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("prepare", "nift.prepare:run", "sample documents from a corpus and cut each into prompt + reference"),
    Stage("distill", "nift.distill:run", "a teacher continues every prompt (resumable, cached, cost-accounted)"),
    Stage("audit", "nift.audit:run", "flag instructional/conversational content, teacher failures and benchmark "
          "contamination; write the filtered training set"),
    Stage("train", "nift.train:run", "fine-tune a student (LoRA by default) on prompt -> continuation pairs"),
    Stage("merge", "nift.merge:run", "merge a LoRA adapter into its base or an instruct sibling, or add a chat vector"),
    Stage("eval", "nift.eval.stage:run", "evaluate a model: IFEval, MT-Bench, Arena-Hard, lm-eval, judge-free signals"),
    Stage("report", "nift.report:run", "one self-contained HTML page (and Markdown) about a run: config, data, "
          "audit, cost, loss, before/after results with CIs, example answers, timings"),
)}

# The stage names in pipeline order; `pipeline.stages`, `--from` and `--until` take these.
NAMES: tuple[str, ...] = tuple(STAGES)


def stage(name: str) -> Stage:
    try:
        return STAGES[name]
    except KeyError:
        raise ConfigError(f"{name!r} is not a stage.{did_you_mean(name, NAMES)}") from None


def runner(name: str) -> Callable[..., Any]:
    """The function that runs a stage (its module imported now)."""
    return stage(name).load()
