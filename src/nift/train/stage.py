"""`nift train`: fine-tune a student on prompt -> continuation pairs (the paper's §3 and Appendix A).

Run as: nift train --run-dir runs/x [--data distill|audit|reference|FILE] [--model NAME] [--max-steps N]
   or:  accelerate launch --config_file "$(nift accelerate-config ddp)" -m nift.cli train --run-dir runs/x ...
   or:  torchrun --nproc_per_node 8 -m nift.cli train --run-dir runs/x ...

This module is the stage: skip / resume / fresh, the run from data to saved adapter, and `nift_train.json`. The
parts: `nift.train.data` (examples, their ids and labels from `nift.prompts`), `nift.train.student` (device,
precision, base model, LoRA), `nift.train.trainer` (`CompletionTrainer`: the loss is the cross-entropy of the
completion tokens only, and the output head runs only at the positions that are scored, so prompt positions cost no
vocabulary projection and no logits memory). Batches come from `nift.train.packing` (padding-free, no attention across
examples).

Output (`run_dir/train/`): `adapter/` (PEFT `save_pretrained` plus the tokenizer; `model/` for full fine-tuning),
`nift_train.json` (what merge and eval need: base model, template, EOS, tokenizer hash, data hash, hyperparameters,
LoRA settings), `log.jsonl` (every logged step), `loss.png`, and `manifest.json` last. Checkpoints go to
`checkpoints/` every `save_steps`; running the same command after a crash or a kill resumes from the last complete
one and ends with the same loss curve as an uninterrupted run (same data order, optimizer, scheduler and RNG states).

Distributed: every process runs this module; process 0 owns the stage directory (decides skip / resume / fresh,
writes outputs and the manifest) and tells the others what to do.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nift import __version__
from nift.artifacts import StageContext, atomic_open, run_stage, sha256_file, write_json
from nift.config import hash_obj
from nift.errors import ConfigError, NiftError
from nift.models import ModelRef, load_tokenizer, tokenizer_hash
from nift.prompts.encoder import TemplateEncoder, check_template, resolve_eos, resolve_pad
from nift.prompts.jinja import write_chat_template
from nift.train.config import TrainConfig
from nift.train.data import DataSpec, load_features, resolve_source
from nift.train.packing import PackedCollator, PaddedCollator, use_segment_attention
from nift.train.student import (
    Processes,
    build_student,
    count_params,
    method_words,
    packing_ok,
    resolve_model,
    resolve_precision,
    select_device,
)
from nift.train.trainer import accumulation, callbacks, check_launcher, mean_logged_loss, trainer_class, training_args

META = "nift_train.json"
LOG = "log.jsonl"
PLOT = "loss.png"
CHECKPOINTS = "checkpoints"
PAPER_EFFECTIVE_BATCH = 256  # 8 per device x 4 accumulation x 8 V100s (Appendix A)
ACCELERATE_CONFIGS = ("ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3")


def accelerate_config(name: str) -> Path:
    """Path of an accelerate config shipped with nift (`accelerate launch --config_file PATH -m nift.cli train`)."""
    if name not in ACCELERATE_CONFIGS:
        from nift.errors import did_you_mean

        raise ConfigError(f"unknown accelerate config {name!r}.{did_you_mean(name, ACCELERATE_CONFIGS)}")
    return Path(__file__).parent.parent / "accelerate" / f"{name}.yaml"


# ---------------------------------------------------------------------------------------------- the stage


def run(cfg: TrainConfig, run_dir: str | Path, force: bool = False, log=print):
    """Run the train stage into `run_dir/train/` (on every process when launched distributed)."""
    procs = Processes.from_env()
    if procs.world > 1:
        import torch
        from accelerate import PartialState

        # Joins the process group the launcher set up: NCCL on GPUs, gloo on CPUs.
        PartialState(cpu=cfg.device == "cpu" or not torch.cuda.is_available())
    say = log if procs.main else (lambda *_: None)
    check_template(cfg.template)
    spec = resolve_source(cfg.data, run_dir)  # every process checks inputs, so all fail alike
    stage_dir = Path(run_dir) / "train"
    fingerprints = {"data_file": sha256_file(spec.file)} if spec.file else {}

    if not procs.main:
        order = procs.broadcast()
        if order["action"] == "abort":
            raise NiftError(f"process 0 stopped: {order['error']}")
        if order["action"] == "train":
            _train(cfg, spec, run_dir, stage_dir, order["resume"], procs, fingerprints, say)
        return None

    announced = False

    def body(ctx: StageContext) -> None:
        nonlocal announced
        resume = _last_checkpoint(ctx.dir / CHECKPOINTS) if ctx.resumed else None
        announced = True
        procs.broadcast({"action": "train", "resume": str(resume) if resume else None})
        if resume:
            say(f"[train] resuming from {resume}")
        ctx.stats.update(_train(cfg, spec, run_dir, ctx.dir, str(resume) if resume else None, procs, fingerprints,
                                say))
        if not cfg.keep_checkpoints:
            shutil.rmtree(ctx.dir / CHECKPOINTS, ignore_errors=True)

    try:
        result = run_stage("train", stage_dir, cfg, body, inputs=spec.stage_inputs, exclude_from_hash=[CHECKPOINTS],
                           force=force, log=say, fingerprints=fingerprints)
    except BaseException as e:
        if not announced:
            procs.broadcast({"action": "abort", "error": str(e) or type(e).__name__})
        raise
    if not announced:
        procs.broadcast({"action": "skip"})
    if not result.skipped:
        s = result.manifest["stats"]
        say(f"[train] done: {s['steps']} steps, train loss {s['train_loss']:.4f}"
            + (f", eval loss {s['eval_loss']:.4f}" if s.get("eval_loss") is not None else "")
            + f"; {s['output']} in {result.dir / s['output']}, curve in {result.dir / PLOT}")
    return result


def _last_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint; newer incomplete ones (a kill while saving) are removed. The Trainer writes
    trainer_state.json last, so its presence marks a checkpoint as complete."""
    if not folder.is_dir():
        return None
    found = sorted(((int(m.group(1)), p) for p in folder.iterdir()
                    if p.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", p.name))), reverse=True)
    for step, path in found:
        state = path / "trainer_state.json"
        try:
            if state.is_file() and json.loads(state.read_text(encoding="utf-8")).get("global_step") == step:
                return path
        except json.JSONDecodeError:
            pass
        shutil.rmtree(path, ignore_errors=True)
    return None


def _train(cfg: TrainConfig, spec: DataSpec, run_dir: str | Path, stage_dir: Path, resume: str | None,
           procs: Processes, fingerprints: dict[str, str], say) -> dict[str, Any]:
    from transformers import PrinterCallback

    t0 = time.perf_counter()
    device = select_device(cfg, procs)
    precision = resolve_precision(cfg.precision, device)
    mref = resolve_model(cfg.model, procs, say)
    tok = load_tokenizer(mref, log=say)
    eos = resolve_eos(tok, cfg.eos_token, cfg.model)
    pad_id = resolve_pad(tok, eos[1], say)
    encoder = TemplateEncoder(tok, cfg.template, eos, cfg.max_length, cfg.system_prompt, cfg.model)
    train_feats, eval_feats, tstats = load_features(cfg, spec, run_dir, encoder, say)
    accum, effective = accumulation(cfg, procs.world)
    per_step = cfg.per_device_batch_size * procs.world
    has_eval = bool(eval_feats)
    # Before the model is loaded: under DeepSpeed ZeRO-3 the arguments set up zero.Init, which shards the weights
    # as they load.
    args = training_args(cfg, stage_dir / CHECKPOINTS, device, precision, accum, has_eval)
    model = build_student(cfg, mref, device, precision)
    n_train, n_all = count_params(model)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    attn = getattr(base.config, "_attn_implementation", None) or "default"
    segments = cfg.packing and use_segment_attention(base)
    packed = cfg.packing and procs.broadcast(packing_ok(model, device, say) if procs.main else None)
    if segments and not packed:
        base.set_attn_implementation(attn)
        segments = False
    # Per-example or variable-length attention: one row per micro-batch, no padding at all. Mask-based attention:
    # rows of at most max_length, so no row costs more attention than the longest example could.
    capacity = None if segments or attn.startswith("flash") else cfg.max_length
    collator = PackedCollator(pad_id, capacity) if packed else PaddedCollator(pad_id)

    steps_per_epoch = math.ceil(math.ceil(len(train_feats) / per_step) / accum)
    total_steps = cfg.max_steps or math.ceil(steps_per_epoch * cfg.epochs)
    say(f"[train] student {cfg.model} ({method_words(cfg)}: {n_train / 1e6:.2f}M trainable of {n_all / 1e6:.1f}M), "
        f"template {encoder.info.name}, {len(train_feats)} train / {len(eval_feats)} eval examples "
        f"({tstats['truncated']} prompts cut from the left, {tstats['without_eos']} completions cut at the teacher's "
        f"max_tokens trained without EOS, {tstats['skipped'].get('cut_at_max_tokens', 0)} dropped), "
        f"{total_steps} steps")
    say(f"[train] effective batch {effective} = {cfg.per_device_batch_size} per device x {accum} accumulation x "
        f"{procs.world} process{'es' if procs.world > 1 else ''}; the paper's: {PAPER_EFFECTIVE_BATCH} = 8 x 4 x 8 "
        f"GPUs (here: --effective-batch {PAPER_EFFECTIVE_BATCH} or --grad-accum "
        f"{max(1, PAPER_EFFECTIVE_BATCH // per_step)})")
    say(f"[train] {device}, {precision}, attention {attn}{' per example' if segments else ''}, "
        + (f"packing on (padding-free, {'one row' if capacity is None else f'rows of <= {capacity} tokens'} per "
           "micro-batch)" if packed else "padding"))

    log_path = stage_dir / LOG
    trainer = trainer_class()(
        model=model, args=args, train_dataset=train_feats, eval_dataset=eval_feats or None, data_collator=collator,
        processing_class=tok, callbacks=callbacks(log_path),
    )
    if not cfg.progress:
        trainer.remove_callback(PrinterCallback)
    check_launcher(trainer, say)
    trainer.train(resume_from_checkpoint=resume)
    eval_loss = trainer.evaluate()["eval_loss"] if has_eval else None

    if segments:  # what is saved names transformers' own kernel
        base.set_attn_implementation(attn)
    out_name = "model" if cfg.method == "full" else "adapter"
    out_dir = stage_dir / out_name
    trainer.save_model(str(out_dir))  # every process: FSDP / ZeRO-3 gather the weights
    trainer.accelerator.wait_for_everyone()
    if not procs.main:
        return {}
    (out_dir / "training_args.bin").unlink(missing_ok=True)
    if write_chat_template(out_dir, encoder.info.to_json(), tok):
        say(f"[train] the tokenizer has no chat template: wrote the training template ({encoder.info.name}) into "
            f"{out_dir / 'tokenizer_config.json'}")
    history = [r for r in trainer.state.log_history if "loss" in r]
    train_time = time.perf_counter() - t0
    stats = {
        "output": out_name, "examples": {"train": len(train_feats), "eval": len(eval_feats)},
        **tstats, "steps": trainer.state.global_step,
        "train_loss": mean_logged_loss(trainer.state.log_history),
        "final_logged_loss": history[-1]["loss"] if history else None,
        "eval_loss": eval_loss, "tokens_seen": trainer.state.num_input_tokens_seen,
        "effective_batch": effective, "world_size": procs.world, "precision": precision, "packing": packed,
        "device": device, "resumed_from": resume,
        # What accelerate set up from the launcher's config: NO, MULTI_GPU or MULTI_CPU (DDP), FSDP, DEEPSPEED.
        "distributed": str(getattr(dist_type := trainer.accelerator.distributed_type, "value", dist_type)),
    }
    meta = _metadata(cfg, mref, tok, encoder, spec, fingerprints, model, precision, accum, effective, procs,
                     packed, stats, out_name)
    write_json(stage_dir / META, meta)
    plot_loss(log_path, stage_dir / PLOT, title=f"{cfg.model} · {cfg.data} · effective batch {effective}")
    stats["wall_s"] = round(train_time, 1)
    return stats


def _metadata(cfg: TrainConfig, mref: ModelRef, tok: Any, encoder: TemplateEncoder, spec: DataSpec,
              fingerprints: dict[str, str], model: Any, precision: str, accum: int, effective: int,
              procs: Processes, packed: bool, stats: dict[str, Any], out_name: str) -> dict[str, Any]:
    from nift.artifacts import manifest_hash

    data_inputs = {name: manifest_hash(d) for name, d in spec.stage_inputs.items()}
    data_inputs.update(fingerprints)
    lora = None
    if cfg.method != "full":
        pc = model.peft_config["default"]
        lora = {"r": pc.r, "alpha": pc.lora_alpha, "dropout": pc.lora_dropout,
                "target_modules": sorted({m.rsplit(".", 1)[-1] for m in pc.target_modules})
                if not isinstance(pc.target_modules, str) else pc.target_modules,
                "requested_target_modules": list(cfg.lora_target_modules),
                "quantized_base": cfg.method == "qlora"}
    info = encoder.info
    return {
        "nift_version": __version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "base_model": cfg.model,
        "base_model_path": mref.path if not mref.gguf_file else str(Path(mref.path) / mref.gguf_file),
        "base_model_kind": mref.kind,
        "method": "full" if cfg.method == "full" else "lora",
        "output_dir": out_name,
        "template": info.name if info.name != "custom" else info.text,
        "template_info": info.to_json(),
        "eos_token": info.eos_token,
        "eos_token_id": info.eos_token_id,
        "tokenizer_hash": tokenizer_hash(tok),
        "data": {"source": spec.source, "file": str(spec.file) if spec.file else None,
                 "format": cfg.data_format if spec.file else None, "inputs": data_inputs},
        "data_manifest_hash": hash_obj(data_inputs),
        "hyperparameters": {
            "epochs": cfg.epochs, "max_steps": cfg.max_steps, "steps": stats["steps"], "lr": cfg.lr,
            "lr_scheduler": cfg.lr_scheduler, "warmup_ratio": cfg.warmup_ratio, "weight_decay": cfg.weight_decay,
            "max_grad_norm": cfg.max_grad_norm, "per_device_batch_size": cfg.per_device_batch_size,
            "grad_accum": accum, "world_size": procs.world, "distributed": stats["distributed"],
            "effective_batch": effective,
            "max_length": cfg.max_length, "truncation": cfg.truncation, "precision": precision,
            "gradient_checkpointing": cfg.gradient_checkpointing, "packing": packed, "seed": cfg.seed,
            "eval_fraction": cfg.eval_fraction, "optimizer": "adamw_torch",
            "cut_at_max_tokens": cfg.cut_at_max_tokens,
        },
        "lora": lora,
        "results": {k: stats[k] for k in ("train_loss", "final_logged_loss", "eval_loss", "tokens_seen")},
    }


# -------------------------------------------------------------------------------------------------- plot


def plot_loss(log_path: Path, out: Path, title: str = "") -> None:
    """Training loss per logged step, eval loss where measured, learning rate on a second axis: the report's chart
    (`nift.report.charts.loss_curve`), drawn from log.jsonl."""
    from nift.report.charts import loss_curve

    rows = [json.loads(x) for x in log_path.read_text(encoding="utf-8").splitlines() if x.strip()] \
        if log_path.is_file() else []
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    lrs = [(r["step"], r["learning_rate"]) for r in rows if "learning_rate" in r]
    with atomic_open(out, "wb") as f:
        f.write(loss_curve(train, evals, lrs, title))
