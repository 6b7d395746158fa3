"""Judging through the distill engine over real HTTP: a judge that answers nonsense is counted, retried once and
reported (never scored); a judge that needs the retry is parsed after it; everything is cached, cost-accounted and
resumable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nift.cli import main
from nift.errors import ConfigError, NiftError
from nift.eval.config import EvalConfig
from nift.eval.stage import run


def _cfg(base: str, judge_mode: str, shared_data: Path, **kw) -> EvalConfig:
    return EvalConfig(
        model="answer-model", backend="openai", base_url=f"{base}/answer/v1", api_key_env="NIFT_TEST_OPENAI_KEY",
        benchmarks=["mt_bench", "arena_hard"], limit=3, max_new_tokens=16, progress=False,
        mt_bench_data=str(shared_data / "mt_bench"), arena_hard_data=str(shared_data / "arena_hard"),
        judge={"backend": "openai", "model": "garbage-judge-1", "base_url": f"{base}/{judge_mode}/v1",
               "api_key_env": "NIFT_TEST_OPENAI_KEY", "prices": {"garbage-judge-1": {"input": 1.0, "output": 2.0}}},
        **kw,
    )


@pytest.fixture
def baseline_file(tmp_path: Path, shared_data: Path) -> Path:
    qs = [json.loads(line) for line in (shared_data / "arena_hard" / "question.jsonl").open()][:3]
    path = tmp_path / "gpt-4-0314.jsonl"
    with open(path, "w") as f:
        for q in qs:
            f.write(json.dumps({"question_id": q["question_id"], "model_id": "gpt-4-0314",
                                "choices": [{"index": 0, "turns": [{"content": "A baseline answer."}]}]}) + "\n")
    return path


def test_garbage_judge_is_counted_retried_and_reported(tmp_path, garbage_judge, shared_data, baseline_file,
                                                        monkeypatch):
    monkeypatch.setenv("NIFT_TEST_OPENAI_KEY", "sk-test")
    base, counts = garbage_judge
    cfg = _cfg(base, "garbage", shared_data, arena_baseline=str(baseline_file))
    run(cfg, tmp_path, log=lambda s: None)
    out = tmp_path / "eval" / "answer-model"
    res = json.loads((out / "results.json").read_text())
    mt, ah = res["benchmarks"]["mt_bench"], res["benchmarks"]["arena_hard"]
    # 3 questions x 2 turns and 3 questions x 2 games: every judgment asked twice, none scored.
    assert counts[("garbage", "first")] == 12 and counts[("garbage", "retry")] == 12
    assert mt["n_judgments"] == 6 and mt["n_unparseable"] == 6 and mt["score"] is None
    assert ah["n_games"] == 6 and ah["n_unparseable"] == 6 and ah["win_rate"] is None
    assert mt["judge_status"] == {"unparseable:missing": 6}
    rows = [json.loads(x) for x in (out / "judgments" / "mt_bench.jsonl").open()]
    assert all(r["score"] is None and r["attempts"] == 2 and r["judge_model"] == "garbage-judge-1"
               and r["judge_version"] == "fp_test" for r in rows)
    assert not any(r["metric"].startswith(("mt_bench", "arena_hard"))
                   for r in map(json.loads, (out / "per_item.jsonl").open()))
    judge_usage = res["usage"]["judge"]
    assert judge_usage["unparseable"] == 12 and judge_usage["retried"] == 12 and judge_usage["requests"] == 24
    assert judge_usage["cost_usd"] == pytest.approx(24 * (100 * 1.0 + 20 * 2.0) / 1e6)
    report = (out / "report.md").read_text()
    assert "unparseable judgments | 6 of 6" in report
    # Answers: endpoint generation records finish_reason and signals.
    ans = [json.loads(x) for x in (out / "answers" / "mt_bench.jsonl").open()]
    assert len(ans) == 6 and all(a["finish_reason"] == "stop" and a["signals"]["stopped"] for a in ans)


def test_judge_answer_fixed_by_the_retry_is_scored_and_resumes_from_cache(tmp_path, garbage_judge, shared_data,
                                                                          baseline_file, monkeypatch):
    monkeypatch.setenv("NIFT_TEST_OPENAI_KEY", "sk-test")
    base, counts = garbage_judge
    # Through the command line: the judge is set with dotted flags.
    rc = main(["eval", "--run-dir", str(tmp_path), "--name", "first", "--model", "answer-model", "--backend", "openai",
               "--base-url", f"{base}/answer/v1", "--api-key-env", "NIFT_TEST_OPENAI_KEY", "--benchmarks", "mt_bench",
               "arena_hard", "--limit", "3", "--max-new-tokens", "16", "--no-progress",
               "--mt-bench-data", str(shared_data / "mt_bench"), "--arena-hard-data", str(shared_data / "arena_hard"),
               "--arena-baseline", str(baseline_file), "--judge.model", "garbage-judge-1",
               "--judge.base-url", f"{base}/fixable/v1", "--judge.api-key-env", "NIFT_TEST_OPENAI_KEY",
               "--judge.prices", '{"garbage-judge-1": {"input": 1.0, "output": 2.0}}'])
    assert rc == 0
    cfg = _cfg(base, "fixable", shared_data, arena_baseline=str(baseline_file), name="first")
    res = json.loads((tmp_path / "eval" / "first" / "results.json").read_text())
    mt, ah = res["benchmarks"]["mt_bench"], res["benchmarks"]["arena_hard"]
    assert mt["score"] == 6.0 and mt["n_unparseable"] == 0 and mt["judge_status"] == {"ok_after_retry": 6}
    assert ah["win_rate"] == 50.0 and ah["verdicts"] == {"tie": 6}
    sent = sum(counts.values())
    # Another eval name, same answers and judge: nothing is sent again.
    run(cfg.model_copy(update={"name": "second"}), tmp_path, log=lambda s: None)
    assert sum(counts.values()) == sent
    res2 = json.loads((tmp_path / "eval" / "second" / "results.json").read_text())
    assert res2["benchmarks"]["mt_bench"]["score"] == 6.0
    assert res2["usage"]["judge"]["cached"] == res2["usage"]["judge"]["requests"]


def test_judge_problems_fail_before_generation(tmp_path, shared_data, monkeypatch, capsys):
    # Naming one judge setting keeps the other defaults (not BackendConfig's in-process hf default).
    assert EvalConfig(judge={"model": "gpt-4o"}).judge.backend == "openai"
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    cfg = EvalConfig(model="smollm2-135m-instruct", benchmarks=["mt_bench"],
                     mt_bench_data=str(shared_data / "mt_bench"))
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        run(cfg, tmp_path, log=lambda s: None)
    assert not (tmp_path / "eval").exists()
    with pytest.raises(NiftError, match="--model is required"):
        run(EvalConfig(), tmp_path)
    assert main(["eval", "--run-dir", str(tmp_path), "--benchmarks", "ifeval"]) == 2
    assert "--model is required" in capsys.readouterr().err
    with pytest.raises(NiftError, match="--arena-baseline"):
        run(EvalConfig(model="x", backend="openai", benchmarks=["arena_hard"],
                       arena_hard_data=str(shared_data / "arena_hard")), tmp_path)
