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

from nift.merge.adapter import Adapter, LoraModule, read_train_meta
from nift.merge.checks import MergeRefused, check_plan
from nift.merge.plan import MergePlan, build_plan
from nift.merge.stage import run
from nift.merge.stream import merge_tensor, merge_weights
from nift.merge.verify import verify_merge

__all__ = ["Adapter", "LoraModule", "MergePlan", "MergeRefused", "build_plan", "check_plan", "merge_tensor",
           "merge_weights", "read_train_meta", "run", "verify_merge"]
