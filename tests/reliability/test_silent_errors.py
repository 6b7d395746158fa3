"""Silently wrong results (issue 13, item 6): each case here used to run on and give a wrong answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nift.config import load_config
from nift.errors import ConfigError


def test_a_boolean_is_not_a_count(tmp_path: Path):
    """`n_docs: true` was read as 1 (one document sampled); a flag that holds a number refuses a boolean."""
    path = tmp_path / "c.yaml"
    path.write_text("prepare:\n  n_docs: true\ndistill:\n  teacher:\n    max_tokens: 64\n")
    with pytest.raises(ConfigError, match=r"c.yaml:2: prepare.n_docs: .*boolean true"):
        load_config(path)
    path.write_text("distill:\n  teacher:\n    max_tokens: false\n")
    with pytest.raises(ConfigError, match=r"distill.teacher.max_tokens: .*boolean false"):
        load_config(path)
    path.write_text("prepare:\n  n_docs: 3\n  dedup: false\n")
    cfg = load_config(path)
    assert cfg.prepare.n_docs == 3 and cfg.prepare.dedup is False


def test_sweep_checks_every_value_before_running_any(tmp_path: Path, monkeypatch):
    """`nift sweep --values 3 -5` ran the whole pipeline for 3, then rejected -5."""
    from nift import pipeline, sweep

    ran: list = []
    monkeypatch.setattr(pipeline, "run", lambda cfg, **kw: ran.append(cfg))
    path = tmp_path / "c.yaml"
    path.write_text(f"run_dir: {tmp_path / 'runs'}\n")
    with pytest.raises(ConfigError, match=r"--param distill.limit \(value -5\)"):
        sweep.run(str(path), "distill.limit", ["3", "-5"], log=lambda *_: None)
    assert ran == []


def test_whitespace_completions_are_not_trained_on(tmp_path: Path):
    """An all-whitespace file trained to loss 15 and wrote an adapter: whitespace-only completions count as empty."""
    from nift.train.data import DataSpec, load_examples

    data = tmp_path / "pairs.jsonl"
    rows = [{"prompt": "The cat", "completion": " \n\t "}, {"prompt": "A dog", "completion": " barked."},
            {"prompt": "Rain", "completion": "\u3000\n"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    convs, skipped = load_examples(DataSpec("file", {}, data), tmp_path)
    assert [c.id for c in convs] == [f"{data}:2"]
    assert skipped["empty_completion"] == 2

    run = tmp_path / "run"
    (run / "prepare").mkdir(parents=True)
    (run / "distill").mkdir()
    (run / "prepare" / "data.jsonl").write_text('{"id": "a", "prompt": "x"}\n{"id": "b", "prompt": "y"}\n')
    (run / "distill" / "data.jsonl").write_text('{"id": "a", "completion": "  "}\n{"id": "b", "completion": "ok"}\n')
    convs, skipped = load_examples(DataSpec("distill", {"distill": run / "distill", "prepare": run / "prepare"}), run)
    assert [c.id for c in convs] == ["b"] and skipped["empty_completion"] == 1


def _tiny_adapter_and_target(tmp_path: Path, target_modules):
    import torch

    from nift.checkpoint import Checkpoint, TensorInfo
    from nift.merge.adapter import Adapter, LoraModule

    names = [f"model.layers.0.self_attn.{p}_proj.weight" for p in "qkvo"] + ["model.embed_tokens.weight"]
    target = Checkpoint(tmp_path, "target tiny", [], {n: TensorInfo(n, tmp_path / "m.safetensors", "F32", (8, 8))
                                                     for n in names}, {"tie_word_embeddings": True}, {})
    mods = {f"model.layers.0.self_attn.{p}_proj.weight": LoraModule(f"model.layers.0.self_attn.{p}_proj",
                                                                    torch.zeros(2, 8), torch.zeros(8, 2), 1.0)
            for p in "qv"}
    cfg = {"peft_type": "LORA", "r": 2, "lora_alpha": 2, "target_modules": target_modules}
    return Adapter(tmp_path / "adapter", cfg, tmp_path / "adapter" / "adapter_model.safetensors", mods, {}, 0), target


def test_target_modules_naming_a_missing_module_is_refused(tmp_path: Path):
    """target_modules edited to a module the model lacks merged silently with --verify off (traceback with it on)."""
    from nift.merge.checks import check_adapter

    adapter, target = _tiny_adapter_and_target(tmp_path, ["q_proj", "v_projj"])
    errors = check_adapter(adapter, target)
    assert any("target_modules names 'v_projj'" in e and "no module of that name" in e for e in errors), errors
    assert any("self_attn.v_proj: has LoRA weights but is not in" in e for e in errors), errors
    for fine in (["q_proj", "v_proj", "lm_head"], "all-linear", r".*\.(q|v)_proj"):
        adapter, target = _tiny_adapter_and_target(tmp_path, fine)
        assert check_adapter(adapter, target) == [], fine
    adapter, target = _tiny_adapter_and_target(tmp_path, r".*\.(q|x)_proj")
    assert any("v_proj: has LoRA weights" in e for e in check_adapter(adapter, target))


def _eval_folder(path: Path, values: list, manifest: bool = True) -> Path:
    path.mkdir(parents=True)
    rows = [{"metric": "ifeval/strict", "unit": f"p{i}", "value": v, "kind": "binary"} for i, v in enumerate(values)]
    # json.dumps writes float('nan') as the NaN that Python's json reads back
    (path / "per_item.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "results.json").write_text("{}")
    if manifest:
        (path / "manifest.json").write_text('{"stage": "eval"}')
    return path


def test_compare_refuses_an_interrupted_eval(tmp_path: Path):
    """An eval folder without manifest.json (interrupted) was compared as if it had finished."""
    from nift.errors import InputError
    from nift.eval.compare import compare

    a = _eval_folder(tmp_path / "before", [1, 0, 1, 0])
    b = _eval_folder(tmp_path / "after", [1, 1], manifest=False)
    with pytest.raises(InputError, match=r"after is not a finished `nift eval` folder: it has no manifest.json"):
        compare(a, b, out=tmp_path / "cmp", n_boot=50, log=lambda *_: None)


def test_nan_in_a_pass_fail_column_is_missing_not_a_pass(tmp_path: Path):
    """NaN in a pass/fail column of per_item.jsonl counted as a pass in `nift compare`."""
    from nift.eval.compare import compare

    a = _eval_folder(tmp_path / "before", [0, 0, 0, 0])
    b = _eval_folder(tmp_path / "after", [0, float("nan"), float("nan"), 0])
    logged: list[str] = []
    res = compare(a, b, out=tmp_path / "cmp", n_boot=50, log=logged.append)
    row = res["metrics"][0]
    assert row["n_paired"] == 2 and row["mean_b"] == 0.0 and row["unpaired_a"] == 2
    assert any("2 value(s) of ifeval/strict are not finite numbers (line 2, ...)" in w for w in res["warnings"])
    assert any("not finite" in line for line in logged)
