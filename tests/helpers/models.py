"""Tiny random-initialised models for tests that need a real architecture but not real weights."""

from __future__ import annotations

from pathlib import Path


def save_tiny_llama(out: Path, tokenizer_ref: str) -> str:
    """A 2-layer, 32-wide Llama, randomly initialised (seed 0), saved with the tokenizer of `tokenizer_ref`. Its
    weights are drawn wider than usual (std 0.2) so that a few LoRA steps visibly move its logits."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from nift.models import load_tokenizer

    tok = load_tokenizer(tokenizer_ref)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True,
                      initializer_range=0.2)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)
