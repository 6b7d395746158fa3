"""`nift eval` with real models: SmolLM2-135M answering an IFEval slice in-process, MT-Bench and Arena-Hard judged
by SmolLM2 behind a real OpenAI-compatible server, a nift train folder (base + LoRA adapter) as the target, the
lm-eval passthrough on a local task, and `nift compare` on the results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nift.cli import main
from nift.eval import arena_hard, ifeval, mt_bench
from nift.eval.config import EvalConfig
from nift.eval.stage import run


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.open()]


@pytest.fixture(scope="module")
def ifeval_before(tmp_path_factory, smollm2, shared_data) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    cfg = EvalConfig(model=smollm2, name="before", benchmarks=["ifeval"], ifeval_data=str(shared_data / "ifeval"),
                     limit=4, max_new_tokens=24, progress=False, n_boot=200)
    run(cfg, run_dir, log=lambda s: None)
    return run_dir


def test_smollm2_answers_an_ifeval_slice(ifeval_before: Path, shared_data):
    out = ifeval_before / "eval" / "before"
    answers = _rows(out / "answers" / "ifeval.jsonl")
    assert [a["id"] for a in answers] == ["1000", "1001", "1005", "1012"]
    loose: list[bool] = []  # lm-eval's loose verdict on every instruction of every stored answer
    for a in answers:
        assert a["status"] == "ok" and a["template"] == "chat" and a["model_version"].startswith("gguf-sha256:")
        assert a["finish_reason"] in ("stop", "length") and 0 < a["completion_tokens"] <= 24
        assert (a["finish_reason"] == "length") == (a["completion_tokens"] == 24)
        assert a["signals"]["stopped"] == (a["finish_reason"] == "stop")
        # The stored verdicts are lm-eval's on the stored answer.
        item = {"key": int(a["id"]), "prompt": a["question"], "instruction_id_list":
                a["ifeval"]["instruction_id_list"]}
        src = next(json.loads(x) for x in (shared_data / "ifeval" / "input_data.jsonl").open()
                   if json.loads(x)["key"] == item["key"])
        scored = ifeval.score_answer(src, a["answer"])
        assert scored["strict"] == a["ifeval"]["strict"]
        loose += scored["loose"]
    res = json.loads((out / "results.json").read_text())
    r = res["benchmarks"]["ifeval"]
    assert r["n_prompts"] == 4  # results.json stores accuracies to 4 digits
    assert r["inst_level_loose_acc"] == pytest.approx(sum(loose) / len(loose), abs=5e-5)
    assert r["prompt_level_strict_acc"] == sum(a["ifeval"]["prompt_strict"] for a in answers) / 4
    assert res["signals"]["ifeval"]["n"] == 4
    units = {(x["metric"], x["unit"]) for x in _rows(out / "per_item.jsonl")}
    assert ("ifeval/prompt_strict", "1000") in units and ("signals/stopped", "ifeval:1000#t1") in units
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stats"]["scores"]["ifeval_prompt_level_strict_acc"] == r["prompt_level_strict_acc"]
    # The same eval again is a no-op.
    logs: list[str] = []
    cfg = EvalConfig(**{**manifest["config"], "progress": False})
    assert run(cfg, ifeval_before, log=logs.append).skipped


def test_train_folder_is_evaluated_in_a_conversation_and_compared(ifeval_before: Path, smollm2, shared_data,
                                                                    tmp_path, capsys):
    """A nift train folder (PEFT adapter + nift_train.json): merged once, asked in a conversation as the paper did
    (the instruct base model's chat template), not with the training template, which is recorded beside it; then
    `nift compare before after` through the CLI."""
    import torch
    from peft import LoraConfig, get_peft_model

    from nift.models import load_model, tokenizer_hash

    model, tok = load_model(smollm2, device="cpu", dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False))
    train = tmp_path / "train"
    peft_model.save_pretrained(train / "adapter")
    (train / "nift_train.json").write_text(json.dumps({
        "base_model": smollm2, "template": {"name": "vanilla", "text": None, "eos_token": tok.eos_token},
        "eos_token": tok.eos_token, "tokenizer_hash": tokenizer_hash(tok), "method": "lora"}))
    rc = main(["eval", "--model", str(train), "--name", "after", "--run-dir", str(ifeval_before), "--benchmarks",
               "ifeval", "--ifeval-data", str(shared_data / "ifeval"), "--limit", "3", "--max-new-tokens", "16",
               "--no-progress", "--n-boot", "200"])
    assert rc == 0
    out = ifeval_before / "eval" / "after"
    res = json.loads((out / "results.json").read_text())
    assert res["template"] == "chat" and res["trained_template"] == "vanilla" and res["target"]["kind"] == "train"
    answers = _rows(out / "answers" / "ifeval.jsonl")
    assert all(a["template"] == "chat" for a in answers)
    assert all(a["ended_by"] in ("eos", "length") for a in answers)  # no stop string under the chat template
    capsys.readouterr()
    rc = main(["compare", str(ifeval_before / "eval" / "before"), str(out), "--n-boot", "200"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| ifeval/prompt_strict | 3 |" in printed and "signals/stopped" in printed
    assert "signals/stop_string" in printed and "signals/hit_limit" in printed
    cmp_dir = ifeval_before / "eval" / "compare-before-vs-after"
    data = json.loads((cmp_dir / "compare.json").read_text())
    tests = {m["metric"]: m["test"]["test"] for m in data["metrics"]}
    assert tests["ifeval/inst_strict"].startswith("mcnemar") and tests["signals/words"] == "wilcoxon"
    assert (cmp_dir / "compare.png").stat().st_size > 1000


def test_mt_bench_and_arena_hard_judged_by_a_real_model_server(openai_server, shared_data, tmp_path):
    qs = [json.loads(x) for x in (shared_data / "arena_hard" / "question.jsonl").open()][:1]
    base = tmp_path / "baseline.jsonl"
    base.write_text("".join(json.dumps({"question_id": q["question_id"], "model_id": "gpt-4-0314", "choices": [
        {"turns": [{"content": "I would need more details to answer that well."}]}]}) + "\n" for q in qs))
    server = {"backend": "openai", "model": openai_server.model, "base_url": openai_server.base_url,
              "api_key_env": openai_server.api_key_env}
    cfg = EvalConfig(
        model=openai_server.model, name="served", backend="openai", base_url=openai_server.base_url,
        api_key_env=openai_server.api_key_env, benchmarks=["mt_bench", "arena_hard"], limit=1, max_new_tokens=12,
        mt_bench_data=str(shared_data / "mt_bench"), arena_hard_data=str(shared_data / "arena_hard"),
        arena_baseline=str(base), judge=server, judge_max_tokens=12, progress=False, n_boot=200)
    run(cfg, tmp_path, log=lambda s: None)
    out = tmp_path / "eval" / "served"
    res = json.loads((out / "results.json").read_text())
    mt, ah = res["benchmarks"]["mt_bench"], res["benchmarks"]["arena_hard"]
    assert mt["n_judgments"] == 2 and mt["n_scored"] + mt["n_unparseable"] == 2
    assert ah["n_games"] == 2 and sum(ah["verdicts"].values()) == 2
    judgments = _rows(out / "judgments" / "mt_bench.jsonl") + _rows(out / "judgments" / "arena_hard.jsonl")
    for j in judgments:
        assert j["judgment"] and j["judge_model"] and j["attempts"] in (1, 2)
        # the status and value are the official parser's on the stored judgment (a retry's is both replies joined)
        value, parsed = (mt_bench.parse_rating(j["judgment"]) if "score" in j
                         else arena_hard.parse_verdict(j["judgment"]))
        assert j["status"] == ("ok" if parsed == "ok" else f"unparseable:{parsed}"), (j["status"], parsed)
        assert j.get("score", j.get("verdict")) == value
        assert j["completion_tokens"] <= 12 * j["attempts"]
    mt_rows = _rows(out / "judgments" / "mt_bench.jsonl")
    assert {r["judge_prompt"] for r in mt_rows} == {"single-v1", "single-v1-multi-turn"}  # writing questions
    assert sorted((r["id"], r["turn"]) for r in mt_rows) == [("81", 0), ("81", 1)]
    answers = _rows(out / "answers" / "mt_bench.jsonl")
    assert len(answers) == 2 and {a["turn"] for a in answers} == {0, 1}
    assert res["usage"]["judge"]["requests"] >= 4


def test_lm_eval_passthrough_on_a_local_task(smollm2, tmp_path):
    task_dir = tmp_path / "tasks"
    task_dir.mkdir()
    docs = [{"question": "What color is the sky on a clear day?", "choices": ["blue", "green"], "answer": 0},
            {"question": "How many legs does a cat have?", "choices": ["two", "four"], "answer": 1},
            {"question": "Which animal says moo?", "choices": ["cow", "dog"], "answer": 0}]
    (task_dir / "tiny.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (task_dir / "tiny.yaml").write_text(
        "task: nift_tiny_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {task_dir / 'tiny.jsonl'}\ntest_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "Question: {{question}}\\nAnswer:"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: "{{answer}}"\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n")
    cfg = EvalConfig(model=smollm2, name="lm", benchmarks=[], lm_eval=["nift_tiny_mc"],
                     lm_eval_include=str(task_dir), lm_eval_limit=2, progress=False, batch_size=8)
    run(cfg, tmp_path, log=lambda s: None)
    out = tmp_path / "eval" / "lm"
    lm = json.loads((out / "lm_eval.json").read_text())
    rows = [r for r in _rows(out / "per_item.jsonl") if r["metric"] == "lm_eval/nift_tiny_mc/acc"]
    assert len(rows) == 2 and all(r["kind"] == "binary" for r in rows)
    # lm-eval's aggregate is the mean of the per-document verdicts nift wrote out
    assert lm["nift_tiny_mc"]["results"]["nift_tiny_mc"]["acc,none"] == pytest.approx(
        sum(r["value"] for r in rows) / 2)


@pytest.mark.slow
def test_lm_eval_unknown_task_is_named(smollm2, tmp_path):
    """Slow only because lm-eval indexes its ~15k built-in task files (about 20 s) before it can say no."""
    from nift.errors import ConfigError

    cfg = EvalConfig(model=smollm2, name="bad", benchmarks=[], lm_eval=["arc_challange"], progress=False)
    with pytest.raises(ConfigError, match=r"unknown task 'arc_challange'.*Did you mean 'arc_challenge'"):
        run(cfg, tmp_path, log=lambda s: None)
