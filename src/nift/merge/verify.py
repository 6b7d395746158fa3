"""Verification: the merged model's logits against the unmerged reference, in float32."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from nift.checkpoint import TensorReader, torch_dtype
from nift.errors import ConfigError
from nift.merge.checks import load_tokenizer_quietly
from nift.merge.plan import MergePlan

RTOL_FLOOR = 1e-4  # float32 weights: only summation-order noise remains


def available_memory() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def verification_memory(plan: MergePlan) -> int:
    """Bytes the verification needs: one float32 copy of the model at a time, plus the adapter."""
    numel = sum(t.numel for t in plan.target.tensors.values() if t.is_float)
    return int(numel * 4 * 1.25) + (plan.adapter.nbytes if plan.adapter else 0)


def _encode(tok: Any, prompts: list[str]) -> tuple[Any, Any]:
    """The prompts as one right-padded batch and its attention mask (one forward pass per model, not one per
    prompt: each pass reads the whole output layer, 262k x 640 for Gemma)."""
    import torch

    rows = [list(tok(p)["input_ids"]) for p in prompts]
    ids = torch.full((len(rows), max(map(len, rows))), tok.pad_token_id or 0, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


def _logits(model: Any, batch: tuple[Any, Any], device: str) -> Any:
    """The logits at every real (unpadded) position of every prompt, [positions, vocab], float64 on the CPU."""
    import torch

    ids, mask = batch
    with torch.no_grad():
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
    return out[mask.to(out.device).bool()].double().cpu()


def _rel(a: Any, b: Any) -> float:
    return float((a - b).norm()) / (float(b.norm()) or 1.0)


def _top1(a: Any, b: Any) -> float:
    return float((a.argmax(-1) == b.argmax(-1)).double().mean())


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' own per-load progress bars would interleave with ours."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def _round_like_output(plan: MergePlan, model: Any) -> None:
    """Round every parameter to the dtype the merge writes it in: what a correct merge's file holds."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            info = plan.target.tensors.get(name)
            dtype = torch_dtype(plan.out_dtype(info) if info is not None else plan.main_out_dtype())
            if p.is_floating_point() and dtype != torch.float32:
                p.copy_(p.to(dtype).float())


def verify_merge(plan: MergePlan, model_dir: Path, prompts: list[str], rtol: float | None = None,
                 device: str = "cpu", log: Callable[[str], None] = print) -> dict[str, Any]:
    """Logits of the merged folder against the unmerged reference on `prompts`, everything in float32.

    The reference is the target with the adapter attached by PEFT and not merged (its scaling multiplied by
    --adapter-scale), and for chat-vector the target plus λ·(instruct − base) added in memory. The relative error
    ||merged − reference|| / ||reference|| over all positions must stay within the tolerance: `rtol` when given;
    else 1e-4 for float32 weights and, for bf16/fp16 weights, twice the error that rounding the correctly merged
    weights to that dtype causes (measured here, on the same prompts) when that is larger. A merge that is right
    but rounded passes; a wrong one (a module left out, a shard garbled) moves the logits far more."""
    import gc

    import torch
    from transformers import AutoModelForCausalLM

    batches = _encode(plan.tokenizer or load_tokenizer_quietly(model_dir), prompts)
    low_precision = any(plan.out_dtype(t) not in ("F32", "F64") for t in plan.target.tensors.values() if t.is_float)
    with _quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(plan.target.folder, dtype=torch.float32).to(device).eval()
        before = _logits(model, batches, device)
        if plan.chat:
            _add_chat_vector(plan, model)
        scaled: Callable[[], Any] = contextlib.nullcontext
        if plan.adapter is not None:
            from peft import PeftModel
            from peft.helpers import rescale_adapter_scale

            model = PeftModel.from_pretrained(model, str(plan.adapter_dir), is_trainable=False).to(device).eval()
            if plan.adapter_scale != 1 and plan.adapter.modules:
                scaled = functools.partial(rescale_adapter_scale, model, plan.adapter_scale)
        with scaled():
            ref = _logits(model, batches, device)
            noise = 0.0
            if low_precision:
                if plan.adapter is not None:
                    model = model.merge_and_unload()  # PEFT's own merge, in memory, at the current scale
                _round_like_output(plan, model)
                noise = _rel(_logits(model, batches, device), ref)
        del model
        gc.collect()  # free the reference before loading the merged model: one float32 copy at a time
        merged_model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
        merged = _logits(merged_model, batches, device)
        del merged_model

    rel = _rel(merged, ref)
    tol = rtol if rtol is not None else max(RTOL_FLOOR, 2 * noise)
    effect = _rel(ref, before) if plan.adapter is not None or plan.chat else 0.0
    result: dict[str, Any] = {
        "passed": rel <= tol, "rel_error": rel, "tolerance": tol,
        "tolerance_basis": "given (--verify-rtol)" if rtol is not None else
        f"max({RTOL_FLOOR:g}, 2 x rounding error {noise:.2e})" if low_precision else f"{RTOL_FLOOR:g} (float32)",
        "rounding_error": noise, "effect": effect, "max_abs_error": float((merged - ref).abs().max()),
        "top1_agreement": _top1(merged, ref), "prompts": len(prompts), "positions": int(ref.shape[0]),
        "reference": ("target + λ·(instruct − base) in memory" if plan.chat else "target")
        + (" + unmerged adapter (PEFT)" if plan.adapter is not None else ""),
        "compute_dtype": "float32", "device": device,
    }
    if effect <= tol:
        result["note"] = (f"the merge barely changes these logits (relative effect {effect:.2e} <= tolerance "
                          f"{tol:.0e}): this check cannot tell a merged model from the target alone")
    return result


def _add_chat_vector(plan: MergePlan, model: Any) -> None:
    """target += λ·(instruct − base), parameter by parameter, through the model's own parameter names."""
    import torch

    inst, base = TensorReader(plan.instruct), TensorReader(plan.base)  # type: ignore[arg-type]
    with torch.no_grad():
        for name, info in plan.instruct.tensors.items():  # type: ignore[union-attr]
            if not info.is_float:
                continue
            try:
                p = model.get_parameter(name)
            except AttributeError:
                continue
            p += (plan.chat_scale * (inst.get(name).float() - base.get(name).float())).to(p.device)
    inst.close()
    base.close()


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available on this machine")
    return device


