"""The `hf` backend (real SmolLM2-135M in-process) and the `nift distill` stage end to end."""

from __future__ import annotations

import pytest
from helpers.corpora import prepared_run

from nift.artifacts import read_manifest
from nift.cli import main
from nift.distill import run
from nift.distill.config import DistillConfig
from nift.errors import InputError
from nift.io import read_jsonl
from nift.llm import Request, run_requests
from nift.llm.backends.hf import HFBackend
from nift.llm.config import BackendConfig


def cfg(model: str, **kw) -> BackendConfig:
    kw = {"max_tokens": 8, "batch_size": 4, **kw}
    return BackendConfig(backend="hf", model=model, device="cpu", **kw)


def test_hf_batched_generation_raw_chat_multiturn_and_finish_reasons(hf_teacher, smollm2, tmp_path):
    reqs = [
        Request(id="raw", prompt="The capital of France is"),
        Request(id="chat", messages=[{"role": "user", "content": "What is 2+2?"}], max_tokens=40),
        Request(id="turns", messages=[{"role": "user", "content": "Hi"},
                                      {"role": "assistant", "content": "Hello! How can I help?"},
                                      {"role": "user", "content": "Name a color."}], max_tokens=40),
        Request(id="long", prompt="Once upon a time in a small village by the sea, there lived an old fisherman "
                                  "who every morning"),
    ]
    res = run_requests(cfg(smollm2), reqs, tmp_path / "c.sqlite", progress=False, backend=hf_teacher)
    assert "Paris" in res["raw"].text and res["raw"].finish_reason == "length"
    assert res["raw"].completion_tokens == 8 and res["raw"].prompt_tokens == 5
    assert res["chat"].finish_reason == "stop" and "4" in res["chat"].text  # ended by EOS before 40 tokens
    assert res["chat"].stop_reason == "eos" and res["raw"].stop_reason is None
    assert res["chat"].completion_tokens < 40 and "<|im_end|>" not in res["chat"].text
    assert res["turns"].finish_reason == "stop" and res["turns"].text.strip()
    assert res["turns"].prompt_tokens > res["chat"].prompt_tokens  # every turn went through the chat template
    assert res["long"].finish_reason == "length" and res["long"].completion_tokens == 8
    assert all(r.cost_usd == 0 and r.model_version.startswith("gguf-sha256:") for r in res.values())
    # batched with left padding == one at a time (greedy)
    single = run_requests(cfg(smollm2, batch_size=1), [Request(id="raw2", prompt="The capital of France is")],
                          tmp_path / "d.sqlite", progress=False, backend=hf_teacher)
    assert single["raw2"].text == res["raw"].text


def test_hf_stop_sequences_and_long_prompts(hf_teacher, smollm2, tmp_path):
    res = run_requests(cfg(smollm2, stop=["."], max_tokens=16),
                       [Request(id="a", prompt="The capital of France is"),
                        Request(id="count", prompt="1, 2, 3, 4, 5, 6, 7,")],  # runs to max_tokens in the same batch
                       tmp_path / "a.sqlite", progress=False, backend=hf_teacher)
    assert res["a"].finish_reason == "stop" and "." not in res["a"].text and "Paris" in res["a"].text
    assert res["a"].stop_reason == "stop_string"  # told apart from the model's own EOS
    assert res["count"].finish_reason == "length" and res["count"].completion_tokens == 16
    # the tokens it generated up to its stop string, not the padding that fills it to the batch's longest row
    assert res["a"].completion_tokens < 8
    long_prompt = " ".join(["the old house on the hill"] * 40)  # 240 tokens
    c = cfg(smollm2, context_tokens=64, max_tokens=4)
    res = run_requests(c, [Request(id="l", prompt=long_prompt)], tmp_path / "b.sqlite", progress=False,
                       backend=hf_teacher)
    assert res.summary.truncated == 1 and res["l"].prompt_tokens <= 60 and res.summary.truncated_tokens >= 180
    res = run_requests(c.model_copy(update={"on_long_prompt": "skip"}), [Request(id="l", prompt=long_prompt)],
                       tmp_path / "c.sqlite", progress=False, backend=hf_teacher)
    assert not res and res.summary.skipped[0].reason == "too_long"


def test_distill_stage_end_to_end_resume_and_force(smollm2, tmp_path, capsys):
    run_dir = prepared_run(tmp_path, n=6)
    c = DistillConfig(teacher=cfg(smollm2, max_tokens=6), progress=False)
    logs: list[str] = []
    res = run(c, run_dir, log=logs.append)
    rows = list(read_jsonl(run_dir / "distill" / "data.jsonl"))
    prep = [r["id"] for r in read_jsonl(run_dir / "prepare" / "data.jsonl")]
    assert [r["id"] for r in rows] == prep
    for r in rows:
        assert set(r) == {"id", "completion", "finish_reason", "prompt_tokens", "completion_tokens", "cost_usd",
                          "teacher", "latency_s", "model_version"}
        assert r["teacher"] == f"hf:{smollm2}" and r["completion"] and r["finish_reason"] in ("stop", "length")
    m = res.manifest
    assert m["stats"]["sent"] == 6 and m["cost"]["total"]["completion_tokens"] == sum(r["completion_tokens"]
                                                                                      for r in rows)
    assert "cache.sqlite" not in m["files"] and (run_dir / "distill" / "cache.sqlite").exists()
    assert any("wrote 6 rows" in x for x in logs)
    # same config: skipped; a volatile change (batch size): still skipped
    assert run(c, run_dir, log=logs.append).skipped
    c2 = DistillConfig(teacher=cfg(smollm2, max_tokens=6, batch_size=2), progress=False)
    assert run(c2, run_dir, log=logs.append).skipped
    # --force: re-assembled from the store, nothing generated again
    again = run(c, run_dir, force=True, log=logs.append)
    assert again.manifest["stats"]["cached"] == 6 and again.manifest["stats"]["sent"] == 0
    assert list(read_jsonl(run_dir / "distill" / "data.jsonl")) == rows
    # --limit: nested subsample, served from the store
    part = run(DistillConfig(teacher=cfg(smollm2, max_tokens=6), limit=3, progress=False), run_dir, log=logs.append)
    assert part.manifest["stats"]["sent"] == 0 and part.manifest["rows"]["data.jsonl"] == 3


def test_distill_cli_dry_run_and_errors(smollm2, tmp_path, capsys):
    run_dir = prepared_run(tmp_path, n=4)
    assert main(["distill", "--run-dir", str(run_dir), "--dry-run", "--teacher.max-tokens", "5",
                 "--teacher.model", smollm2]) == 0
    out = capsys.readouterr().out
    assert "dry run, nothing sent" in out and "to send: 4" in out and "at most 20" in out
    assert read_manifest(run_dir / "distill") is None
    assert main(["distill", "--run-dir", str(run_dir), "--teacher.max-tokens", "0"]) == 2
    assert "--teacher.max-tokens: Input should be greater than or equal to 1" in capsys.readouterr().err
    assert main(["distill", "--run-dir", str(tmp_path / "nothing")]) == 2
    assert "prepare/manifest.json is missing: run the stage that writes prepare/ first" in capsys.readouterr().err
    # a YAML teacher merged with a CLI override of one sub-field
    y = tmp_path / "c.yaml"
    y.write_text(f"run_dir: {run_dir}\ndistill:\n  teacher:\n    model: {smollm2}\n    max_tokens: 3\n")
    assert main(["distill", "-c", str(y), "--teacher.max-tokens", "2", "--dry-run"]) == 0
    assert "at most 8" in capsys.readouterr().out  # 4 prompts x 2 tokens, the YAML's model kept


def test_distill_bad_prepared_input(smollm2, tmp_path):
    run_dir = prepared_run(tmp_path, n=3)
    data = run_dir / "prepare" / "data.jsonl"
    lines = data.read_text().splitlines()
    data.write_text("\n".join([lines[0], '{"id": "x", "prompt": "   "}', lines[2]]) + "\n")
    with pytest.raises(InputError, match=r"data.jsonl:2: field 'prompt' is empty"):
        run(DistillConfig(teacher=cfg(smollm2), on_empty_prompt="error", dry_run=True), run_dir, log=lambda *_: 0)
    est = run(DistillConfig(teacher=cfg(smollm2), dry_run=True), run_dir, log=lambda *_: 0)
    assert est["empty_prompts"] == 1 and est["to_send"] == 2
    data.write_text(lines[0] + "\n{broken\n")
    with pytest.raises(InputError, match=r"data.jsonl:2: malformed JSON"):
        run(DistillConfig(teacher=cfg(smollm2), dry_run=True), run_dir, log=lambda *_: 0)
    with pytest.raises(InputError, match=r"prepare/manifest\.json is missing"):
        run(DistillConfig(teacher=cfg(smollm2)), tmp_path / "empty-run", log=lambda *_: 0)


def test_hf_backend_loads_lazily(smollm2):
    b = HFBackend(cfg(smollm2))
    assert b.model is None and b.count_tokens("The capital of France is") == 5 and b.context_tokens() == 8192


def test_a_shared_prompt_prefix_is_computed_once_and_changes_nothing(smollm2, gemma_base, tmp_path):
    """FastChat's one_shot puts ~460 tokens of one-shot example before every question: the hf backend runs that
    prefix once per batch and copies its cache; the greedy answers equal those computed whole."""
    from nift.eval.templates import render
    from nift.llm.backends.hf import HFBackend, shared_prefix

    assert shared_prefix([[1] * 70 + [2], [1] * 70 + [3, 4]]) == [1] * 70
    assert shared_prefix([[1] * 70], ) == [] and shared_prefix([[1] * 10 + [2], [1] * 10 + [3]]) == []
    assert shared_prefix([[1] * 80, [1] * 80]) == [1] * 79  # each row keeps a token of its own

    questions = ["Write a haiku about rain.", "List three fruits.", "What is 2+2?", "Name a colour."]
    reqs = [Request(id=f"q{i}", prompt=render("one_shot", [(q, None)]).prompt) for i, q in enumerate(questions)]
    for model in (smollm2, gemma_base):
        # float32: equal greedy text is the claim there; in bf16 (a CPU with AVX512-BF16) a cached prefix sums in
        # another order and a near-tie may flip, which _check_prefix_cache allows for
        c = cfg(model, max_tokens=12, batch_size=4, stop=["###"], dtype="float32")
        backend = HFBackend(c)
        backend.prefix_cache, backend._prefix = True, None
        cached = run_requests(c, reqs, tmp_path / f"{model}-a.sqlite", progress=False, backend=backend)
        assert backend._prefix is not None and len(backend._prefix[0]) > 400  # the one-shot example, once
        backend.prefix_cache = False
        whole = run_requests(c, reqs, tmp_path / f"{model}-b.sqlite", progress=False, backend=backend)
        backend.prefix_cache = True
        assert [cached[r.id].text for r in reqs] == [whole[r.id].text for r in reqs]
        assert [cached[r.id].finish_reason for r in reqs] == [whole[r.id].finish_reason for r in reqs]
