"""The student: where this process runs (launcher rank, device, precision) and the model it trains (the base
loaded in the compute precision, plus LoRA / QLoRA adapters, or the full model)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from nift.errors import ConfigError, NiftError, missing_package
from nift.models import ModelRef, cpu_has_bf16, resolve
from nift.train.config import TrainConfig
from nift.train.packing import packing_works

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


def select_device(cfg: TrainConfig, procs: Processes) -> str:
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


def packing_ok(model: Any, device: str, say) -> bool:
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


def resolve_model(ref: str, procs: Processes, say) -> ModelRef:
    """Resolve (and on first use install) the student; one process at a time so a demo model is pulled once."""
    if procs.world == 1:
        return resolve(ref, log=say)
    from accelerate import PartialState

    with PartialState().main_process_first():
        return resolve(ref, log=say)


def count_params(model: Any) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def method_words(cfg: TrainConfig) -> str:
    if cfg.method == "full":
        return "full fine-tuning"
    return (f"{'QLoRA' if cfg.method == 'qlora' else 'LoRA'} r={cfg.lora_r} alpha={cfg.lora_alpha:g} on "
            f"{' '.join(cfg.lora_target_modules)}")
