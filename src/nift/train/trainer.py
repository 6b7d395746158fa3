"""The training loop's parts: `CompletionTrainer` (transformers' `Trainer` whose loss is the cross-entropy of the
completion tokens only, with the output head run only at the scored positions), the fused linear cross-entropy it
uses, the callbacks every run gets (log.jsonl, a log at every checkpoint), and the `TrainingArguments`."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from nift.artifacts import atomic_open
from nift.errors import ConfigError
from nift.prompts.encoder import IGNORE
from nift.train.config import TrainConfig


class _ScoredPositions:
    """Forward pre-hook for the output head: when `index` is set, the head sees only those flattened positions.
    With `stash`, it keeps them in `hidden` and hands the head none at all: the loss then runs the head itself,
    chunk by chunk (`fused_linear_ce`), instead of the model materialising every scored position's logits."""

    def __init__(self) -> None:
        self.index: Any = None
        self.stash = False
        self.hidden: Any = None

    def __call__(self, module: Any, args: tuple) -> tuple | None:
        if self.index is None or not args:
            return None
        hidden = args[0]
        picked = hidden.reshape(-1, hidden.shape[-1])[self.index]
        if self.stash:
            self.hidden = picked
            return (picked[:0].unsqueeze(0), *args[1:])
        return (picked.unsqueeze(0), *args[1:])


def _fused_ce_class() -> type:
    import torch

    class FusedLinearCE(torch.autograd.Function):
        """sum(cross_entropy(hidden @ weight.T, targets)) in row chunks, the gradient computed as each chunk's
        logits exist (softmax minus one-hot, times the weight), so no more than one chunk of logits is ever held and
        nothing is recomputed in the backward pass. What Liger-Kernel's fused linear cross-entropy does on GPUs, in
        plain torch: with Gemma-3's 262k vocabulary the logits of one packed micro-batch are ~700 MB in fp32, and
        slicing them for a chunked loss made autograd allocate and zero a full-size tensor per chunk (13% of a CPU
        step in a profile)."""

        @staticmethod
        def forward(ctx: Any, hidden: Any, weight: Any, targets: Any, rows: int) -> Any:
            need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            grad_h = torch.empty_like(hidden) if need_h else None
            grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
            for s in range(0, hidden.shape[0], rows):
                h, t = hidden[s:s + rows], targets[s:s + rows]
                logits = (h @ weight.t()).float()
                lse = torch.logsumexp(logits, dim=-1)
                total += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
                if need_h or need_w:
                    p = torch.exp_(logits.sub_(lse[:, None]))  # softmax, in place of the logits
                    p[torch.arange(t.numel(), device=t.device), t] -= 1.0
                    if need_h:
                        grad_h[s:s + rows] = (p.to(weight.dtype) @ weight).to(hidden.dtype)
                    if need_w:
                        grad_w += p.t() @ h.float()
            ctx.save_for_backward(grad_h if need_h else None, grad_w if need_w else None)
            ctx.weight_dtype = weight.dtype
            return total

        @staticmethod
        def backward(ctx: Any, grad_out: Any) -> tuple:
            grad_h, grad_w = ctx.saved_tensors
            return (None if grad_h is None else grad_h * grad_out.to(grad_h.dtype),
                    None if grad_w is None else (grad_w * grad_out).to(ctx.weight_dtype), None, None)

    return FusedLinearCE


def fused_linear_ce(hidden: Any, weight: Any, targets: Any, max_elements: int = 1 << 24) -> Any:
    """Summed fp32 cross-entropy of `hidden @ weight.T` against `targets`, at most `max_elements` logits at a time."""
    return _fused_ce_class().apply(hidden, weight, targets, max(1, max_elements // weight.shape[0]))


def completion_ce_sum(logits: Any, targets: Any, max_elements: int = 1 << 24) -> Any:
    """Summed cross-entropy in fp32, in chunks recomputed in the backward pass, so at most `max_elements` fp32
    logits exist at a time (for heads `fused_linear_ce` cannot stand in for)."""
    import torch
    import torch.nn.functional as F
    from torch.utils.checkpoint import checkpoint

    def ce(lg: Any, tg: Any) -> Any:
        return F.cross_entropy(lg.float(), tg, reduction="sum")

    step = max(1, max_elements // logits.shape[-1])
    total = logits.new_zeros((), dtype=torch.float32)
    for s in range(0, logits.shape[0], step):
        total = total + checkpoint(ce, logits[s:s + step], targets[s:s + step], use_reentrant=False)
    return total


def _can_fuse_head(model: Any, head: Any, accelerator: Any) -> bool:
    """The loss may run the head itself when the head is a plain bias-free Linear whose logits the model does not
    transform (no final soft-capping or scaling) and its weight is a whole tensor here (not sharded by FSDP or
    ZeRO-3)."""
    import torch

    config = getattr(model, "config", None)
    transformed = any(getattr(config, k, None) not in (None, 1, 1.0)
                      for k in ("final_logit_softcapping", "logit_scale", "logits_scaling"))
    dist = str(getattr(accelerator.distributed_type, "value", accelerator.distributed_type))
    return (type(head) is torch.nn.Linear and head.bias is None and not transformed
            and dist not in ("FSDP", "DEEPSPEED"))


def trainer_class() -> type:
    from transformers import Trainer

    class CompletionTrainer(Trainer):
        """Trainer whose loss is the cross-entropy of completion tokens only, with the output head run only at the
        positions that are scored. Counts real (unpadded) tokens for throughput."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._scored = _ScoredPositions()
            head = self.model.get_output_embeddings()
            self._hook = head.register_forward_pre_hook(self._scored) if head is not None else None
            self._head = head if head is not None and _can_fuse_head(self.model, head, self.accelerator) else None
            self._last_log = (time.perf_counter(), None)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            import torch.nn.functional as F

            labels = inputs.pop("labels")
            n_tokens = inputs.pop("num_tokens", None)
            if model.training and n_tokens is not None:
                n = n_tokens.to(self.args.device).reshape(1)
                self.state.num_input_tokens_seen += int(self.accelerator.gather(n).sum().item())
            scored = labels[:, 1:] != IGNORE
            targets = labels[:, 1:][scored]
            positions = F.pad(scored, (0, 1))  # the logits at position t predict token t+1
            self._scored.index = positions.reshape(-1).nonzero().squeeze(1) if self._hook else None
            self._scored.stash = self._head is not None
            try:
                outputs = model(**inputs, use_cache=False)
                hidden, self._scored.hidden = self._scored.hidden, None
            finally:
                self._scored.index = None
            if hidden is not None:
                loss_sum = fused_linear_ce(hidden, self._head.weight, targets)
            else:
                logits = outputs.logits
                if logits.shape[:2] != (1, targets.numel()):  # the head was not called as a module: full logits
                    logits = logits[positions]
                logits = logits.reshape(-1, logits.shape[-1])
                loss_sum = completion_ce_sum(logits, targets)
            if num_items_in_batch is None:
                loss = loss_sum / max(targets.numel(), 1)
            else:
                # Normalised over the whole accumulated (and, across processes, gathered) batch, as Trainer does.
                loss = loss_sum / num_items_in_batch
                if self.args.average_tokens_across_devices:
                    loss = loss * self.accelerator.num_processes
            return (loss, outputs) if return_outputs else loss

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            if "loss" in logs:
                now, before = time.perf_counter(), self._last_log[1]
                seen = self.state.num_input_tokens_seen
                logs["num_tokens"] = seen
                if before is not None and now > self._last_log[0]:
                    logs["tokens_per_s"] = round((seen - before) / (now - self._last_log[0]), 1)
                self._last_log = (now, seen)
            super().log(logs, start_time)

    return CompletionTrainer


def callbacks(log_path: Path) -> list[Any]:
    """The callbacks every run gets (a seam for benchmarks that time steps)."""
    return [_log_callback(log_path), _log_at_save_callback()]


def _log_at_save_callback() -> Any:
    from transformers import TrainerCallback

    class LogAtSave(TrainerCallback):
        """Log the loss at every checkpoint (the trainer logs before it saves). Without it the steps between the
        last log and a checkpoint were summed in memory and lost at a kill, so a resumed run's train_loss (the mean
        of the logged losses) left them out: 7.7958 resumed against 7.7311 uninterrupted, with identical adapters.
        With it, a checkpoint's log history covers every step up to the checkpoint, and both runs log alike."""

        def on_step_end(self, args, state, control, **kwargs):
            if control.should_save:  # set by transformers' DefaultFlowCallback, which runs first
                control.should_log = True
            return control

    return LogAtSave()


def _log_callback(path: Path) -> Any:
    from transformers import TrainerCallback

    class JsonlLog(TrainerCallback):
        """log.jsonl: one line per logged step. On resume it restarts from the checkpoint's history, so the file of a
        resumed run ends up like an uninterrupted one."""

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                with atomic_open(path) as f:
                    for row in state.log_history:
                        f.write(json.dumps(row) + "\n")

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                with open(path, "a", encoding="utf-8") as f:
                    f.write(json.dumps({**logs, "step": state.global_step}) + "\n")

    return JsonlLog()


# ------------------------------------------------------------------------------------------ arguments, checks


def accumulation(cfg: TrainConfig, world: int) -> tuple[int, int]:
    """(gradient accumulation steps, effective batch), from --grad-accum or --effective-batch."""
    per_step = cfg.per_device_batch_size * world
    if cfg.effective_batch is None:
        return cfg.grad_accum, per_step * cfg.grad_accum
    if cfg.effective_batch % per_step:
        raise ConfigError(f"--effective-batch {cfg.effective_batch} is not a multiple of per-device batch "
                          f"{cfg.per_device_batch_size} x {world} processes")
    return cfg.effective_batch // per_step, cfg.effective_batch


def training_args(cfg: TrainConfig, checkpoints: Path, device: str, precision: str, accum: int, has_eval: bool):
    """The Trainer's arguments; checkpoints go to `checkpoints`."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(checkpoints), per_device_train_batch_size=cfg.per_device_batch_size,
        per_device_eval_batch_size=cfg.per_device_batch_size, gradient_accumulation_steps=accum,
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps or -1, learning_rate=cfg.lr,
        lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm, bf16=precision == "bf16", fp16=precision == "fp16",
        **_checkpointing_args(cfg.gradient_checkpointing),
        logging_steps=cfg.logging_steps, logging_first_step=True,
        eval_strategy="steps" if has_eval else "no", eval_steps=cfg.eval_steps or cfg.save_steps,
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit,
        seed=cfg.seed, data_seed=cfg.seed, report_to="none", disable_tqdm=not cfg.progress,
        remove_unused_columns=False, prediction_loss_only=True, label_names=["labels"],
        ddp_find_unused_parameters=False, dataloader_num_workers=0, use_cpu=device == "cpu",
    )


def _checkpointing_args(on: bool) -> dict[str, Any]:
    """transformers >= 5.20 names it activation_checkpointing (gradient_checkpointing is a deprecated alias, to go in
    v6); earlier versions, which pyproject admits, know only gradient_checkpointing."""
    import dataclasses

    from transformers import TrainingArguments

    name = "activation" if "activation_checkpointing" in {f.name for f in dataclasses.fields(TrainingArguments)} \
        else "gradient"
    return {f"{name}_checkpointing": on, f"{name}_checkpointing_kwargs": {"use_reentrant": False}}


def check_launcher(trainer: Any, say) -> None:
    """Say so when accelerate did not set up what the launcher's config asked for: it runs FSDP only on GPUs, and
    on CPUs quietly falls back to DDP."""
    got = str(getattr(trainer.accelerator.distributed_type, "value", trainer.accelerator.distributed_type))
    for env, wanted in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DEEPSPEED")):
        if os.environ.get(env, "").lower() == "true" and got != wanted:
            say(f"[train] note: the accelerate config asks for {wanted} but accelerate set up {got} on this "
                f"{'CPU' if trainer.args.device.type == 'cpu' else 'device'}: the model is replicated, not sharded "
                "(accelerate shards with FSDP on GPUs only)")


def mean_logged_loss(history: list[dict[str, Any]]) -> float | None:
    """Mean training loss over the whole run, each logged value weighted by the steps it covers (the same whether
    or not the run was resumed)."""
    total = weight = 0.0
    prev = 0
    for row in history:
        if "loss" in row:
            total += row["loss"] * (row["step"] - prev)
            weight += row["step"] - prev
            prev = row["step"]
    return total / weight if weight else None
