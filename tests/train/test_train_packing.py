"""Padding-free packing without cross-example attention, and the completion-only loss with the output head run only
at scored positions: the same numbers as the plain padded forward with transformers' own loss."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nift.models import load_tokenizer
from nift.prompts.encoder import IGNORE, Conversation, TemplateEncoder, resolve_eos
from nift.train.packing import (
    PackedCollator,
    PaddedCollator,
    first_fit_decreasing,
    packing_works,
    use_segment_attention,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 50), min_size=1, max_size=12), st.integers(50, 120))
def test_first_fit_decreasing_places_everything_within_capacity(lengths, capacity):
    bins = first_fit_decreasing(lengths, capacity)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= capacity for b in bins)
    assert first_fit_decreasing(lengths, None) == [sorted(range(len(lengths)), key=lambda i: -lengths[i])]


@pytest.fixture(scope="module")
def tiny(tiny_model):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    return model, load_tokenizer(tiny_model)


def _features(tok, n=5):
    enc = TemplateEncoder(tok, "vanilla", resolve_eos(tok, None, "tiny"), 256)
    convs = [Conversation.single("word " * (3 + 7 * i) + "and so", " it goes" * (1 + i)) for i in range(n)]
    return [{"input_ids": e.input_ids, "labels": e.labels} for e in enc.encode_many(convs)]


def test_packed_rows_restart_positions_and_pad_as_their_own_segment(tiny):
    _, tok = tiny
    feats = _features(tok)
    batch = PackedCollator(pad_id=0, capacity=40)(feats)
    lengths = [len(f["input_ids"]) for f in feats]
    assert int(batch["num_tokens"]) == sum(lengths)
    assert batch["input_ids"].shape[0] > 1 and "attention_mask" not in batch
    for row_pos, row_lab in zip(batch["position_ids"], batch["labels"], strict=True):
        starts = (row_pos == 0).nonzero().flatten().tolist()
        assert starts[0] == 0
        assert all(row_lab[s] == IGNORE for s in starts)  # no target crosses an example boundary
    assert int((batch["labels"] != IGNORE).sum()) == sum(sum(1 for x in f["labels"][1:] if x != IGNORE)
                                                          for f in feats)


def _trainer(model, tmp_path):
    from transformers import TrainingArguments

    from nift.train.trainer import trainer_class

    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    return trainer_class()(model=model, args=args)


def test_completion_loss_equals_transformers_loss_packed_or_padded(tiny, tmp_path):
    model, tok = tiny
    feats = _features(tok)
    padded = PaddedCollator(pad_id=0)(feats)
    with torch.no_grad():
        reference = model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"],
                          labels=padded["labels"]).loss.item()
    trainer = _trainer(model, tmp_path)
    seen = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, a, o: seen.append(a[0].shape))
    try:
        with torch.no_grad():
            loss_padded = trainer.compute_loss(model, dict(PaddedCollator(pad_id=0)(feats))).item()
            loss_packed = trainer.compute_loss(model, dict(PackedCollator(pad_id=0, capacity=40)(feats))).item()
            loss_one_row = trainer.compute_loss(model, dict(PackedCollator(pad_id=0, capacity=None)(feats))).item()
    finally:
        hook.remove()
    assert use_segment_attention(model)  # per-example attention, as nift trains with sdpa
    try:
        with torch.no_grad():
            loss_segments = trainer.compute_loss(model, dict(PackedCollator(pad_id=0, capacity=None)(feats))).item()
    finally:
        model.set_attn_implementation("sdpa")
    assert loss_padded == pytest.approx(reference, rel=1e-5)
    assert loss_packed == pytest.approx(reference, rel=1e-5)  # no attention across examples
    assert loss_one_row == pytest.approx(reference, rel=1e-5)
    assert loss_segments == pytest.approx(reference, rel=1e-5)
    # The loss ran the head itself, fused with the cross-entropy, on completion positions only: the model's own
    # call of the head got no position at all.
    assert trainer._head is model.get_output_embeddings()
    assert seen and all(s[:2] == (1, 0) for s in seen)
    scored = sum(sum(1 for x in f["labels"][1:] if x != IGNORE) for f in feats)
    trainer._head, seen[:] = None, []  # a head the loss cannot fuse: the model runs it, on those positions only
    hook = model.get_output_embeddings().register_forward_hook(lambda m, a, o: seen.append(a[0].shape))
    try:
        with torch.no_grad():
            loss_unfused = trainer.compute_loss(model, dict(PackedCollator(pad_id=0, capacity=40)(feats))).item()
    finally:
        hook.remove()
    assert loss_unfused == pytest.approx(reference, rel=1e-5)
    assert seen and all(s[:2] == (1, scored) for s in seen)


def test_packing_check_catches_a_model_that_ignores_position_ids(tiny):
    from transformers import LlamaForCausalLM

    model, _ = tiny
    assert packing_works(model, "cpu")[0]

    class NoPositions(LlamaForCausalLM):
        def forward(self, *args, position_ids=None, **kwargs):
            return super().forward(*args, **kwargs)

    blind = NoPositions(model.config)
    blind.load_state_dict(model.state_dict())
    works, d_packed, d_context = packing_works(blind, "cpu")
    assert not works and d_packed > 0.1 * d_context
