"""The merge itself: the target's shards streamed through the arithmetic into a new folder, row block by row
block, plus the config, tokenizer and generation config beside them."""

from __future__ import annotations

import functools
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from nift.artifacts import write_json
from nift.checkpoint import INDEX, ShardWriter, TensorInfo, TensorReader, read_header, torch_dtype, write_index
from nift.merge.checks import load_tokenizer_quietly
from nift.merge.plan import MergePlan, dtype_name
from nift.prompts.jinja import write_chat_template


@functools.cache
def _process() -> Any:
    import psutil

    return psutil.Process()


def _rss() -> int:
    return _process().memory_info().rss


BLOCK_BYTES = 32 << 20  # float32 rows worked on at a time


def merge_tensor(plan: MergePlan, t: TensorInfo, w: Any,
                 readers: dict[str, TensorReader]) -> tuple[str, Iterator[Any]]:
    """What is done to one target tensor, and its merged value as a sequence of row blocks.

    The arithmetic is float32 on at most BLOCK_BYTES of rows at a time, each block cast to the tensor's output
    dtype, so the working memory stays flat however large the tensor (a 128k x 8k embedding under chat-vector).
    Untouched tensors pass through as they were read (no copy)."""
    import torch

    out_dtype = torch_dtype(plan.out_dtype(t))
    adapter = plan.adapter
    full = adapter.full.get(t.name) if adapter is not None else None
    mod = adapter.modules.get(t.name) if adapter is not None else None
    owner = (adapter.modules.get(t.name.removesuffix("bias") + "weight")
             if adapter is not None and t.name.endswith(".bias") else None)
    if owner is not None and owner.bias is None:
        owner = None
    # PEFT semantics: a whole tensor in the adapter replaces the target's (and the chat vector's) value; a LoRA on
    # the same module (PEFT saves embeddings whole next to their LoRA) still adds its delta on top.
    kinds = [k for k, on in (("replaced", full is not None), ("chat_vector", plan.chat and full is None),
                             ("lora", mod is not None), ("lora_bias", owner is not None)) if on]
    if not t.is_float or t.numel == 0:
        return "copied", iter([w.to(out_dtype)])
    if not kinds and w.dtype == out_dtype:
        return "copied", iter([w])
    rows = t.shape[0] if t.shape else 1
    step = max(1, BLOCK_BYTES // (4 * max(1, t.numel // max(rows, 1))))

    def blocks() -> Iterator[Any]:
        src = (full if full is not None else w).reshape(rows, -1)
        inst = base = None
        if "chat_vector" in kinds:
            inst = readers["instruct"].get(t.name).reshape(rows, -1)
            base = readers["base"].get(t.name).reshape(rows, -1)
        for a in range(0, rows, step):
            b = min(rows, a + step)
            if not kinds:
                yield src[a:b].to(out_dtype)
                continue
            acc = src[a:b].to(torch.float32, copy=True)
            # target + λ·(instruct − base) + s·(α/r)·B·A, in that order
            if inst is not None:
                d = inst[a:b].to(torch.float32, copy=True)
                d.sub_(base[a:b].float())  # type: ignore[index]
                acc.add_(d.mul_(plan.chat_scale))
            if mod is not None:
                mod.add_rows_to(acc, a, b, plan.adapter_scale * mod.scaling)
            if owner is not None:
                acc.add_((owner.bias[a:b].float() * (plan.adapter_scale * owner.scaling)).reshape(acc.shape))
            yield acc.to(out_dtype)

    return ("+".join(kinds) or "cast"), blocks()


def merge_weights(plan: MergePlan, out_dir: Path, progress: bool = False,
                  tensor_hook: Callable[[str, Any], Any] | None = None) -> dict[str, Any]:
    """Stream the target's shards through `merge_tensor` into `out_dir`, one output shard per input shard.

    Peak memory: the adapter, the pages of the open input shard (safetensors maps it; they are clean page cache,
    released when the next shard is opened) and a few float32 row blocks.
    `tensor_hook(name, block)` may replace a block of rows just before it is written (the tests corrupt a merge
    with it on purpose)."""
    from tqdm import tqdm

    readers = {"target": TensorReader(plan.target)}
    if plan.chat:
        readers["base"] = TensorReader(plan.base)  # type: ignore[arg-type]
        readers["instruct"] = TensorReader(plan.instruct)  # type: ignore[arg-type]
    out_dir.mkdir(parents=True, exist_ok=True)
    counts: Counter = Counter()
    weight_map: dict[str, str] = {}
    total_out = 0
    rss_start = rss_peak = _rss()
    bar = tqdm(total=plan.target.total_bytes, unit="B", unit_scale=True, desc="merge", disable=not progress)
    try:
        for file, infos in plan.target.by_file().items():
            _, meta = read_header(file)
            writer = ShardWriter(out_dir / file.name, [(t.name, plan.out_dtype(t), t.shape) for t in infos],
                                 metadata=meta or {"format": "pt"})
            try:
                for t in infos:
                    kind, blocks = merge_tensor(plan, t, readers["target"].get(t.name), readers)
                    for block in blocks:
                        writer.write(t.name, block if tensor_hook is None else tensor_hook(t.name, block))
                        rss_peak = max(rss_peak, _rss())
                    counts[kind] += 1
                    bar.update(t.nbytes)
                    del blocks, block  # a live view would keep this shard's file mapped once the next is open
                writer.close()
            except BaseException:
                writer.abort()
                raise
            total_out += writer.data_bytes
            weight_map.update({t.name: file.name for t in infos})
            for r in readers.values():
                r.close()  # unmap the finished shard before opening the next
    finally:
        bar.close()
        for r in readers.values():
            r.close()
    if (plan.target.folder / INDEX).is_file():
        write_index(out_dir, weight_map, total_out)
    return {"tensors": dict(sorted(counts.items())), "bytes_written": total_out, "shards": len(plan.target.files),
            "rss_start_mb": round(rss_start / 2**20, 1), "rss_peak_mb": round(rss_peak / 2**20, 1)}


# Weight formats and files that belong to the source model, not to the merged one.
_WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".gguf", ".msgpack", ".h5", ".ckpt", ".onnx"}
_NOT_COPIED = {INDEX, "pytorch_model.bin.index.json", "README.md", "nift_model.json"}


def write_aux_files(plan: MergePlan, out_dir: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Config, tokenizer and generation config from the target; dtype and EOS brought up to date."""
    from transformers import AutoConfig, GenerationConfig

    copied = []
    for p in sorted(plan.target.folder.iterdir()):
        source_only = p.suffix in _WEIGHT_SUFFIXES or p.name in _NOT_COPIED or p.name.startswith(".")
        if p.is_file() and not source_only:
            shutil.copyfile(p, out_dir / p.name)
            copied.append(p.name)
    config = dict(plan.target.config)
    out_main = dtype_name(plan.main_out_dtype())
    for key in ("dtype", "torch_dtype"):
        if key in config or (key == "dtype" and "torch_dtype" not in config):
            config[key] = out_main
    write_json(out_dir / "config.json", config)

    notes = {}
    info = (plan.meta or {}).get("template_info")
    if info and write_chat_template(out_dir, info, lambda: plan.tokenizer or load_tokenizer_quietly(out_dir)):
        # As LLaMA-Factory's export: a model without a chat template gets the one it was trained with.
        notes["chat_template"] = f"the training template ({info.get('name')}) written into tokenizer_config.json"
        log(f"[merge] {notes['chat_template']}")
    try:
        gen = GenerationConfig.from_pretrained(out_dir)
    except OSError:
        gen = GenerationConfig.from_model_config(AutoConfig.from_pretrained(out_dir))
        notes["generation_config"] = "created from config.json (the target has none)"
    if plan.eos_id is not None:
        eos = gen.eos_token_id
        ids = [] if eos is None else (list(eos) if isinstance(eos, (list, tuple)) else [eos])
        if plan.eos_id not in ids:
            # The adapter was trained to end with this token (EOS appended to every target): without it in the
            # stop list the merged model would run on past its answers.
            gen.eos_token_id = [*ids, plan.eos_id]
            notes["eos_token_id"] = f"added {plan.eos_id} ({(plan.meta or {}).get('eos_token')}), the EOS the " \
                                    f"adapter was trained with, to {ids}"
            log(f"[merge] generation_config: {notes['eos_token_id']}")
    gen.save_pretrained(out_dir)
    return {"copied": copied, **notes}


