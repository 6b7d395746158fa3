"""`nift train`: fine-tune a student on prompt -> continuation pairs (the paper's §3 and Appendix A).

Run as: nift train --run-dir runs/x [--data distill|audit|reference|FILE] [--model NAME] [--max-steps N]
   or:  accelerate launch --config_file "$(nift accelerate-config ddp)" -m nift.cli train --run-dir runs/x ...
   or:  torchrun --nproc_per_node 8 -m nift.cli train --run-dir runs/x ...

The loop is transformers' `Trainer` with two changes, both in `CompletionTrainer`: the loss is the cross-entropy of
the completion tokens only (labels from `nift.templates`), and the output head runs only at the positions that are
scored (a forward pre-hook on the output embedding gathers them), so prompt positions cost no vocabulary projection
and no logits memory. Batches come from `nift.packing` (padding-free, no attention across examples).

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
import os
import re
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nift import __version__
from nift.artifacts import StageContext, atomic_open, run_stage, sha256_file, write_json
from nift.config import TrainConfig, hash_obj
from nift.errors import ConfigError, InputError, NiftError, missing_package
from nift.models import ModelRef, cpu_has_bf16, load_tokenizer, resolve, tokenizer_hash
from nift.packing import PackedCollator, PaddedCollator, packing_works, use_segment_attention
from nift.templates import IGNORE, TemplateEncoder, check_template, resolve_eos, resolve_pad
from nift.train_data import DataSpec, load_examples, resolve_source, split_eval

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
    return Path(__file__).parent / "accelerate" / f"{name}.yaml"


# ------------------------------------------------------------------------------------------------ processes


@dataclass(frozen=True)
class Processes:
    """This process's place under a launcher (torchrun / accelerate launch set these variables)."""

    world: int
    rank: int

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Processes:
        return cls(int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0")))

    def broadcast(self, obj: Any = None) -> Any:
        """Process 0's `obj`, on every process."""
        if self.world == 1:
            return obj
        from accelerate.utils import broadcast_object_list

        box = [obj]
        broadcast_object_list(box, from_process=0)
        return box[0]


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


# ------------------------------------------------------------------------------------------ device, model


def _device(cfg: TrainConfig, procs: Processes) -> str:
    import torch

    if procs.world > 1:
        from accelerate import PartialState

        device = PartialState().device
        return "cpu" if device.type == "cpu" else str(device)
    if cfg.device == "cpu":
        return "cpu"
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available; use --device cpu or auto")
    if torch.cuda.is_available():
        if torch.cuda.device_count() > 1:
            raise ConfigError(
                f"{torch.cuda.device_count()} GPUs are visible to one process: launch with `accelerate launch` or "
                "`torchrun` to use them all (see the README), or make one visible with CUDA_VISIBLE_DEVICES=0"
            )
        return "cuda"
    return "cpu"


def resolve_precision(choice: str, device: str) -> str:
    """bf16 where the hardware does it, fp16 on GPUs without bf16 (V100, as the paper), else fp32."""
    import torch

    if device.startswith("cuda"):
        bf16 = torch.cuda.is_bf16_supported()
        if choice == "auto":
            return "bf16" if bf16 else "fp16"
        if choice == "bf16" and not bf16:
            raise ConfigError("--precision bf16: this GPU has no bf16 support; use fp16 or auto")
        return choice
    if choice == "fp16":
        raise ConfigError("--precision fp16 needs a GPU; on CPU use bf16 or fp32 (auto picks)")
    if choice == "auto":
        return "bf16" if cpu_has_bf16() else "fp32"
    return choice


def _load_base(cfg: TrainConfig, mref: ModelRef, device: str, precision: str) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    compute = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
    # Trained weights stay fp32 (mixed precision); a frozen LoRA base is stored in the compute precision, as
    # LLaMA-Factory does, which halves its memory and saves a cast per step.
    kwargs: dict[str, Any] = {"dtype": torch.float32 if cfg.method == "full" else compute, **mref.kwargs()}
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    if cfg.method == "qlora":
        if not device.startswith("cuda"):
            raise ConfigError("--method qlora needs a CUDA GPU (bitsandbytes 4-bit); on CPU use --method lora")
        if mref.gguf_file:
            raise ConfigError("--method qlora needs an HF folder or hub id, not a .gguf file")
        try:
            import bitsandbytes  # noqa: F401
            from transformers import BitsAndBytesConfig
        except ImportError:
            raise missing_package("bitsandbytes", "gpu", "--method qlora") from None
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute)
        kwargs["device_map"] = {"": torch.device(device).index or 0}
    try:
        model = AutoModelForCausalLM.from_pretrained(mref.path, **kwargs)
    except (OSError, ValueError) as e:
        raise NiftError(f"could not load model {mref.ref!r}: {e}") from None
    if mref.gguf_file:  # a GGUF-loaded model keeps its quantizer; it is a plain dequantised torch model now
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    model.config.use_cache = False
    return model


def build_student(cfg: TrainConfig, mref: ModelRef, device: str, precision: str) -> Any:
    """The model as training starts: base plus freshly initialised LoRA (seeded), or the full model."""
    from transformers import set_seed

    model = _load_base(cfg, mref, device, precision)
    if cfg.method == "full":
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if cfg.method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    targets: Any = "all-linear" if cfg.lora_target_modules == ["all-linear"] else list(cfg.lora_target_modules)
    lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, bias="none", task_type="CAUSAL_LM")
    set_seed(cfg.seed)
    try:
        return get_peft_model(model, lcfg)
    except ValueError as e:
        import torch

        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ConfigError(f"--lora-target-modules {' '.join(cfg.lora_target_modules)}: {e}. Linear modules of "
                          f"this model: {', '.join(linear)} (or all-linear)") from None


# -------------------------------------------------------------------------------------------- the trainer


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


def _trainer_class() -> type:
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


def _callbacks(log_path: Path) -> list[Any]:
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


# ------------------------------------------------------------------------------------------------- train


def _encode(enc: TemplateEncoder, convs: list, truncation: str, skipped: Counter) -> tuple[list[dict], dict]:
    import numpy as np

    feats, prompt_toks, completion_toks, truncated, no_eos = [], 0, 0, 0, 0
    for e in enc.encode_many(convs, truncation):
        if e is None:
            skipped["completion_longer_than_max_length"] += 1
            continue
        feats.append({"input_ids": np.asarray(e.input_ids, dtype=np.int64),
                      "labels": np.asarray(e.labels, dtype=np.int64)})
        prompt_toks += e.prompt_tokens
        completion_toks += e.completion_tokens
        truncated += e.truncated
        no_eos += not e.eos
    return feats, {"prompt_tokens": prompt_toks, "completion_tokens": completion_toks, "truncated": truncated,
                   "without_eos": no_eos}


def _load_data(cfg: TrainConfig, spec: DataSpec, run_dir: str | Path, encoder: TemplateEncoder, say
               ) -> tuple[list[dict], list[dict], dict[str, Any]]:
    """Token ids and labels of the training and held-out examples, and what was skipped or truncated."""
    convs, skipped = load_examples(spec, run_dir, cfg.data_format, cfg.prompt_field, cfg.completion_field,
                                   cfg.max_examples, cfg.cut_at_max_tokens)
    where = spec.file or spec.stage_inputs.get(spec.source, "")
    if not convs:
        raise InputError(f"no training examples in {where} (skipped: {dict(skipped) or 'none'})")
    train_convs, eval_convs = split_eval(convs, cfg.eval_fraction, cfg.eval_max, cfg.seed)
    train_feats, stats = _encode(encoder, train_convs, cfg.truncation, skipped)
    eval_feats, _ = _encode(encoder, eval_convs, cfg.truncation, Counter())
    if not train_feats:
        raise InputError(f"every example in {where} has a completion longer than --max-length {cfg.max_length} "
                         "tokens (with EOS and one prompt token): raise --max-length")
    if skipped.get("completion_longer_than_max_length"):
        say(f"[train] {skipped['completion_longer_than_max_length']} examples dropped: their completion alone does "
            f"not fit in --max-length {cfg.max_length}")
    return train_feats, eval_feats, {"skipped": dict(skipped), **stats}


def _accumulation(cfg: TrainConfig, world: int) -> tuple[int, int]:
    """(gradient accumulation steps, effective batch), from --grad-accum or --effective-batch."""
    per_step = cfg.per_device_batch_size * world
    if cfg.effective_batch is None:
        return cfg.grad_accum, per_step * cfg.grad_accum
    if cfg.effective_batch % per_step:
        raise ConfigError(f"--effective-batch {cfg.effective_batch} is not a multiple of per-device batch "
                          f"{cfg.per_device_batch_size} x {world} processes")
    return cfg.effective_batch // per_step, cfg.effective_batch


def _training_args(cfg: TrainConfig, stage_dir: Path, device: str, precision: str, accum: int, has_eval: bool):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(stage_dir / CHECKPOINTS), per_device_train_batch_size=cfg.per_device_batch_size,
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


def _train(cfg: TrainConfig, spec: DataSpec, run_dir: str | Path, stage_dir: Path, resume: str | None,
           procs: Processes, fingerprints: dict[str, str], say) -> dict[str, Any]:
    from transformers import PrinterCallback

    t0 = time.perf_counter()
    device = _device(cfg, procs)
    precision = resolve_precision(cfg.precision, device)
    mref = _resolve_model(cfg.model, procs, say)
    tok = load_tokenizer(mref, log=say)
    eos = resolve_eos(tok, cfg.eos_token, cfg.model)
    pad_id = resolve_pad(tok, eos[1], say)
    encoder = TemplateEncoder(tok, cfg.template, eos, cfg.max_length, cfg.system_prompt, cfg.model)
    train_feats, eval_feats, tstats = _load_data(cfg, spec, run_dir, encoder, say)
    accum, effective = _accumulation(cfg, procs.world)
    per_step = cfg.per_device_batch_size * procs.world
    has_eval = bool(eval_feats)
    # Before the model is loaded: under DeepSpeed ZeRO-3 the arguments set up zero.Init, which shards the weights
    # as they load.
    args = _training_args(cfg, stage_dir, device, precision, accum, has_eval)
    model = build_student(cfg, mref, device, precision)
    n_train, n_all = _count_params(model)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    attn = getattr(base.config, "_attn_implementation", None) or "default"
    segments = cfg.packing and use_segment_attention(base)
    packed = cfg.packing and procs.broadcast(_packing_ok(model, device, say) if procs.main else None)
    if segments and not packed:
        base.set_attn_implementation(attn)
        segments = False
    # Per-example or variable-length attention: one row per micro-batch, no padding at all. Mask-based attention:
    # rows of at most max_length, so no row costs more attention than the longest example could.
    capacity = None if segments or attn.startswith("flash") else cfg.max_length
    collator = PackedCollator(pad_id, capacity) if packed else PaddedCollator(pad_id)

    steps_per_epoch = math.ceil(math.ceil(len(train_feats) / per_step) / accum)
    total_steps = cfg.max_steps or math.ceil(steps_per_epoch * cfg.epochs)
    say(f"[train] student {cfg.model} ({_method_words(cfg)}: {n_train / 1e6:.2f}M trainable of {n_all / 1e6:.1f}M), "
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
    trainer = _trainer_class()(
        model=model, args=args, train_dataset=train_feats, eval_dataset=eval_feats or None, data_collator=collator,
        processing_class=tok, callbacks=_callbacks(log_path),
    )
    if not cfg.progress:
        trainer.remove_callback(PrinterCallback)
    _check_launcher(trainer, say)
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
    history = [r for r in trainer.state.log_history if "loss" in r]
    train_time = time.perf_counter() - t0
    stats = {
        "output": out_name, "examples": {"train": len(train_feats), "eval": len(eval_feats)},
        **tstats, "steps": trainer.state.global_step,
        "train_loss": _mean_logged_loss(trainer.state.log_history),
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


def _check_launcher(trainer: Any, say) -> None:
    """Say so when accelerate did not set up what the launcher's config asked for: it runs FSDP only on GPUs, and
    on CPUs quietly falls back to DDP."""
    got = str(getattr(trainer.accelerator.distributed_type, "value", trainer.accelerator.distributed_type))
    for env, wanted in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DEEPSPEED")):
        if os.environ.get(env, "").lower() == "true" and got != wanted:
            say(f"[train] note: the accelerate config asks for {wanted} but accelerate set up {got} on this "
                f"{'CPU' if trainer.args.device.type == 'cpu' else 'device'}: the model is replicated, not sharded "
                "(accelerate shards with FSDP on GPUs only)")


def _packing_ok(model: Any, device: str, say) -> bool:
    """Run the packing check where the weights are all here; sharded or not-yet-loaded weights (ZeRO-3, FSDP's
    memory-efficient loading) fall back to whether the architecture uses transformers' attention interface, which
    builds its masks from position ids."""
    if any(p.device.type == "meta" or hasattr(p, "ds_id") for p in model.parameters()):
        return bool(getattr(model, "_supports_attention_backend", False))
    model.to(device)
    ok, d_packed, d_ctx = packing_works(model, device)
    if not ok:
        say(f"[train] packing off: this model does not keep packed examples apart (difference {d_packed:.3g} vs "
            f"{d_ctx:.3g} from real context); padding instead")
    return ok


def _mean_logged_loss(history: list[dict[str, Any]]) -> float | None:
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


def _resolve_model(ref: str, procs: Processes, say) -> ModelRef:
    """Resolve (and on first use install) the student; one process at a time so a demo model is pulled once."""
    if procs.world == 1:
        return resolve(ref, log=say)
    from accelerate import PartialState

    with PartialState().main_process_first():
        return resolve(ref, log=say)


def _count_params(model: Any) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def _method_words(cfg: TrainConfig) -> str:
    if cfg.method == "full":
        return "full fine-tuning"
    return (f"{'QLoRA' if cfg.method == 'qlora' else 'LoRA'} r={cfg.lora_r} alpha={cfg.lora_alpha:g} on "
            f"{' '.join(cfg.lora_target_modules)}")


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
    """Training loss per logged step, eval loss where measured, learning rate on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(x) for x in log_path.read_text(encoding="utf-8").splitlines() if x.strip()] \
        if log_path.is_file() else []
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    lrs = [(r["step"], r["learning_rate"]) for r in rows if "learning_rate" in r]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss (completion tokens)", color="tab:blue")
    if evals:
        ax.plot(*zip(*evals, strict=True), "o-", label="held-out eval loss", color="tab:orange")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.grid(alpha=0.3)
    if lrs:
        ax2 = ax.twinx()
        ax2.plot(*zip(*lrs, strict=True), color="tab:gray", alpha=0.5, linewidth=1, label="learning rate")
        ax2.set_ylabel("learning rate", color="tab:gray")
        ax2.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax.legend(loc="upper right")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_open(out, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)
