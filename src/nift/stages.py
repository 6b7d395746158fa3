"""The one stage registry: every stage's name, in pipeline order, with where its runner and its config class live
and what it does.

The CLI makes one subcommand per entry, `nift run` takes them in this order, and the config loader builds one
section per entry from the config class named here (`nift.config.stage_configs`). Runners and config classes are
imported only when asked for, so reading the registry costs nothing.

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
    config: str  # "module:Class", the stage's `nift.config.StageConfig` subclass

    def load(self) -> Callable[..., Any]:
        return _load(self.runner)

    def config_class(self) -> type:
        """The stage's config class (its module imported now)."""
        return _load(self.config)


def _load(name: str) -> Any:
    module, attr = name.split(":")
    return getattr(import_module(module), attr)


STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("prepare", "nift.prepare:run", "sample documents from a corpus and cut each into prompt + reference",
          config="nift.prepare:PrepareConfig"),
    Stage("distill", "nift.distill:run", "a teacher continues every prompt (resumable, cached, cost-accounted)",
          config="nift.distill.config:DistillConfig"),
    Stage("audit", "nift.audit:run", "flag instructional/conversational content, teacher failures and benchmark "
          "contamination; write the filtered training set", config="nift.audit.config:AuditConfig"),
    Stage("train", "nift.train:run", "fine-tune a student (LoRA by default) on prompt -> continuation pairs",
          config="nift.train.config:TrainConfig"),
    Stage("merge", "nift.merge:run", "merge a LoRA adapter into its base or an instruct sibling, or add a chat vector",
          config="nift.merge.config:MergeConfig"),
    Stage("eval", "nift.eval.stage:run", "evaluate a model: IFEval, MT-Bench, Arena-Hard, lm-eval, judge-free signals",
          config="nift.eval.config:EvalConfig"),
    Stage("report", "nift.report:run", "one self-contained HTML page (and Markdown) about a run: config, data, "
          "audit, cost, loss, before/after results with CIs, example answers, timings",
          config="nift.report.config:ReportConfig"),
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
