"""`nift merge` on tiny random-initialised models: lora, lora-base, adapter scaling, chat vectors, the checks
before writing, idempotence, verification, and the CLI."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from merge_helpers import DATA_MANIFEST_HASH, dtypes, make_adapter, tensors, tiny_model

from nift.artifacts import read_manifest, write_json
from nift.cli import main
from nift.errors import ConfigError, InputError, NiftError
from nift.merge import MergeRefused, run
from nift.merge.config import MergeConfig

QUIET = {"log": lambda *_: None}


def cfg(**kw) -> MergeConfig:
    return MergeConfig(progress=False, **kw)


def lora_deltas(adapter_dir) -> dict[str, torch.Tensor]:
    """ΔW = (α/r)·B·A per target weight, computed independently of nift from the adapter files."""
    from safetensors.torch import load_file

    conf = json.loads((adapter_dir / "adapter_config.json").read_text())
    state = load_file(str(adapter_dir / "adapter_model.safetensors"))
    out = {}
    for key, a in state.items():
        if ".lora_A." in key:
            b = state[key.replace(".lora_A.", ".lora_B.")]
            name = key.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")
            out[name] = (b.float() @ a.float()) * (conf["lora_alpha"] / conf["r"])
    return out


def test_lora_merge_equals_peft_merge_and_writes_a_full_hf_folder(tiny, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    res = run(cfg(adapter=str(tiny.adapter)), tmp_path, **QUIET)
    out = tmp_path / "merge" / "model"
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "README.md",
            "model.safetensors.index.json"} <= names
    assert len(list(out.glob("model-*.safetensors"))) == 3  # the target's three shards, mirrored
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in tensors(out).values())

    # the field's own merge (PEFT merge_and_unload, whole model in memory) gives the same weights
    ref = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny.base, dtype=torch.float32),
                                    str(tiny.adapter)).merge_and_unload().state_dict()
    got = tensors(out)
    assert set(got) == set(ref)
    for name, t in got.items():
        torch.testing.assert_close(t, ref[name], rtol=0, atol=1e-6, msg=name)
    assert sum(not torch.equal(got[n], t) for n, t in tensors(tiny.base).items()) == 14  # 7 modules x 2 layers

    stats = res.manifest["stats"]
    v = stats["verification"]
    assert v["passed"] and v["rel_error"] < 1e-5 and v["tolerance"] == 1e-4 and v["top1_agreement"] == 1.0
    assert v["effect"] > 0.1 and "note" not in v  # the adapter changes the logits a lot: the check is informative
    assert v["rounding_error"] == 0 and v["tolerance_basis"] == "0.0001 (float32)"
    assert stats["merge"]["tensors"] == {"copied": 7, "lora": 14}
    assert stats["target_path"] == str(tiny.base)  # the target came from nift_train.json
    card = (out / "README.md").read_text()
    for needle in ("method | lora", DATA_MANIFEST_HASH, str(tiny.adapter), stats["adapter_sha256"],
                   "λ on the LoRA delta (--adapter-scale) | 1.0", "Verification:** passed", "<\\|im_end\\|>"):
        assert needle in card, needle
    assert res.manifest["files"]["model/model-00001-of-00003.safetensors"]["sha256"]


def test_eval_merges_a_train_folder_through_the_merge_stage(tiny, tmp_path, monkeypatch):
    """`nift eval --model run_dir/train` evaluates what `nift merge` writes: the same stage, checked and verified,
    cached by the adapter's and base's fingerprints and merged once."""
    from pathlib import Path

    from nift.eval.target import resolve_target

    monkeypatch.setenv("NIFT_CACHE", str(tmp_path / "cache"))
    train = tmp_path / "train"
    shutil.copytree(tiny.adapter.parent, train)
    logs: list[str] = []
    target = resolve_target(str(train), log=logs.append)
    out = Path(target.load_ref)
    assert target.kind == "train" and out.parent.parent.parent == tmp_path / "cache" / "eval_merges"
    stats = read_manifest(out.parent)["stats"]
    assert stats["verification"]["passed"] and stats["merge"]["tensors"] == {"copied": 7, "lora": 14}
    assert any(m.startswith("[eval] merging the adapter") for m in logs)
    run(cfg(adapter=str(tiny.adapter)), tmp_path / "stage", **QUIET)
    direct, got = tensors(tmp_path / "stage" / "merge" / "model"), tensors(out)
    assert set(got) == set(direct) and all(torch.equal(got[n], direct[n]) for n in got)
    logs.clear()
    assert resolve_target(str(train), log=logs.append).load_ref == target.load_ref
    assert not any("[eval] merging" in m for m in logs) and any("skip" in m for m in logs)


def test_lora_base_into_bf16_sibling_stays_bf16(tiny, tmp_path):
    res = run(cfg(method="lora-base", adapter=str(tiny.adapter), target=str(tiny.inst_bf16)), tmp_path, **QUIET)
    out = tmp_path / "merge" / "model"
    assert dtypes(out) == {"BF16"}  # never silently upcast
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    deltas, sib, got = lora_deltas(tiny.adapter), tensors(tiny.inst_bf16), tensors(out)
    for name, w in sib.items():
        # delta in float32 on the sibling's bf16 weight, cast back once
        expected = (w.float() + deltas[name]).to(torch.bfloat16) if name in deltas else w
        assert torch.equal(got[name], expected), name
    v = res.manifest["stats"]["verification"]
    # the tolerance comes from rounding PEFT's own in-memory merge to bf16, and the written model is exactly that
    assert v["passed"] and v["tolerance"] == max(1e-4, 2 * v["rounding_error"]) and v["rounding_error"] > 0
    assert v["rel_error"] == pytest.approx(v["rounding_error"], rel=1e-3)
    warnings = " ".join(res.manifest["stats"]["warnings"])
    assert "dtype: F32 in base" in warnings and "BF16 in target" in warnings


def test_adapter_scale_is_lambda_on_the_delta(tiny, tmp_path):
    deltas, base = lora_deltas(tiny.adapter), tensors(tiny.base)
    res = run(cfg(adapter=str(tiny.adapter), adapter_scale=0.5), tmp_path / "half", **QUIET)
    got = tensors(tmp_path / "half" / "merge" / "model")
    for name, w in base.items():
        torch.testing.assert_close(got[name], w + 0.5 * deltas[name] if name in deltas else w, rtol=0, atol=1e-6)
    assert res.manifest["stats"]["verification"]["passed"]  # against PEFT with its scaling multiplied by 0.5
    assert "λ on the LoRA delta (--adapter-scale) | 0.5" in (tmp_path / "half/merge/model/README.md").read_text()
    run(cfg(adapter=str(tiny.adapter), adapter_scale=0.0, verify="off"), tmp_path / "zero", **QUIET)
    zero = tensors(tmp_path / "zero" / "merge" / "model")
    assert all(torch.equal(zero[n], w) for n, w in base.items())  # λ = 0 gives back the target


def test_chat_vector_arithmetic(tiny, tokenizer, tmp_path):
    target = tiny_model(tmp_path / "target", tokenizer, seed=4, dtype=torch.bfloat16, shard=None)
    res = run(cfg(method="chat-vector", base=str(tiny.base), instruct=str(tiny.inst), target=str(target),
                  chat_vector_scale=0.7), tmp_path / "r", **QUIET)
    out = tmp_path / "r" / "merge" / "model"
    b, i, t, got = tensors(tiny.base), tensors(tiny.inst), tensors(target), tensors(out)
    assert dtypes(out) == {"BF16"} and (out / "model.safetensors").is_file()
    for name in t:
        expected = (t[name].float() + 0.7 * (i[name].float() - b[name].float())).to(torch.bfloat16)
        assert torch.equal(got[name], expected), name
    assert not torch.equal(got["model.layers.0.mlp.up_proj.weight"], t["model.layers.0.mlp.up_proj.weight"])
    stats = res.manifest["stats"]
    assert stats["verification"]["passed"] and stats["merge"]["tensors"] == {"chat_vector": 21}
    assert stats["chat_vector_scale"] == 0.7 and "λ on the chat vector" in (out / "README.md").read_text()


def test_chat_vector_plus_adapter_equals_lora_base(tiny, tmp_path):
    """base + ΔLoRA + 1·(instruct − base) is what lora-base computes as instruct + ΔLoRA."""
    run(cfg(method="chat-vector", base=str(tiny.base), instruct=str(tiny.inst), adapter=str(tiny.adapter)),
        tmp_path / "cv", **QUIET)
    run(cfg(method="lora-base", target=str(tiny.inst), adapter=str(tiny.adapter), verify="off"),
        tmp_path / "lb", **QUIET)
    cv, lb = tensors(tmp_path / "cv/merge/model"), tensors(tmp_path / "lb/merge/model")
    for name in lb:
        torch.testing.assert_close(cv[name], lb[name], rtol=0, atol=1e-5)


def test_every_difference_is_listed_and_nothing_is_written(tiny, tokenizer, tmp_path):
    from nift.checkpoint import Checkpoint

    good = run(cfg(adapter=str(tiny.adapter)), tmp_path, **QUIET).manifest
    # a sibling that is not one: more layers and a wider MLP
    bad = tiny_model(tmp_path / "bad", tokenizer, seed=5, num_hidden_layers=3, intermediate_size=96)
    with pytest.raises(MergeRefused) as e:
        run(cfg(method="lora-base", adapter=str(tiny.adapter), target=str(bad)), tmp_path, **QUIET)
    msg = str(e.value)
    a, b = Checkpoint.open(tiny.base), Checkpoint.open(bad)
    expected = [f"tensor {n}: in target" for n in set(b.tensors) - set(a.tensors)]
    expected += [f"tensor {n}: shape {list(a.tensors[n].shape)}" for n in set(a.tensors) & set(b.tensors)
                 if a.tensors[n].shape != b.tensors[n].shape]
    expected += [f"adapter module model.layers.{i}.mlp.{m}: adapter expects" for i in (0, 1)
                 for m in ("gate_proj", "up_proj", "down_proj")]
    expected += ["config intermediate_size: 64 in base", "config num_hidden_layers: 2 in base"]
    assert len(expected) == 9 + 6 + 6 + 2
    for needle in expected:
        assert needle in msg, needle
    assert f"{len(expected)} difference(s)" in msg and "nothing was written" in msg
    assert read_manifest(tmp_path / "merge") == good  # the earlier merge is untouched

    # another architecture and another vocabulary
    other_tok = tokenizer.__class__.from_pretrained(tiny.base)
    other_tok.add_tokens(["<nift_a>", "<nift_b>", "<nift_c>"])
    qwen = tiny_model(tmp_path / "qwen", other_tok, seed=6, arch="qwen2")
    with pytest.raises(MergeRefused) as e:
        run(cfg(method="lora-base", adapter=str(tiny.adapter), target=str(qwen)), tmp_path / "q", **QUIET)
    msg = str(e.value)
    for needle in ('config architectures: ["LlamaForCausalLM"] in base', "config model_type: 'llama' in base",
                   "tensor model.layers.0.self_attn.q_proj.bias: in target",
                   "vocabulary: 49152 tokens in base", "vocabulary: 3 token(s) only in target",
                   "'<nift_a>', '<nift_b>', '<nift_c>'"):
        assert needle in msg, needle
    assert not (tmp_path / "q").exists()


def test_special_tokens_differ_and_the_trained_eos_joins_the_stop_list(tiny, tokenizer, tmp_path):
    tok = tokenizer.__class__.from_pretrained(tiny.base)
    tok.eos_token = "<|endoftext|>"  # an instruct sibling that ends turns with another existing token
    sib = tiny_model(tmp_path / "sib", tok, seed=2, eos_token_id=0)
    res = run(cfg(method="lora-base", adapter=str(tiny.adapter), target=str(sib), verify="off"), tmp_path / "r",
              **QUIET)
    assert any("special token eos_token" in w for w in res.manifest["stats"]["warnings"])  # reported, not refused
    out = tmp_path / "r" / "merge" / "model"
    trained_eos = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    # the adapter learned to stop with the base's EOS: the merged model must stop on it too
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == [0, trained_eos]
    assert f"added {trained_eos}" in (out / "README.md").read_text()


def test_base_named_in_metadata_but_absent(tiny, tokenizer, tmp_path):
    """nift_train.json written on another machine: the checks fall back to the adapter and the tokenizer hash."""
    moved = {"base_model": str(tmp_path / "elsewhere" / "base"), "base_model_path": str(tmp_path / "elsewhere")}
    adapter = make_adapter(tiny.base, tmp_path / "train", meta_overrides=moved)
    res = run(cfg(method="lora-base", adapter=str(adapter), target=str(tiny.inst), verify="off"), tmp_path / "r",
              **QUIET)
    assert any("is not available here" in w for w in res.manifest["stats"]["warnings"])
    tok = tokenizer.__class__.from_pretrained(tiny.base)
    tok.add_tokens(["<nift_extra>"])
    other = tiny_model(tmp_path / "other", tok, seed=2)
    with pytest.raises(MergeRefused, match="differs from the one the adapter was trained with"):
        run(cfg(method="lora-base", adapter=str(adapter), target=str(other)), tmp_path / "r2", **QUIET)
    with pytest.raises(InputError, match="--base"):  # a base named on the command line must exist
        run(cfg(method="lora-base", adapter=str(adapter), target=str(tiny.inst), base=str(tmp_path / "nope")),
            tmp_path / "r3", **QUIET)


def test_interrupted_merge_leaves_no_half_file_and_reruns(tiny, tmp_path):
    def interrupt(name, block):
        if name == "model.layers.1.self_attn.q_proj.weight":
            raise KeyboardInterrupt
        return block

    with pytest.raises(KeyboardInterrupt):
        run(cfg(adapter=str(tiny.adapter), verify="off"), tmp_path, tensor_hook=interrupt, **QUIET)
    stage = tmp_path / "merge"
    assert read_manifest(stage) is None and not (stage / "model").exists()
    assert not [p for p in stage.rglob("*") if ".tmp" in p.name]  # the shard being written was removed
    res = run(cfg(adapter=str(tiny.adapter), verify="off"), tmp_path, **QUIET)
    assert not res.skipped and (stage / "model" / "model-00003-of-00003.safetensors").is_file()


def test_rerun_is_instant_and_changes_rerun(tiny, tmp_path, monkeypatch):
    import nift.merge.stage as stage

    logs = []
    first = run(cfg(adapter=str(tiny.adapter)), tmp_path, log=logs.append)
    shard = tmp_path / "merge/model/model-00001-of-00003.safetensors"
    mtime = shard.stat().st_mtime_ns

    def no_work(*a, **k):
        raise AssertionError("an up-to-date merge must not load or check anything")

    with monkeypatch.context() as m:
        m.setattr(stage, "check_plan", no_work)
        m.setattr(stage, "merge_weights", no_work)
        again = run(cfg(adapter=str(tiny.adapter)), tmp_path, log=logs.append)
    assert again.skipped and again.manifest == first.manifest and shard.stat().st_mtime_ns == mtime
    assert logs[-1].startswith("[merge] up to date, skipped")
    assert not run(cfg(adapter=str(tiny.adapter), adapter_scale=0.9, verify="off"), tmp_path, **QUIET).skipped
    base_copy = tmp_path / "base_copy"
    shutil.copytree(tiny.base, base_copy)
    target_cfg = cfg(adapter=str(tiny.adapter), target=str(base_copy), verify="off")
    run(target_cfg, tmp_path, **QUIET)
    assert run(target_cfg, tmp_path, **QUIET).skipped
    st = base_copy / "model-00002-of-00003.safetensors"
    os.utime(st, ns=(st.stat().st_atime_ns, st.stat().st_mtime_ns + 10**9))  # the target's weights were rewritten
    assert not run(target_cfg, tmp_path, **QUIET).skipped
    assert not run(target_cfg, tmp_path, force=True, **QUIET).skipped


def test_verification_catches_a_corrupted_merge(tiny, tmp_path):
    from nift.merge import build_plan, check_plan, verify_merge

    name = "model.layers.1.mlp.down_proj.weight"
    original = tensors(tiny.base)[name]

    def forget_one_delta(tensor_name, tensor):  # the bug it stands for: one adapted module left unmerged
        return original.clone() if tensor_name == name else tensor

    with pytest.raises(NiftError, match="verification failed") as e:
        run(cfg(adapter=str(tiny.adapter)), tmp_path, tensor_hook=forget_one_delta, **QUIET)
    assert "not published" in str(e.value)
    stage = tmp_path / "merge"
    assert read_manifest(stage) is None and not (stage / "model").exists()
    failed = json.loads((stage / "verification_failed.json").read_text())
    assert not failed["passed"] and failed["rel_error"] > 100 * failed["tolerance"]
    # the same inputs without the bug: the interrupted stage starts over and passes
    res = run(cfg(adapter=str(tiny.adapter)), tmp_path, **QUIET)
    assert res.manifest["stats"]["verification"]["passed"] and not (stage / "verification_failed.json").exists()

    # bytes flipped in a written shard are caught too
    bad = tmp_path / "tampered"
    shutil.copytree(stage / "model", bad)
    shard = bad / "model-00002-of-00003.safetensors"
    data = bytearray(shard.read_bytes())
    data[-4096:] = bytes(4096)  # zero the end of the last tensor
    shard.write_bytes(bytes(data))
    plan, _, _ = build_plan(cfg(adapter=str(tiny.adapter)), tmp_path)
    check_plan(plan, **QUIET)
    assert not verify_merge(plan, bad, MergeConfig().verify_prompts, **QUIET)["passed"]


def test_embedding_lora_modules_to_save_rslora_and_rank_pattern(tiny, tmp_path):
    """The PEFT variants the merge reproduces: LoRA on embeddings (PEFT also saves the whole embedding), a
    modules_to_save head, rsLoRA scaling and per-module ranks and alphas; verified against PEFT itself."""
    adapter = make_adapter(tiny.base, tmp_path / "train", targets=["embed_tokens", "q_proj", "v_proj", "down_proj"],
                           modules_to_save=["lm_head"], use_rslora=True, rank_pattern={"v_proj": 2},
                           alpha_pattern={"down_proj": 3})
    res = run(cfg(adapter=str(adapter)), tmp_path / "r", **QUIET)
    stats = res.manifest["stats"]
    assert stats["verification"]["passed"] and stats["verification"]["effect"] > 0.1
    kinds = stats["merge"]["tensors"]
    assert kinds["replaced"] == 1 and kinds["replaced+lora"] == 1  # lm_head; the saved embedding plus its LoRA
    # into a sibling, whole tensors would overwrite the sibling's own weights with the base's: refused unless asked
    with pytest.raises(MergeRefused, match=r"whole tensors \(lm_head.weight, model.embed_tokens.weight\)"):
        run(cfg(method="lora-base", adapter=str(adapter), target=str(tiny.inst)), tmp_path / "lb", **QUIET)


def test_fan_in_fan_out_gpt2(tokenizer, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=49152, n_positions=128)).save_pretrained(
        tmp_path / "gpt2")
    tokenizer.save_pretrained(tmp_path / "gpt2")
    adapter = make_adapter(tmp_path / "gpt2", tmp_path / "train", targets=["c_attn", "c_fc"], fan_in_fan_out=True)
    res = run(cfg(adapter=str(adapter)), tmp_path / "r", **QUIET)
    assert res.manifest["stats"]["verification"]["passed"]
    assert res.manifest["stats"]["merge"]["tensors"]["lora"] == 4


def test_tied_embeddings_and_bad_adapters_are_refused(tiny, tokenizer, tmp_path):
    tied = tiny_model(tmp_path / "tied", tokenizer, seed=0, tie_word_embeddings=True)
    emb = make_adapter(tied, tmp_path / "t1", targets=["embed_tokens"])
    with pytest.raises(MergeRefused, match="tie_word_embeddings"):
        run(cfg(adapter=str(emb)), tmp_path / "r1", **QUIET)
    dora = make_adapter(tiny.base, tmp_path / "t2", targets=["q_proj"], use_dora=True)
    with pytest.raises(InputError, match="DoRA"):
        run(cfg(adapter=str(dora)), tmp_path / "r2", **QUIET)
    full = make_adapter(tiny.base, tmp_path / "t3", targets=["q_proj"], meta_overrides={"method": "full"})
    with pytest.raises(InputError, match="method is 'full'"):
        run(cfg(adapter=str(full)), tmp_path / "r3", **QUIET)
    with pytest.raises(InputError, match="run `nift train` first"):
        run(cfg(), tmp_path / "r4", **QUIET)
    with pytest.raises(ConfigError, match="--instruct is only used by --method chat-vector"):
        run(cfg(adapter=str(tiny.adapter), instruct=str(tiny.inst)), tmp_path / "r5", **QUIET)
    with pytest.raises(ConfigError, match="give it with --target"):
        run(cfg(method="lora-base", adapter=str(tiny.adapter)), tmp_path / "r6", **QUIET)
    assert not any((tmp_path / f"r{i}").exists() for i in range(1, 7))


def test_default_adapter_comes_from_the_run_dir(tiny, tmp_path):
    train = tmp_path / "train"
    shutil.copytree(tiny.adapter.parent, train)
    with pytest.raises(InputError, match="training run did not finish"):
        run(cfg(), tmp_path, **QUIET)
    write_json(train / "manifest.json", {"stage": "train", "config_hash": "x", "inputs": {}, "files": {}})
    res = run(cfg(dtype="bfloat16"), tmp_path, **QUIET)
    assert res.manifest["inputs"]["train"]  # the train manifest is part of the merge's identity
    assert dtypes(tmp_path / "merge" / "model") == {"BF16"}  # cast as asked
    assert res.manifest["stats"]["dtype"] == {"target": "float32", "output": "bfloat16"}


def test_cli_merge_and_errors(tiny, tmp_path, capsys):
    assert main(["merge", "--run-dir", str(tmp_path), "--adapter", str(tiny.adapter), "--no-progress",
                 "--verify", "off"]) == 0
    assert (tmp_path / "merge" / "model" / "README.md").is_file()
    assert main(["merge", "--run-dir", str(tmp_path), "--method", "lora-base", "--adapter", str(tiny.adapter)]) == 2
    err = capsys.readouterr().err
    assert "give it with --target" in err and "Traceback" not in err


def test_a_model_without_chat_template_gets_the_training_template(tiny, tmp_path):
    """As LLaMA-Factory's export: the merged folder of a base model without a chat template carries the vanilla
    template it was trained with; eval's `auto` still asks it with one_shot, as a base model."""
    from nift.eval.templates import conversation_template
    from nift.prompts.jinja import written_by_nift

    base = tmp_path / "bare-base"
    shutil.copytree(tiny.base, base)
    (base / "chat_template.jinja").unlink()
    info = {"name": "vanilla", "text": None, "prefix_ids": [], "eos_token": "<|im_end|>", "eos_token_id": 2}
    adapter = make_adapter(base, tmp_path / "trained", meta_overrides={"template_info": info})
    res = run(cfg(adapter=str(adapter)), tmp_path / "run", **QUIET)
    out = tmp_path / "run" / "merge" / "model"
    written = json.loads((out / "tokenizer_config.json").read_text())["chat_template"]
    assert written_by_nift(written) and "chat_template" in res.manifest["stats"]["files"]
    assert tiny.tokenizer.__class__.from_pretrained(out).apply_chat_template(
        [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": " A1"}, {"role": "user", "content": "Q2"}],
        add_generation_prompt=True, tokenize=False) == "Q1 A1<|im_end|>Q2"
    assert conversation_template(str(out))[0] == "one_shot"
