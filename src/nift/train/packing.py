"""Batches for `nift train`: padding-free packing without cross-example attention, or plain padding.

A micro-batch keeps its examples (8 by default, the paper's per-device batch), so packing changes the layout of a
batch, never what an optimizer step sees. With packing, the examples of a micro-batch are laid end to end with
`position_ids` restarting at 0 for each one (transformers' `DataCollatorWithFlattening`); transformers turns those
position ids into a block-diagonal causal mask (sdpa, eager) or variable-length kernels (FlashAttention), so no token
attends to another example. For FlashAttention the whole micro-batch is one row. For mask-based attention (CPU, sdpa)
one long row would cost attention over the sum of the lengths squared, so examples are first placed into rows of at
most `max_length` tokens (first-fit decreasing) and rows are padded with a separate dummy segment: nearly no padding
and no attention wasted across examples.

With transformers' sdpa (the default), `use_segment_attention` goes further: attention runs per example
(`segment_attention`), so it costs what separate examples would, and the whole micro-batch can be one row without
any padding.

`packing_works` checks the model actually honours it (an architecture that ignores `position_ids` would silently let
examples see each other): it compares packed and separate forward passes once, before training.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from nift.prompts.encoder import IGNORE


def first_fit_decreasing(lengths: list[int], capacity: int | None) -> list[list[int]]:
    """Indices grouped into bins whose lengths sum to at most `capacity` (None: one bin)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    if capacity is None:
        return [order]
    bins: list[list[int]] = []
    room: list[int] = []
    for i in order:
        for b, free in enumerate(room):
            if lengths[i] <= free:
                bins[b].append(i)
                room[b] -= lengths[i]
                break
        else:
            bins.append([i])
            room.append(capacity - lengths[i])
    return bins


@dataclass
class PackedCollator:
    """Padding-free micro-batches: rows of flattened examples with restarting position ids, no attention mask."""

    pad_id: int
    capacity: int | None  # row length budget; None puts the whole micro-batch in one row (FlashAttention)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch
        from transformers import DataCollatorWithFlattening

        flatten = DataCollatorWithFlattening(return_tensors="pt")
        lengths = [len(f["input_ids"]) for f in features]
        rows = [flatten([features[i] for i in b]) for b in first_fit_decreasing(lengths, self.capacity)]
        width = max(r["input_ids"].shape[1] for r in rows)
        out: dict[str, list] = {"input_ids": [], "labels": [], "position_ids": []}
        for r in rows:
            n = width - r["input_ids"].shape[1]
            # Padding is its own segment (positions restart at 0), so real tokens never attend to it.
            out["input_ids"].append(torch.cat([r["input_ids"][0], torch.full((n,), self.pad_id)]))
            out["labels"].append(torch.cat([r["labels"][0], torch.full((n,), IGNORE)]))
            out["position_ids"].append(torch.cat([r["position_ids"][0], torch.arange(n)]))
        batch = {k: torch.stack(v) for k, v in out.items()}
        batch["num_tokens"] = torch.tensor(sum(lengths))
        return batch


@dataclass
class PaddedCollator:
    """Right-padded micro-batches with an attention mask (for models that do not support packing)."""

    pad_id: int

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        ids, labels, mask = [], [], []
        for f in features:
            n = width - len(f["input_ids"])
            ids.append(list(f["input_ids"]) + [self.pad_id] * n)
            labels.append(list(f["labels"]) + [IGNORE] * n)
            mask.append([1] * len(f["input_ids"]) + [0] * n)
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels),
                "attention_mask": torch.tensor(mask), "num_tokens": torch.tensor(sum(map(sum, mask)))}


def packing_works(model: Any, device: Any) -> tuple[bool, float, float]:
    """Whether packed examples stay separate in this model: the logits of an example packed after another must match
    its logits alone far more closely than they match its logits with the other as real context.
    Returns (works, packed difference, context difference)."""
    import torch

    vocab = model.get_input_embeddings().weight.shape[0]
    g = torch.Generator().manual_seed(0)
    a = torch.randint(3, vocab, (1, 12), generator=g).to(device)
    b = torch.randint(3, vocab, (1, 9), generator=g).to(device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            alone = model(input_ids=b, use_cache=False).logits[0].float()
            after = model(input_ids=torch.cat([a, b], 1), use_cache=False).logits[0, a.shape[1]:].float()
            pos = torch.cat([torch.arange(a.shape[1]), torch.arange(b.shape[1])]).unsqueeze(0).to(device)
            packed = model(input_ids=torch.cat([a, b], 1), position_ids=pos, use_cache=False).logits[0, a.shape[1]:]
            packed = packed.float()
    finally:
        model.train(was_training)
    d_packed = (packed - alone).abs().max().item()
    d_context = (after - alone).abs().max().item()
    return d_packed <= 0.1 * d_context and d_context > 0, d_packed, d_context


# ------------------------------------------------------------------------------------- per-example attention

SEGMENT_ATTENTION = "nift_segments"


def segment_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
                      scaling: float | None = None, **kwargs: Any) -> tuple[Any, None]:
    """Attention for packed rows, one example at a time: sdpa with `is_causal` on each example's span.

    With a block-diagonal mask the sdpa kernels still compute every block of the row (cost: row length squared); per
    example the cost is the sum of the squared example lengths, halved again by causal block skipping. The span
    boundaries come from the position ids (a new example wherever they do not count up by one), exactly as
    transformers finds packed sequences. Anything else (a mask, a cache) goes to transformers' own sdpa."""
    import torch
    import torch.nn.functional as F
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    pos = kwargs.get("position_ids")
    if attention_mask is not None or pos is None or query.shape[2] != key.shape[2]:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    pos = pos.expand(query.shape[0], -1)
    gqa = query.shape[1] != key.shape[1]
    p = dropout if module.training else 0.0
    rows = []
    for b in range(query.shape[0]):
        starts = [0, *((torch.diff(pos[b]) != 1).nonzero().flatten() + 1).tolist(), query.shape[2]]
        rows.append(torch.cat([
            F.scaled_dot_product_attention(query[b:b + 1, :, s:e], key[b:b + 1, :, s:e], value[b:b + 1, :, s:e],
                                           dropout_p=p, is_causal=True, scale=scaling, enable_gqa=gqa)
            for s, e in pairwise(starts) if e > s], dim=2))
    return torch.cat(rows, dim=0).transpose(1, 2).contiguous(), None


def use_segment_attention(model: Any) -> bool:
    """Switch a model that uses transformers' sdpa to per-example attention for packed rows. Not for sliding-window
    or soft-capped attention (those keep the mask-based kernels). Returns whether it switched."""
    from transformers import AttentionInterface

    config = model.config
    if getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    sliding = getattr(config, "sliding_window", None) or "sliding_attention" in (getattr(config, "layer_types", None)
                                                                                  or [])
    if sliding or getattr(config, "attn_logit_softcapping", None):
        return False
    AttentionInterface.register(SEGMENT_ATTENTION, segment_attention)
    model.set_attn_implementation(SEGMENT_ATTENTION)
    return model.config._attn_implementation == SEGMENT_ATTENTION
