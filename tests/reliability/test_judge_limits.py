"""The judge's answer limit (issue 13, item 6): `--judge.max-tokens 100` was recorded in results.json while 2048 was
sent. What is configured is what is sent, and results.json records what was sent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.chat_server import chat_server

from nift.cli import build_parser
from nift.cli_options import collect_overrides
from nift.config import load_config
from nift.errors import ConfigError
from nift.eval.config import EvalConfig


def _eval_cfg(*flags: str) -> EvalConfig:
    args = build_parser().parse_args(["eval", "--model", "answer-model", *flags])
    vals, names = collect_overrides(args, EvalConfig)
    return load_config(None, overrides={"eval": vals}, cli_names=names).eval


def test_judge_max_tokens_is_sent(tmp_path: Path, shared_data: Path, monkeypatch):
    from nift.eval.stage import run as evaluate

    monkeypatch.setenv("NIFT_TEST_KEY", "sk-test")
    with chat_server(lambda mode, body: "Rating: [[7]]" if mode == "judge" else "an answer") as (root, seen):
        cfg = _eval_cfg(
            "--backend", "openai", "--base-url", f"{root}/answer/v1", "--api-key-env", "NIFT_TEST_KEY",
            "--benchmarks", "mt_bench", "--limit", "1", "--max-new-tokens", "8", "--no-progress",
            "--mt-bench-data", str(shared_data / "mt_bench"), "--judge.backend", "openai",
            "--judge.model", "judge-1", "--judge.base-url", f"{root}/judge/v1", "--judge.api-key-env",
            "NIFT_TEST_KEY", "--judge.max-tokens", "100")
        evaluate(cfg, tmp_path, log=lambda *_: None)
    sent = {b.get("max_tokens", b.get("max_completion_tokens")) for b in seen if b["mode"] == "judge"}
    assert sent == {100}
    results = json.loads((tmp_path / "eval" / "answer-model" / "results.json").read_text())
    assert results["judge"]["max_tokens"] == {"mt_bench": 100}


def test_judge_limits_without_a_flag_and_with_two_that_disagree():
    from nift.eval.judging import judge_max_tokens

    cfg = _eval_cfg()
    assert [judge_max_tokens(cfg, b) for b in ("mt_bench", "arena_hard", "alpaca_eval")] == [2048, 4096, 1]
    cfg = _eval_cfg("--judge-max-tokens", "300", "--judge.max-tokens", "300")
    assert judge_max_tokens(cfg, "arena_hard") == 300
    with pytest.raises(ConfigError, match=r"judge.max_tokens \(100\) and judge_max_tokens \(300\) disagree"):
        _eval_cfg("--judge-max-tokens", "300", "--judge.max-tokens", "100")
    # a config read back from its manifest (the default judge's 2048 written out) keeps the official limits and the
    # same hash, so the same eval again is skipped
    from nift.eval.config import EvalConfig

    cfg = _eval_cfg()
    again = EvalConfig(**cfg.model_dump())
    assert again.judge_max_tokens is None and judge_max_tokens(again, "arena_hard") == 4096
    assert again.config_hash() == cfg.config_hash()
