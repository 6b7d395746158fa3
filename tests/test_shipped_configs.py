"""Every shipped config validates without running it (torchtune's config/_validate.py idea)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nift.config import load_config, packaged_config
from nift.llm.config import PAPER_SYSTEM_PROMPT

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "src" / "nift" / "configs").rglob("*.yaml"))


def test_configs_ship():
    names = {p.relative_to(p.parents[1] if p.parent.name == "paper" else p.parent).as_posix() for p in CONFIGS}
    assert "quickstart.yaml" in names
    assert len([p for p in CONFIGS if p.parent.name == "paper"]) >= 4


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_validates(path):
    cfg = load_config(path)
    assert cfg.run_dir and cfg.prepare.n_docs
    # the paper's method: temperature 0, vanilla template, EOS-terminated LoRA SFT on continuations
    assert cfg.distill.teacher.temperature == 0.0
    assert cfg.train.template == "vanilla"
    if path.parent.name == "paper":
        assert cfg.train.epochs == 3 and cfg.train.lr == 5e-5 and cfg.train.lr_scheduler == "cosine"
        assert cfg.train.per_device_batch_size == 8 and cfg.train.grad_accum == 4


def test_named_configs_resolve():
    assert packaged_config("quickstart").name == "quickstart.yaml"
    assert packaged_config("paper/mistral-7b-gpt4-turbo-80k") is not None


def test_paper_presets_say_what_the_paper_did():
    m = load_config("paper/mistral-7b-gpt4-turbo-80k")
    assert m.prepare.n_docs == 80_000 and m.distill.teacher.model == "gpt-4-0125-preview"
    assert m.train.model == "mistralai/Mistral-7B-v0.1" and m.merge.method == "lora"
    lb = load_config("paper/llama-3-8b-gpt4-turbo-lora-base")
    assert lb.train.model == "meta-llama/Meta-Llama-3-8B"
    assert lb.merge.method == "lora-base" and lb.merge.target == "meta-llama/Meta-Llama-3-8B-Instruct"
    for teacher in ("haiku", "sonnet", "opus"):
        c = load_config(f"paper/mistral-7b-claude-3-{teacher}-10k")
        assert c.distill.teacher.backend.startswith("anthropic") and teacher in c.distill.teacher.model
        assert c.distill.teacher.system_prompt == PAPER_SYSTEM_PROMPT
    big = load_config("paper/llama-3-8b-gpt-4o-mini-300k")
    assert big.prepare.n_docs == 300_000 and big.distill.teacher.model == "gpt-4o-mini"


def test_quickstart_is_offline_and_small():
    q = load_config("quickstart")
    assert q.prepare.input == ["builtin:lee"]
    assert q.distill.teacher.backend == "hf" and q.train.model == "gemma-3-270m"
    assert q.prepare.n_docs <= 200


def test_the_reproduction_study_has_the_papers_controls():
    """study/small: base, distilled and undistilled (the paper's control), each trained arm with >= 2 seeds, all
    asked >= 100 IFEval prompts in the paper's conversation template (auto), not the training template."""
    s = load_config("study/small")
    assert s.sweep.param == "train.data" and s.sweep.values == ["audit", "reference"]
    assert s.sweep.labels == ["distilled", "undistilled"] and s.sweep.control == "undistilled"
    assert len(s.sweep.seeds) >= 2 and s.eval.limit >= 100 and s.eval.template == "auto"
    assert s.pipeline.eval_before and s.prepare.input == ["builtin:lee"]
