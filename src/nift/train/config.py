"""`TrainConfig`: the settings of `nift train` (the paper's defaults)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from nift.config import StageConfig, volatile


class TrainConfig(StageConfig):
    """`nift train`: LoRA (or full / QLoRA) fine-tuning of a student on prompt -> continuation pairs, the loss on
    the continuation only, EOS appended. Defaults are the paper's (LLaMA-Factory 0.5.2: template vanilla, LoRA on all
    linear layers, r 8, alpha 16, 3 epochs, lr 5e-5, cosine, per-device batch 8 x grad-accum 4; on its 8 GPUs an
    effective batch of 256). Works the same under `accelerate launch` / `torchrun` (DDP, FSDP, DeepSpeed)."""

    stage: ClassVar[str] = "train"

    model: str = Field(
        "smollm2-135m-instruct", description="Student: a demo model name (`nift models list`), a local HF folder, a "
        ".gguf file or a hub id. The paper trains base models; gemma-3-270m is the base demo model.",
    )
    data: str = Field(
        "distill", description="Training pairs: 'distill' (run_dir/distill joined to run_dir/prepare by id), 'audit' "
        "(the audited subset), 'reference' (prepare's original continuations: the paper's undistilled baseline) or a "
        ".jsonl/.json file (see --data-format).",
    )
    data_format: Literal["prompt_completion", "alpaca", "sharegpt"] = Field(
        "prompt_completion", description="Format of a --data file: prompt_completion ({prompt, completion}), alpaca "
        "({instruction, input, output, history}) or sharegpt ({conversations: [{from, value}]} or {messages}), as in "
        "LLaMA-Factory. Ignored for stage outputs.",
    )
    prompt_field: str = Field("prompt", description="Prompt field of a prompt_completion file.")
    completion_field: str = Field("completion", description="Completion field of a prompt_completion file.")
    max_examples: int | None = Field(
        None, ge=1, description="Use only the first N examples (prepare's order makes these nested subsets, for "
        "data-size studies); null = all.",
    )
    cut_at_max_tokens: Literal["no_eos", "drop"] = Field(
        "no_eos", description="A teacher continuation cut at its max_tokens (distill finish_reason 'length') did "
        "not end there: 'no_eos' trains on it without EOS (EOS is a target only where a text really ends), 'drop' "
        "leaves it out (or drop it earlier with audit.drop: [truncated]). Both are counted in the manifest.",
    )
    template: str = Field(
        "vanilla", description="'vanilla' (the paper's: prompt text directly followed by the completion, as "
        "LLaMA-Factory's vanilla template), 'chat' (the tokenizer's chat template: user = prompt, assistant = "
        "completion) or a template string with {prompt}, e.g. '### Instruction:\\n{prompt}\\n\\n### Response:\\n'.",
    )
    system_prompt: str | None = Field(None, description="System prompt for --template chat; null = none.")
    eos_token: str | None = Field(
        None, description="Token appended to every completion (a base model learns to stop from it); null = the "
        "tokenizer's EOS. A tokenizer without EOS needs this.",
    )
    max_length: int = Field(1024, ge=8, description="Longest training sequence in tokens (LLaMA-Factory's "
                            "cutoff_len default).")
    truncation: Literal["left", "error"] = Field(
        "left", description="Longer examples: 'left' keeps the completion whole and cuts the prompt from the left "
        "(an example whose completion alone does not fit is dropped and counted); 'error' stops naming the example.",
    )
    method: Literal["lora", "qlora", "full"] = Field(
        "lora", description="lora (peft), qlora (4-bit base, CUDA with bitsandbytes) or full fine-tuning.",
    )
    lora_r: int = Field(8, ge=1, description="LoRA rank.")
    lora_alpha: float = Field(16, gt=0, description="LoRA alpha (scale alpha/r; LLaMA-Factory's default 2r).")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA input.")
    lora_target_modules: list[str] = Field(
        default_factory=lambda: ["all-linear"],
        description="Modules that get LoRA: 'all-linear' (every linear layer but the output head, as LLaMA-Factory's "
        "lora_target all) or module names such as q_proj v_proj.",
    )
    epochs: float = Field(3.0, gt=0, description="Training epochs.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (overrides "
                                  "epochs); null = run the epochs.")
    lr: float = Field(5e-5, gt=0, description="Peak learning rate.")
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        "cosine", description="Learning-rate schedule.")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Fraction of the steps spent warming up linearly.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping norm (0 = none).")
    per_device_batch_size: int = Field(8, ge=1, description="Examples per device per micro-batch (the paper: 8).")
    grad_accum: int = Field(
        4, ge=1, description="Gradient accumulation steps (the paper: 4). Effective batch = per-device batch x "
        "grad-accum x processes; the paper's is 8 x 4 x 8 GPUs = 256: on N devices use --grad-accum 32/N, or say "
        "--effective-batch 256.",
    )
    effective_batch: int | None = Field(
        None, ge=1, description="If set, grad-accum is derived from it: effective batch / (per-device batch x "
        "processes), which must divide evenly. 256 matches the paper.",
    )
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="auto: bf16 where the device supports it, fp16 on older GPUs (V100, as the paper), bf16 "
        "on CPUs with AVX512-BF16/AMX, else fp32. With LoRA the frozen base is stored in that precision.",
    )
    gradient_checkpointing: bool = Field(True, description="Recompute activations in the backward pass to save "
                                         "memory (LLaMA-Factory's default).")
    packing: bool = Field(
        True, description="Padding-free micro-batches: examples laid end to end with position ids restarting per "
        "example, no attention across examples; used only where a check shows the model honours it.",
    )
    attn_implementation: str | None = Field(None, description="Attention kernel (sdpa, eager, flash_attention_2); "
                                            "null = transformers' default.")
    seed: int = Field(42, description="Seed for initialisation, data order and the eval split.")
    eval_fraction: float = Field(0.01, ge=0, le=0.5, description="Fraction of the examples held out for the eval "
                                 "loss (0 = none).")
    eval_max: int = Field(500, ge=1, description="At most this many held-out examples.")
    device: Literal["auto", "cuda", "cpu"] = Field(
        "auto", description="auto = CUDA if present, else CPU. One process uses one device (pick it with "
        "CUDA_VISIBLE_DEVICES); for several, launch with accelerate launch or torchrun.",
    )
    save_steps: int = volatile(default=100, ge=1, description="Save a checkpoint every N optimizer steps; a "
                               "killed run resumes from the last one.")
    save_total_limit: int = volatile(default=2, ge=1, description="Keep at most N checkpoints.")
    eval_steps: int | None = volatile(default=None, ge=1, description="Eval loss every N steps; null = at every "
                                      "checkpoint.")
    logging_steps: int = volatile(default=10, ge=1, description="Log the loss every N optimizer steps.")
    keep_checkpoints: bool = volatile(default=False, description="Keep train/checkpoints/ after a finished run.")
    progress: bool = volatile(default=True, description="Show a progress bar.")
