"""Templates and labels on the real SmolLM2 and Gemma-3 tokenizers: every prompt token masked, every completion token
(and EOS) kept, asserted on token ids; truncation keeps the completion; tokenizer problems are clear errors."""

from __future__ import annotations

import copy

import pytest

from nift.errors import ConfigError, InputError
from nift.models import load_tokenizer
from nift.prompts.encoder import IGNORE, Conversation, TemplateEncoder, resolve_eos, resolve_pad

PROMPT = "The harbour town woke slowly, fishing boats knocking against the pier while"
COMPLETION = " gulls argued over the scraps left by the night crew."


@pytest.fixture(scope="module")
def smol_tok(smollm2):
    return load_tokenizer(smollm2)


@pytest.fixture(scope="module")
def gemma_tok(gemma_base):
    return load_tokenizer(gemma_base)


def _enc(tok, template="vanilla", max_length=1024, system=None):
    return TemplateEncoder(tok, template, resolve_eos(tok, None, "m"), max_length, system)


def _plain(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_vanilla_labels_mask_prompt_keep_completion_and_eos(smol_tok):
    e = _enc(smol_tok).encode(Conversation.single(PROMPT, COMPLETION))
    p, c, eos = _plain(smol_tok, PROMPT), _plain(smol_tok, COMPLETION), smol_tok.eos_token_id
    assert e.input_ids == p + c + [eos]  # LLaMA-Factory's vanilla: prompt, then completion, then EOS
    assert e.labels == [IGNORE] * len(p) + c + [eos]
    assert e.labels[-1] == eos and e.prompt_tokens == len(p) and e.completion_tokens == len(c) + 1


def test_vanilla_keeps_the_tokenizers_bos_on_gemma(gemma_tok):
    e = _enc(gemma_tok).encode(Conversation.single(PROMPT, COMPLETION))
    p, c = _plain(gemma_tok, PROMPT), _plain(gemma_tok, COMPLETION)
    assert e.input_ids == [gemma_tok.bos_token_id, *p, *c, gemma_tok.eos_token_id]
    assert e.labels == [IGNORE] * (1 + len(p)) + c + [gemma_tok.eos_token_id]
    assert e.input_ids[: 1 + len(p)] == gemma_tok(PROMPT)["input_ids"]  # what inference tokenizes


def test_chat_template_prompt_is_the_rendered_prompt_and_completion_ends_at_eos(smol_tok):
    enc = _enc(smol_tok, "chat", system="Be brief.")
    e = enc.encode(Conversation.single(PROMPT, COMPLETION))
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPT}]
    prompt_text = smol_tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    n = len(_plain(smol_tok, prompt_text))
    assert e.input_ids[:n] == _plain(smol_tok, prompt_text)
    assert e.labels[:n] == [IGNORE] * n
    completion = e.input_ids[n:]
    assert e.labels[n:] == completion
    assert smol_tok.decode(completion) == COMPLETION + "<|im_end|>"  # cut right after EOS: no trailing newline
    assert completion[-1] == smol_tok.eos_token_id and completion.count(smol_tok.eos_token_id) == 1


def test_user_template_string(smol_tok):
    tpl = "### Instruction:\n{prompt}\n\n### Response:\n"
    e = _enc(smol_tok, tpl).encode(Conversation.single(PROMPT, COMPLETION))
    p = _plain(smol_tok, tpl.replace("{prompt}", PROMPT))
    assert e.input_ids == p + _plain(smol_tok, COMPLETION) + [smol_tok.eos_token_id]
    assert e.labels[: len(p)] == [IGNORE] * len(p)


def test_multi_turn_trains_every_assistant_turn(smol_tok):
    conv = Conversation((("Hi.", " Hello!"), ("Name a colour.", " Blue.")))
    e = _enc(smol_tok).encode(conv)
    eos = smol_tok.eos_token_id
    parts = [_plain(smol_tok, t) for t in ("Hi.", " Hello!", "Name a colour.", " Blue.")]
    assert e.input_ids == parts[0] + parts[1] + [eos] + parts[2] + parts[3] + [eos]
    assert [x for x in e.labels if x != IGNORE] == parts[1] + [eos] + parts[3] + [eos]


def test_truncation_cuts_the_prompt_from_the_left_and_keeps_bos_and_completion(gemma_tok):
    long_prompt = " ".join(["word"] * 300) + " end of the prompt"
    enc = _enc(gemma_tok, max_length=64)
    e = enc.encode(Conversation.single(long_prompt, COMPLETION))
    c = [*_plain(gemma_tok, COMPLETION), gemma_tok.eos_token_id]
    assert len(e.input_ids) == 64 and e.truncated
    assert e.input_ids[0] == gemma_tok.bos_token_id
    assert e.input_ids[-len(c):] == c and e.labels[-len(c):] == c  # the completion is whole
    p = _plain(gemma_tok, long_prompt)
    assert e.input_ids[1:-len(c)] == p[-(63 - len(c)):]  # the end of the prompt survives
    assert all(x == IGNORE for x in e.labels[:-len(c)])


def test_completion_that_cannot_fit_is_dropped_or_an_error(smol_tok):
    conv = Conversation.single("Short prompt", " many words" * 50, id="row-7", where="data.jsonl:7")
    assert _enc(smol_tok, max_length=16).encode(conv) is None
    with pytest.raises(InputError, match=r"data.jsonl:7 \(id 'row-7'\).*exceed --max-length 16"):
        _enc(smol_tok, max_length=16).encode(conv, truncation="error")
    long_prompt = Conversation.single("word " * 100, " ok", id="p", where="f.jsonl:2")
    with pytest.raises(InputError, match=r"f\.jsonl:2"):  # a prompt longer than max_length, under truncation=error
        _enc(smol_tok, max_length=32).encode(long_prompt, truncation="error")


def test_tokenizer_without_eos_or_pad(smol_tok):
    tok = copy.deepcopy(smol_tok)
    tok.eos_token = None
    with pytest.raises(InputError, match=r"no EOS token.*--eos-token"):
        resolve_eos(tok, None, "my-model")
    eot = "<|endoftext|>"
    assert resolve_eos(tok, eot, "my-model") == (eot, tok.convert_tokens_to_ids(eot))
    with pytest.raises(ConfigError, match="not a token"):
        resolve_eos(tok, "<no-such-token>", "my-model")
    tok.pad_token = None
    said = []
    assert resolve_pad(tok, 2, said.append) == 2 and "padding with EOS" in said[0]


def test_template_errors(smol_tok, gemma_tok):
    with pytest.raises(ConfigError, match=r"exactly one \{prompt\}"):
        _enc(smol_tok, "no placeholder here")
    with pytest.raises(ConfigError, match="has no chat template"):
        _enc(gemma_tok, "chat")


def test_a_completion_cut_at_max_tokens_has_no_eos_label(smol_tok, gemma_tok):
    """The teacher hit max_tokens: the text did not end there, so EOS is neither appended nor a label."""
    for tok in (smol_tok, gemma_tok):
        enc = _enc(tok)
        ended = enc.encode(Conversation.single(PROMPT, COMPLETION))
        cut = enc.encode(Conversation.single(PROMPT, COMPLETION, ends=False))
        assert ended.eos and not cut.eos
        assert cut.input_ids == ended.input_ids[:-1] and cut.labels == ended.labels[:-1]
        assert tok.eos_token_id not in cut.labels and tok.eos_token_id not in cut.input_ids
        assert cut.labels[-1] == _plain(tok, COMPLETION)[-1]  # the last label is the last word piece, not EOS
        assert cut.completion_tokens == ended.completion_tokens - 1


def test_cut_completion_under_chat_and_user_templates_and_multi_turn(smol_tok):
    eos = smol_tok.eos_token_id
    chat = _enc(smol_tok, "chat").encode(Conversation.single(PROMPT, COMPLETION, ends=False))
    assert eos not in [x for x in chat.labels if x != IGNORE]
    assert smol_tok.decode([x for x in chat.labels if x != IGNORE]) == COMPLETION
    tpl = _enc(smol_tok, "### Q:\n{prompt}\n### A:\n").encode(Conversation.single(PROMPT, COMPLETION, ends=False))
    assert tpl.labels[-1] != eos and eos not in tpl.input_ids
    # earlier turns of a conversation did end: only the last completion goes without EOS
    conv = Conversation((("Hi.", " Hello!"), ("Name a colour.", " Blue and")), ends=False)
    labels = [x for x in _enc(smol_tok).encode(conv).labels if x != IGNORE]
    assert labels == [*_plain(smol_tok, " Hello!"), eos, *_plain(smol_tok, " Blue and")]
