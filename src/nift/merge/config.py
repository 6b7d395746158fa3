"""`MergeConfig`: the settings of `nift merge`, and the prompts its verification compares logits on."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from nift.config import StageConfig, volatile

DEFAULT_VERIFY_PROMPTS = [
    "The capital of France is",
    "Write a short poem about the sea.",
    "def fibonacci(n):\n",
    "Question: What is 17 times 3?\nAnswer:",
]


class MergeConfig(StageConfig):
    """`nift merge`: merge a LoRA adapter into its base (`lora`) or into another model such as the base's
    instruct sibling (`lora-base`, the paper's best results), or add a chat vector (`chat-vector`:
    target + λ·(instruct − base)); streamed shard by shard, written as a plain Hugging Face folder with a model
    card, and verified against the unmerged model."""

    stage: ClassVar[str] = "merge"

    method: Literal["lora", "lora-base", "chat-vector"] = Field(
        "lora", description="lora: merge the adapter into the model it was trained on; lora-base: merge it into "
        "another model with the same architecture and tokenizer (e.g. the base's instruct sibling); chat-vector: "
        "target + λ·(instruct − base), plus the adapter when one is given.",
    )
    adapter: str | None = Field(
        None, description="PEFT LoRA adapter folder (save_pretrained). Default for lora and lora-base: "
        "run_dir/train/adapter. chat-vector uses an adapter only when this is given.",
    )
    target: str | None = Field(
        None, description="Model the result is built on (demo name, HF folder or hub id). lora: default the "
        "adapter's base model (train/nift_train.json, else adapter_config.json); lora-base: required (e.g. the "
        "instruct sibling); chat-vector: default --base.",
    )
    base: str | None = Field(
        None, description="The base model. chat-vector: the `base` in target + λ·(instruct − base), default the "
        "adapter's base; lora-base: the model the adapter was trained on, compared with --target before merging "
        "(default: from the adapter's metadata).",
    )
    instruct: str | None = Field(
        None, description="chat-vector only: the instruct model whose difference from --base is added.",
    )
    adapter_scale: float = Field(
        1.0, ge=-100, le=100, allow_inf_nan=False,
        description="λ on the LoRA delta: W + λ·(α/r)·B·A. 1 = the adapter as trained, 0 = none.",
    )
    chat_vector_scale: float = Field(
        1.0, ge=-100, le=100, allow_inf_nan=False,
        description="chat-vector: λ in target + λ·(instruct − base).",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="dtype of the written weights. auto keeps each tensor's dtype from --target "
        "(bf16 stays bf16; deltas are computed in float32 and cast back).",
    )
    full_tensors: Literal["auto", "replace", "refuse"] = Field(
        "auto", description="Whole tensors stored in the adapter (modules_to_save, saved embedding layers): "
        "replace the target's, or refuse. auto: replace for lora, refuse for lora-base and chat-vector (they "
        "would overwrite the target's own weights with the base's).",
    )
    verify: Literal["auto", "on", "off"] = Field(
        "auto", description="Compare the merged model's logits on a few prompts with the unmerged reference "
        "(target + adapter through PEFT, or the arithmetic done in memory). auto: on when the model fits in "
        "memory in float32.",
    )
    verify_prompts: list[str] = Field(
        default_factory=lambda: list(DEFAULT_VERIFY_PROMPTS), min_length=1,
        description="Prompts whose logits are compared by the verification.",
    )
    verify_rtol: float | None = Field(
        None, gt=0, le=1, description="Allowed relative logit error ||merged − reference|| / ||reference|| "
        "(all positions of all prompts). null: 1e-4, or for bf16/fp16 weights twice the error that rounding the "
        "correctly merged weights to that dtype causes (measured on the same prompts) when that is larger.",
    )
    device: str = volatile(
        default="auto", description="Device for the verification forward passes: auto (CUDA if present), cpu, "
        "cuda, cuda:N. The merge itself streams on the CPU.",
    )
    progress: bool = volatile(default=True, description="Show a progress bar.")
