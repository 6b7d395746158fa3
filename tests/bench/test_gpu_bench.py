"""bench/gpu.py, the prepared GPU benchmark, run in its --tiny mode on the CPU so it cannot rot while no GPU is at
hand: every step completes, every figure and ratio the GPU run reports is there and finite, nothing it imports is
missing from the lent machine, and the model shapes it builds are the real models' (checked on the meta device)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load_gpu_work():
    # By path: bench/ is no package, and putting it on sys.path would let its train.py / merge.py shadow names.
    import importlib.util

    spec = importlib.util.spec_from_file_location("nift_bench_gpu_work", REPO / "bench" / "gpu_work.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gpu_work = _load_gpu_work()


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


@pytest.mark.parametrize("name,total", [
    ("llama3-8b", 8_030_261_248), ("llama3-1b", 1_235_814_400), ("gemma3-270m", 268_098_176)])
def test_shapes_are_the_real_models_and_the_flop_count_counts_their_matmuls(name, total):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = gpu_work.shape(name, tiny=False, vocab=0)
    conf = AutoConfig.for_model(cfg["model_type"], **{k: v for k, v in cfg.items() if k != "model_type"})
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(conf)
    assert sum(p.numel() for p in model.parameters()) == total  # the published parameter counts
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert gpu_work.matmul_params(cfg) == linear  # the output head included, tied or not
    fl = gpu_work.flops_per_token(cfg, [1000, 500])
    assert fl["linear"] == 4 * linear and 0 < fl["attention"] < 0.2 * fl["linear"]


def test_attention_flops_are_causal_per_example_and_respect_the_sliding_window():
    cfg = {**gpu_work.shape("llama3-8b", tiny=False, vocab=0), "num_hidden_layers": 1}
    q = cfg["num_attention_heads"] * cfg["head_dim"]
    assert gpu_work.flops_per_token(cfg, [4])["attention"] == 12 * q * (1 + 2 + 3 + 4) / 4
    g = {**gpu_work.shape("gemma3-270m", tiny=False, vocab=0), "layer_types": ["sliding_attention"],
         "sliding_window": 2}
    qg = g["num_attention_heads"] * g["head_dim"]
    assert gpu_work.flops_per_token(g, [4])["attention"] == 12 * qg * (1 + 2 + 2 + 2) / 4


def test_tiny_mode_runs_every_step_and_reports_every_figure(smollm2, shared_data, tmp_path):
    out = tmp_path / "gpu.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    # A budget far beyond the minute or two this takes: on a busy machine no step may be skipped for time.
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu.py"), "--tiny", "--budget", "3000", "--out",
                           str(out), "--workdir", str(tmp_path / "work")], env=env, capture_output=True, text=True,
                          timeout=3300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["mode"] == "tiny" and r["ran_on_gpu"] is False and r["device"]["cuda"] is False
    bad = [s for s in r["steps"] if s["status"] != "ok"]
    assert not bad, json.dumps(bad, indent=1)[-4000:]
    assert {s["step"] for s in r["steps"]} >= {
        f"train {m} {a}" for m in gpu_work.SHAPES for a in ("nift", "trl", "plain")} | {
        "train llama3-8b trl-seg", "merge llama3-8b copy", "merge llama3-8b stage", "merge llama3-8b merge",
        "fsdp llama3-1b", "generate llama3-1b", "generate gemma3-270m"}

    for name, arms in r["train"].items():
        assert set(arms) == {"nift", "trl", "plain"} | ({"trl-seg"} if name == "llama3-8b" else set())
        assert r["models"][name]["flops_per_token"]["total"] > 0
        for arm, t in arms.items():
            assert t["micro_batches_timed"] >= 1 and t["tokens"] > 0, (name, arm)
            assert all(_finite(t[k]) and t[k] > 0 for k in ("tokens_per_s", "mfu_matmul", "final_loss")), (name, arm)
            assert t["examples"] == r["hyperparameters"]["examples"]
        totals = [t["tokens_total"] for t in arms.values()]
        assert max(totals) < 1.03 * min(totals), (name, totals)  # every arm trains on the same tokens
        assert _finite(arms["nift"]["speed_vs_trl"]) and _finite(arms["nift"]["speed_vs_plain"])
        assert _finite(arms["nift"]["rss_growth_vs_trl"])  # on a GPU: gpu_memory_vs_trl
        assert arms["nift"]["packing"] is True and arms["trl"]["attention"] == "sdpa"
    assert r["train"]["llama3-8b"]["trl-seg"]["attention"] == "nift_segments"
    assert _finite(r["train"]["llama3-8b"]["nift"]["speed_vs_trl-seg"])
    for name, g in r["generation"].items():
        assert g["tokens"][0] > 0 and g["tokens"][0] == g["tokens"][1], name  # same greedy tokens both ways
        assert _finite(g["ratio_best"]) and _finite(g["ratio_median_of_pairs"])
    merge = r["merge"]["llama3-8b"]
    assert set(merge) == {"copy", "stage", "merge"} and r["models"]["llama3-8b"]["shards"] > 1
    assert all(_finite(m["seconds"]) and _finite(m["time_vs_copy"]) and m["peak_rss_mib"] > 0 for m in merge.values())
    f = r["fsdp"]
    assert f["returncode"] == 0 and f["steps"] == 2 and all(_finite(x) for x in f["losses"])
    # On a CPU accelerate runs no FSDP; the GPU run must say FSDP.
    assert f["distributed"] != "FSDP" and "asks for FSDP" in (f["note"] or "")

    targets = {t["what"]: t for t in r["targets"]}
    assert len(targets) == 8
    assert _finite(targets["train llama3-8b: nift tokens/s / TRL's"]["value"])
    assert _finite(targets["merge llama3-8b: nift merge time / plain read+write"]["value"])
    assert r["imports"]["missing_on_gpu_machine"] == [], "the GPU machine lacks these: carry them or drop them"
    assert "targets:" in proc.stdout and "steps not completed: none" in proc.stdout
