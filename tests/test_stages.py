"""The one stage registry: the CLI, `nift run` and the config loader all read their stage names and order from
`nift.stages`, and the pipeline does not need the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nift import pipeline, stages
from nift.cli import build_parser
from nift.config import PipelineConfig, load_config, stage_configs
from nift.errors import ConfigError


def test_the_pipeline_imports_and_resolves_stages_without_the_cli():
    code = ("import sys, nift.pipeline, nift.sweep, nift.config, nift.stages\n"
            "assert nift.stages.runner('prepare').__module__ == 'nift.prepare'\n"
            "print(sorted(m for m in sys.modules if m == 'nift.cli' or m.startswith('nift.cli.')))\n")
    src = str(Path(stages.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_cli_pipeline_and_config_follow_the_registry():
    names = list(stages.NAMES)
    assert names == ["prepare", "distill", "audit", "train", "merge", "eval", "report"]
    assert list(stage_configs()) == names and all(stage_configs()[n].stage == n for n in names)
    assert list(pipeline.ORDER) == names and PipelineConfig().stages == names
    sub = next(a for a in build_parser()._subparsers._group_actions if a.dest == "command")
    assert [c for c in sub.choices if c in names] == names
    assert [c for c in type(load_config(None)).model_fields if c in names] == names


def test_unknown_stage_names_the_choices(tmp_path):
    with pytest.raises(ConfigError, match=r"'trian' is not a stage\. Did you mean 'train'\?"):
        stages.runner("trian")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("pipeline:\n  stages: [prepare, trian]\n")
    with pytest.raises(ConfigError, match="trian"):
        load_config(str(cfg))
