"""`nift merge` as a stage: plan, check, merge, verify, card, publish, manifest."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nift.artifacts import StageContext, StageResult, run_stage, sha256_file, stage_identity, up_to_date, write_json
from nift.checkpoint import DTYPE_SIZES, TensorInfo
from nift.errors import InputError, NiftError
from nift.merge.card import model_card
from nift.merge.checks import check_plan
from nift.merge.config import MergeConfig
from nift.merge.plan import MergePlan, build_plan, dtype_name
from nift.merge.stream import merge_weights, write_aux_files
from nift.merge.verify import available_memory, pick_device, verification_memory, verify_merge

MODEL_DIR = "model"
PARTIAL_DIR = "model.partial"


def run(cfg: MergeConfig, run_dir: str | Path, force: bool = False, log=print,
        tensor_hook: Callable[[str, Any], Any] | None = None) -> StageResult:
    """Run the merge stage into `run_dir/merge/` (the model in `merge/model/`)."""
    run_dir = Path(run_dir)
    stage_dir = run_dir / "merge"
    plan, inputs, fingerprints = build_plan(cfg, run_dir, log=log)
    if force or up_to_date(stage_dir, stage_identity("merge", cfg, inputs, fingerprints)) is None:
        # Before run_stage touches the stage dir: a refused merge leaves a previous result intact.
        check_plan(plan, log=log)
        for w in plan.warnings:
            log(f"[merge] note: {w}")

    def body(ctx: StageContext) -> None:
        partial, final = ctx.path(PARTIAL_DIR), ctx.path(MODEL_DIR)
        for d in (partial, final):  # an interrupted run restarts the merge: it costs disk time, nothing paid for
            shutil.rmtree(d, ignore_errors=True)
        (ctx.dir / "verification_failed.json").unlink(missing_ok=True)
        need = sum(_output_bytes(plan, t) for t in plan.target.tensors.values())
        free = shutil.disk_usage(ctx.dir).free
        if free < need * 1.02 + 2**20:
            raise InputError(f"{ctx.dir}: {need / 1e9:.2f} GB needed for the merged model, {free / 1e9:.2f} GB free")
        log(f"[merge] {plan.method}: {plan.target.label} ({len(plan.target.files)} shard(s), "
            f"{plan.target.total_bytes / 1e9:.2f} GB) -> {final}")
        with ctx.timed("merge_s"):
            merged = merge_weights(plan, partial, progress=cfg.progress, tensor_hook=tensor_hook)
        aux = write_aux_files(plan, partial, log=log)
        stats: dict[str, Any] = {
            "method": plan.method, "target": plan.target_ref, "target_path": str(plan.target.folder),
            "base": plan.base_ref, "instruct": plan.instruct_ref,
            "adapter": str(plan.adapter_dir) if plan.adapter_dir else None,
            "adapter_sha256": sha256_file(plan.adapter.weights_file) if plan.adapter else None,
            "adapter_scale": plan.adapter_scale if plan.adapter else None,
            "chat_vector_scale": plan.chat_scale if plan.chat else None,
            "data_manifest_hash": (plan.meta or {}).get("data_manifest_hash"),
            "dtype": {"target": dtype_name(plan.target.main_dtype()), "output": dtype_name(plan.main_out_dtype())},
            "merge": merged, "files": aux, "warnings": plan.warnings,
        }
        if plan.dtype != "auto" and stats["dtype"]["output"] != stats["dtype"]["target"]:
            log(f"[merge] writing {stats['dtype']['output']} weights as asked (--dtype); the target is "
                f"{stats['dtype']['target']}")
        stats["verification"] = _run_verification(cfg, plan, partial, ctx, log)
        (partial / "README.md").write_text(model_card(plan, stats), encoding="utf-8")
        os.replace(partial, final)
        ctx.stats.update(stats)
        log(f"[merge] wrote {final} ({merged['bytes_written'] / 1e9:.2f} GB, tensors: {merged['tensors']})")

    return run_stage("merge", stage_dir, cfg, body, inputs=inputs, fingerprints=fingerprints, force=force, log=log)


def _output_bytes(plan: MergePlan, t: TensorInfo) -> int:
    return t.numel * DTYPE_SIZES[plan.out_dtype(t)]


def _run_verification(cfg: MergeConfig, plan: MergePlan, model_dir: Path, ctx: StageContext,
                      log: Callable[[str], None]) -> dict[str, Any]:
    if cfg.verify == "off":
        return {"passed": None, "skipped": "--verify off"}
    need, avail = verification_memory(plan), available_memory()
    if cfg.verify == "auto" and need > avail:
        log(f"[merge] verification skipped: it needs ~{need / 1e9:.1f} GB (float32), {avail / 1e9:.1f} GB "
            "available; --verify on forces it")
        return {"passed": None, "skipped": f"needs ~{need / 1e9:.1f} GB in float32, {avail / 1e9:.1f} GB available"}
    device = pick_device(cfg.device)
    log(f"[merge] verifying: logits of the merged model vs the unmerged reference on {len(cfg.verify_prompts)} "
        f"prompts ({device}) ...")
    with ctx.timed("verify_s"):
        result = verify_merge(plan, model_dir, cfg.verify_prompts, cfg.verify_rtol, device=device, log=log)
    if result.get("note"):
        log(f"[merge] warning: {result['note']}")
    if not result["passed"]:
        write_json(ctx.path("verification_failed.json"), result)
        raise NiftError(
            f"verification failed: the merged model's logits differ from the unmerged reference by "
            f"{result['rel_error']:.3e} (relative; tolerance {result['tolerance']:.0e}; top-1 agreement "
            f"{result['top1_agreement']:.3f}). The merge is not published: the rejected folder is "
            f"{model_dir} and the measurements are in {ctx.path('verification_failed.json')}."
        )
    log(f"[merge] verified: relative logit error {result['rel_error']:.2e} <= {result['tolerance']:.0e}, "
        f"top-1 agreement {result['top1_agreement']:.3f}")
    return result
