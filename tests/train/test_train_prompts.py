"""One renderer for train and eval, on the real SmolLM2 and Gemma-3 tokenizers: the generation prompt's ids are exactly
the start of the training ids of the conversation answered, for vanilla, chat, a custom template and FastChat's
one_shot, single- and multi-turn; its text is what eval sends; the chat template written from a training template
renders it."""

from __future__ import annotations

import copy
import shutil

import pytest
from transformers import AutoTokenizer

from nift.eval.templates import conversation_template, render
from nift.models import load_tokenizer
from nift.prompts.encoder import IGNORE, Conversation, TemplateEncoder, resolve_eos
from nift.prompts.formats import messages_of
from nift.prompts.jinja import has_chat_template, write_chat_template, written_by_nift

CONVERSATIONS = {
    "single": [("The harbour town woke slowly, fishing boats knocking against the pier while",
                " gulls argued over the scraps left by the night crew.")],
    "multi": [("What is the capital of France?", " Paris, on the Seine."),
              ("And its population?", " About two million in the city proper."),
              ("Name one museum there.", " The Louvre.")],
}
TEMPLATES = ("vanilla", "chat", "Q: {prompt}\nA:", "one_shot")


@pytest.fixture(scope="module", params=["smollm2", "gemma_base"])
def tok(request):
    return load_tokenizer(request.getfixturevalue(request.param), log=lambda *_: None)


def _encoder(tok, template: str) -> TemplateEncoder:
    if template == "chat" and not tok.chat_template:
        pytest.skip("a base model without a chat template")
    return TemplateEncoder(tok, template, resolve_eos(tok, None, "m"), 4096)


each_conversation = pytest.mark.parametrize("turns", CONVERSATIONS.values(), ids=CONVERSATIONS.keys())


@each_conversation
@pytest.mark.parametrize("template", TEMPLATES)
def test_generation_prompt_ids_start_the_training_ids(tok, template, turns):
    enc = _encoder(tok, template)
    train = enc.encode(Conversation(tuple(turns)))
    for k in range(len(turns)):  # the prompt for every turn, the earlier ones answered
        gen = enc.generation([*turns[:k], (turns[k][0], None)])
        assert train.input_ids[:len(gen.ids)] == gen.ids
        # The prompt ends untrained (the user turn) and the answer's first token, right after it, is trained.
        assert train.labels[len(gen.ids) - 1] == IGNORE and train.labels[len(gen.ids)] != IGNORE


@each_conversation
@pytest.mark.parametrize("template", TEMPLATES)
def test_generation_prompt_text_is_what_eval_sends(tok, template, turns):
    enc = _encoder(tok, template)
    ask = [*turns[:-1], (turns[-1][0], None)]
    assert enc.generation(ask).text == render(template, ask, tokenizer=tok).prompt


@pytest.mark.parametrize("template", ("vanilla", "Q: {prompt}\nA:", "one_shot"))
def test_single_turn_prompt_ids_are_the_tokenizers(tok, template):
    """Where the prompt is one segment, its ids are what the tokenizer gives the text at inference."""
    gen = _encoder(tok, template).generation([(CONVERSATIONS["single"][0][0], None)])
    assert gen.ids == tok(gen.text)["input_ids"]


@pytest.fixture(scope="module")
def plain_folder(tok, tmp_path_factory):
    """The tokenizer saved without a chat template, as a base model's folder is."""
    bare = copy.deepcopy(tok)
    bare.chat_template = None
    folder = tmp_path_factory.mktemp("base")
    bare.save_pretrained(folder)
    (folder / "config.json").write_text('{"model_type": "a-base-model"}', encoding="utf-8")
    return folder


@each_conversation
@pytest.mark.parametrize("template", ("vanilla", "Q: {prompt}\nA:"))
def test_written_chat_template_renders_the_generation_prompt(tok, plain_folder, template, turns, tmp_path):
    """What train and merge write into a folder without a chat template: apply_chat_template gives nift's generation
    prompt (after the tokenizer's BOS, as chat templates carry it), and eval's `auto` still asks with one_shot."""
    folder = tmp_path / "model"
    shutil.copytree(plain_folder, folder)
    enc = _encoder(tok, template)
    assert written_by_nift(write_chat_template(folder, enc.info.to_json(), tok))
    assert write_chat_template(folder, enc.info.to_json(), tok) is None  # once only: now it has one
    loaded = AutoTokenizer.from_pretrained(folder)
    ask = [*turns[:-1], (turns[-1][0], None)]
    rendered = loaded.apply_chat_template(messages_of(ask, "a system prompt, left out as in training"),
                                          add_generation_prompt=True, tokenize=False)
    bos = "".join(tok.convert_ids_to_tokens(list(enc.prefix)))
    gen = enc.generation(ask)
    assert rendered == bos + gen.text
    if len(turns) == 1:
        assert loaded(rendered, add_special_tokens=False)["input_ids"] == gen.ids
    assert conversation_template(str(folder))[0] == "one_shot"
    assert has_chat_template(folder) and not has_chat_template(folder, count_nift=False)
