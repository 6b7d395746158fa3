"""AlpacaEval as a benchmark of `nift eval`, through the engine over real HTTP: the weighted judge's log-probabilities
become preferences in the order alpaca_eval shows the outputs, a judge without them is read from its token, the
win rate and the length-controlled win rate are reported with intervals, and `nift compare` pairs the instructions."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from nift.errors import InputError
from nift.eval import alpaca_eval, data
from nift.eval.compare import compare
from nift.eval.config import EvalConfig
from nift.eval.stage import run
from tests.helpers.chat_server import chat_server

GAMED = Path(__file__).parents[1] / "fixtures" / "reference" / "alpaca_df_gamed.csv"


def _reply(mode: str, body: dict):
    if mode.startswith("answer"):
        q = body["messages"][-1]["content"]
        n = len(q) % 40  # answers of varied length: some longer than the reference, most shorter
        return "short answer " * (n + 1) if mode == "answer" else "a much longer answer " * (n + 30)
    if mode == "weighted":
        # A judge that likes length: the longer shown output gets P = 0.8.
        first, second = re.findall(r'"output": """(.*?)"""', body["messages"][-1]["content"], re.S)
        p_second = 0.8 if len(second) > len(first) else 0.2
        return "M", [("M", math.log(p_second)), ("m", math.log(1 - p_second)), ("Both", -9.0)]
    return "M"  # a judge without log-probabilities


@pytest.fixture
def server():
    with chat_server(_reply) as s:
        yield s


def _cfg(base: str, shared_data: Path, judge_mode: str, answer_mode: str = "answer", **kw) -> EvalConfig:
    return EvalConfig(
        model=f"{answer_mode}-model", backend="openai", base_url=f"{base}/{answer_mode}/v1",
        api_key_env="NIFT_TEST_OPENAI_KEY", benchmarks=["alpaca_eval"], limit=30, progress=False, n_boot=100,
        alpaca_eval_data=str(shared_data / "alpaca_eval"), **{"alpaca_eval_glm": str(GAMED), **kw},
        judge={"backend": "openai", "model": "fake-1", "base_url": f"{base}/{judge_mode}/v1",
               "api_key_env": "NIFT_TEST_OPENAI_KEY"})


def test_weighted_judge_win_rate_lc_and_compare(tmp_path, server, shared_data, monkeypatch):
    monkeypatch.setenv("NIFT_TEST_OPENAI_KEY", "sk-test")
    base, seen = server
    run(_cfg(base, shared_data, "weighted", name="short"), tmp_path, log=lambda s: None)
    judged = [r for r in seen if r["mode"] == "weighted"]
    assert len(judged) == 30
    assert all(r["max_tokens"] == 1 and r["temperature"] == 1.0 and r["logprobs"] is True and r["top_logprobs"] == 5
               for r in judged)
    items = data.load_alpaca_eval(str(shared_data / "alpaca_eval"), None).questions[:30]
    answers = {json.loads(x)["id"]: json.loads(x)["answer"] for x in (tmp_path / "eval" / "short" / "answers" /
                                                                       "alpaca_eval.jsonl").open()}
    expected = [0.8 if len(answers[it["id"]]) > len(it["reference"]) else 0.2 for it in items]
    out = tmp_path / "eval" / "short"
    res = json.loads((out / "results.json").read_text())["benchmarks"]["alpaca_eval"]
    assert res["win_rate"] == pytest.approx(100 * sum(expected) / 30, abs=1e-3)
    assert res["weighted"] and res["n_total"] == 30 and res["n_unparseable"] == 0
    assert res["ci95"][0] < res["win_rate"] < res["ci95"][1]
    assert 0.2 < sum(expected) / 30 < 0.8
    assert 0 < res["length_controlled_winrate"] < 100 and res["lc_ci95"][0] <= res["lc_ci95"][1]
    assert set(res["glm_weights"]) == set(alpaca_eval.GLM_FEATURES)
    assert res["reference_generators"] == ["text_davinci_003"]
    shown = json.loads(next((out / "judgments" / "alpaca_eval.jsonl").open()))
    assert shown["switched"] == alpaca_eval.is_switched(items[0]["turns"][0])
    # A longer-answering model against the same references: compare pairs the 30 instructions.
    run(_cfg(base, shared_data, "weighted", answer_mode="answerlong", name="long"), tmp_path, log=lambda s: None)
    res_long = json.loads((tmp_path / "eval" / "long" / "results.json").read_text())["benchmarks"]["alpaca_eval"]
    # Length alone won the long answers their judgments; the length-controlled win rates are much closer.
    raw_gap = res_long["win_rate"] - res["win_rate"]
    assert raw_gap > 20
    assert abs(res_long["length_controlled_winrate"] - res["length_controlled_winrate"]) < raw_gap / 2
    cmp = compare(out, tmp_path / "eval" / "long", log=lambda s: None)
    row = next(r for r in cmp["metrics"] if r["metric"] == "alpaca_eval/preference")
    assert row["n_paired"] == 30 and row["diff"] == pytest.approx(raw_gap / 100, abs=1e-6)


def test_judge_without_logprobs_is_read_from_its_token(tmp_path, server, shared_data, monkeypatch):
    monkeypatch.setenv("NIFT_TEST_OPENAI_KEY", "sk-test")
    base, _ = server
    run(_cfg(base, shared_data, "plain", name="plain", alpaca_eval_glm=None), tmp_path, log=lambda s: None)
    res = json.loads((tmp_path / "eval" / "plain" / "results.json").read_text())["benchmarks"]["alpaca_eval"]
    items = data.load_alpaca_eval(str(shared_data / "alpaca_eval"), None).questions[:30]
    wins = sum(not alpaca_eval.is_switched(it["turns"][0]) for it in items)
    assert res["win_rate"] == pytest.approx(100 * wins / 30, abs=1e-3) and res["n_wins"] == wins
    assert "length_controlled_winrate" not in res


def test_alpaca_data_errors_name_the_file_and_the_item(tmp_path):
    bad = tmp_path / "alpaca_eval.json"
    bad.write_text(json.dumps([{"instruction": "a", "output": "b"}, {"instruction": "c"}]))
    with pytest.raises(InputError, match=r"alpaca_eval.json: item 1: .*'output'"):
        data.load_alpaca_eval(str(bad), None)
    gamed = tmp_path / "df_gamed.csv"
    gamed.write_text("model,index,preference,std_delta_len,instruction_difficulty\nx,0,0.5,oops,0.1\n")
    with pytest.raises(InputError, match=r"df_gamed.csv:2: field 'std_delta_len'"):
        alpaca_eval.read_gamed(str(gamed))
    gamed.write_text("model,index,preference\n")
    with pytest.raises(InputError, match=r"missing column"):
        alpaca_eval.read_gamed(str(gamed))
