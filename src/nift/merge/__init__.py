"""`nift merge`: fold a LoRA adapter (and optionally a chat vector) into a model, tensor by tensor.

Run as: nift merge --run-dir runs/x                                     # lora: into the adapter's own base
        nift merge --run-dir runs/x --method lora-base --target INSTRUCT  # the paper's lora-base
        nift merge --method chat-vector --base BASE --instruct INSTRUCT --target T --chat-vector-scale 0.5

Methods (the paper, Table 1): `lora` merges the adapter into the model it was trained on; `lora-base` merges an
adapter trained on a base model into that model's instruct sibling, which acts like a chat vector (Huang et al.
2024). `chat-vector` is the arithmetic itself, target + λ·(instruct − base), optionally plus the adapter; and
`--adapter-scale` puts a λ on the LoRA delta, so users can explore what `lora-base` does.

How: the target's safetensors files are read one tensor at a time (`safe_open`) and written one tensor at a time
(`nift.checkpoint.ShardWriter`), each output shard mirroring an input shard, so peak memory stays near one shard
plus the adapter. Deltas are computed in float32 and cast to the tensor's own dtype (bf16 stays bf16). Before
anything is written, architecture, every tensor and targeted module's shape, and the vocabulary are compared; any
difference is listed and the merge refused. After writing, the merged folder is loaded and its logits compared with
the unmerged reference (PEFT on the target, or the arithmetic in memory).

Why not mergekit: it installs cleanly here, but its LoRA path loads the whole model and runs PEFT's
merge_and_unload (whole model in memory, plus a full merged copy in its cache), it cannot check a base/sibling
pair before writing, and the arithmetic it would add is one line per tensor in the streaming loop below.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# Each public name and the module that holds it, imported on first use, not with `nift.merge.config`: the config
# loader reads that, and loading a config must not load the merge.
_WHERE = {
    "Adapter": "adapter", "LoraModule": "adapter", "read_train_meta": "adapter", "MergeRefused": "checks",
    "check_plan": "checks", "MergePlan": "plan", "build_plan": "plan", "run": "stage", "merge_tensor": "stream",
    "merge_weights": "stream", "verify_merge": "verify",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f"nift.merge.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
