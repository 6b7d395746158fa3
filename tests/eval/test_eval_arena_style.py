"""Arena-Hard through `nift eval` with `--arena-style-control`, over real HTTP: v0.1 data judged with v0.1's rules,
v2.0 data with v2.0's (lower-case labels, last match, no second attempt), each with the style-controlled score of
its version computed from the judgments and answers written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nift.eval import arena_hard, arena_style
from nift.eval.config import EvalConfig
from nift.eval.stage import run
from tests.helpers.chat_server import chat_server


def _reply(mode: str, body: dict) -> str:
    if mode == "answer":
        q = body["messages"][-1]["content"]
        return "## Answer\n" + "- a point about it\n" * (len(q) % 7) + "**done**"
    # A judge that prefers the longer answer, in the label style of the version asked.
    user = body["messages"][-1]["content"]
    a = user.split("<|The Start of Assistant A's Answer|>")[1].split("<|The End of Assistant A's Answer|>")[0]
    b = user.split("<|The Start of Assistant B's Answer|>")[1].split("<|The End of Assistant B's Answer|>")[0]
    label = "A>B" if len(a) > len(b) + 40 else "B>>A" if len(b) > len(a) + 40 else "A=B"
    return f"Verdict: [[{label.lower()}]]" if mode == "v2" else f"My final verdict: [[{label}]]"


def _data(tmp_path: Path, shared_data: Path, version: str) -> Path:
    qs = [json.loads(x) for x in (shared_data / "arena_hard" / "question.jsonl").open()][:12]
    d = tmp_path / version
    (d / "model_answer").mkdir(parents=True)
    with open(d / "question.jsonl", "w") as f, open(d / "model_answer" / "gpt-4-0314.jsonl", "w") as b:
        for i, q in enumerate(qs):
            text = "A baseline answer. " * (1 + i % 9)
            if version == "v0.1":
                f.write(json.dumps(q) + "\n")
                b.write(json.dumps({"question_id": q["question_id"], "model_id": "gpt-4-0314",
                                    "choices": [{"index": 0, "turns": [{"content": text}]}]}) + "\n")
            else:
                f.write(json.dumps({"uid": q["question_id"], "category": "hard_prompt",
                                    "prompt": q["turns"][0]["content"]}) + "\n")
                b.write(json.dumps({"uid": q["question_id"], "model": "o3-mini-2025-01-31",
                                    "messages": [{"role": "user", "content": q["turns"][0]["content"]},
                                                 {"role": "assistant", "content": {"answer": text}}]}) + "\n")
    return d


@pytest.mark.parametrize("version", ["v0.1", "v2.0"])
def test_style_controlled_arena_hard(tmp_path, shared_data, monkeypatch, version):
    monkeypatch.setenv("NIFT_TEST_OPENAI_KEY", "sk-test")
    judge_mode = "v2" if version == "v2.0" else "v01"
    with chat_server(_reply) as (base, seen):
        cfg = EvalConfig(
            model="answer-model", backend="openai", base_url=f"{base}/answer/v1", api_key_env="NIFT_TEST_OPENAI_KEY",
            benchmarks=["arena_hard"], max_new_tokens=64, progress=False, n_boot=100, arena_style_control=True,
            arena_hard_data=str(_data(tmp_path, shared_data, version)), name=version,
            judge={"backend": "openai", "model": "fake-1", "base_url": f"{base}/{judge_mode}/v1",
                   "api_key_env": "NIFT_TEST_OPENAI_KEY"})
        run(cfg, tmp_path, log=lambda s: None)
    out = tmp_path / "eval" / version
    res = json.loads((out / "results.json").read_text())["benchmarks"]["arena_hard"]
    assert res["version"] == version and res["n_unparseable"] == 0 and res["n_games"] == 24
    # v0.1's rules read the lower-case labels of the v2.0 judge as no verdict; v2.0's read them.
    assert len([r for r in seen if r["mode"] == judge_mode]) == 24
    judgments = [json.loads(x) for x in (out / "judgments" / "arena_hard.jsonl").open()]
    answers = {a["id"]: a["answer"] for a in map(json.loads, (out / "answers" / "arena_hard.jsonl").open())}
    qids = [str(json.loads(x).get("uid", json.loads(x).get("question_id")))
            for x in (tmp_path / version / "question.jsonl").open()]
    base_text = {q: "A baseline answer. " * (1 + i % 9) for i, q in enumerate(qids)}
    battles = []
    for j in judgments:
        o, w = arena_hard.model_outcome(j["verdict"], j["game"])
        battles += [{"id": j["id"], "outcome": o, "model_meta": arena_style.style_metadata(answers[j["id"]], version),
                     "baseline_meta": arena_style.style_metadata(base_text[j["id"]], version)}] * w
    sc = res["style_control"]
    assert sc["win_rate"] == round(arena_style.style_controlled_score(battles, version), 2)
    assert sc["ci95"][0] <= sc["win_rate"] <= sc["ci95"][1]
    assert sc["win_rate"] != res["win_rate"]
    assert json.loads((out / "manifest.json").read_text())["stats"]["scores"]["arena_hard_style_controlled"] == \
        sc["win_rate"]
