"""Prompt templates for answering benchmark questions: which one the paper would use for a model
(`conversation_template`), the prompt for a conversation (`render`, from the renderer training uses,
`nift.prompts.formats`), and FastChat's clean-up of an answer (`clean_answer`).

- `chat`: the model's own chat template (`tokenizer.apply_chat_template`, or the server's for an endpoint);
- `one_shot`, `zephyr`, `llama-2`, `llama-3`: FastChat's conversation templates, the ones the paper evaluated
  base models with (Table 1; `conversation_template` picks the paper's for a model);
- `vanilla`: no formatting at all, as LLaMA-Factory's `vanilla` template that nift trains with: the question is
  the prompt; in a multi-turn conversation each earlier answer is followed by the EOS token;
- a string containing `{prompt}` (a custom template `nift train --template` accepts): the question replaces
  `{prompt}`, earlier answers are followed by EOS as with `vanilla`.

A conversation is a list of (user, assistant) turns whose last assistant is None (to be generated).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nift.errors import ConfigError, did_you_mean
from nift.prompts.formats import PLACEHOLDER, TEMPLATES, Turns, fastchat_stop, kind, messages_of, segments


@dataclass(frozen=True)
class Rendered:
    """What to send: a raw `prompt` or chat `messages` (for `chat` with a server), and strings that end an answer."""

    prompt: str | None
    messages: list[dict[str, str]] | None
    stop: tuple[str, ...]


# The paper's Table 1, column "Template": the FastChat conversation template each base model was evaluated with.
PAPER_FAMILY_TEMPLATES = {"llama-2": "one_shot", "mistral": "zephyr", "llama-3": "llama-3"}


def model_family(config: dict[str, Any]) -> str | None:
    """The paper's model families, told apart by architecture and vocabulary (Llama 2: 32,000; Llama 3: 128,256)."""
    kind, vocab = config.get("model_type"), config.get("vocab_size")
    if kind == "mistral":
        return "mistral"
    if kind == "llama" and vocab == 32000:
        return "llama-2"
    if kind == "llama" and isinstance(vocab, int) and vocab >= 128000:
        return "llama-3"
    return None


def conversation_template(model_ref: str) -> tuple[str, str]:
    """How the paper would ask this model questions: (template, why).

    A model with its own chat template (an instruct model) is asked through it; a base model of a family the paper
    evaluated gets that family's FastChat template (Table 1: one_shot for Llama-2, zephyr for Mistral, llama-3 for
    Llama-3); any other base model gets FastChat's `one_shot`, the paper's choice for a base model without one.
    Never the training template: the paper trained with `vanilla` (a question as the start of a document) but asked
    questions in a conversation."""
    import json
    from pathlib import Path

    from nift.models import resolve
    from nift.prompts.jinja import has_chat_template

    try:
        folder = Path(resolve(model_ref, auto_pull=False).path)
    except Exception:  # noqa: BLE001 - a hub id not cached here, say: judge by the name alone
        folder = None
    config: dict[str, Any] = {}
    has_chat = False
    if folder is not None and folder.is_dir():
        if (folder / "config.json").is_file():
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            if isinstance(config.get("text_config"), dict):  # multimodal wrappers keep the LM's config inside
                config = {**config, **config["text_config"]}
        # The training template nift writes into a merged base model is not the model's own.
        has_chat = has_chat_template(folder, count_nift=False)
    if has_chat:
        return "chat", "the model's own chat template (an instruct model)"
    family = model_family(config) or _family_from_name(model_ref)
    if family:
        return PAPER_FAMILY_TEMPLATES[family], f"the paper's template for {family} base models (Table 1)"
    return "one_shot", "FastChat's one_shot, the paper's template for a base model of no listed family (Table 1)"


def _family_from_name(ref: str) -> str | None:
    name = ref.lower()
    for family, keys in (("llama-3", ("llama-3", "llama3")), ("llama-2", ("llama-2", "llama2")),
                         ("mistral", ("mistral",))):
        if any(k in name for k in keys):
            return family
    return None


def check_template(name: str) -> str:
    if name not in TEMPLATES and PLACEHOLDER not in name:
        raise ConfigError(f"unknown template {name!r}.{did_you_mean(name, TEMPLATES)}")
    return name


def render(template: str, turns: Turns, tokenizer: Any = None, system: str | None = None,
           as_messages: bool = False) -> Rendered:
    """Render a conversation for generation.

    `as_messages`: for `chat`, return chat messages (an endpoint applies its own template) instead of a string;
    `tokenizer` is needed for `chat` (local models) and `vanilla` (its EOS token in multi-turn prompts).
    """
    check_template(template)
    if not turns or turns[-1][1] is not None:
        raise ValueError("the last turn must be the one to answer (assistant None)")
    if template == "chat":
        if as_messages:
            return Rendered(None, messages_of(turns, system), ())
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ConfigError("template 'chat' needs a model with a chat template; this tokenizer has none: "
                              f"use one of {', '.join(t for t in TEMPLATES if t != 'chat')}")
        # Not split into segments: a template that rewrites earlier turns cannot be trained with, but can be asked.
        prompt = tokenizer.apply_chat_template(messages_of(turns, system), add_generation_prompt=True, tokenize=False)
        return Rendered(prompt, None, ())
    eos = (getattr(tokenizer, "eos_token", None) or "") if kind(template) == "plain" else ""
    text = "".join(seg + (eos if trained else "") for seg, trained in segments(template, turns, tokenizer, system))
    return Rendered(text, None, fastchat_stop(template) if kind(template) == "fastchat" else ())


def clean_answer(text: str, stop: tuple[str, ...], special_tokens: list[str] | None = None) -> tuple[str, bool]:
    """FastChat's post-processing of a generated answer: cut at the first stop string (found after position 0),
    drop special-token strings, strip. Returns (answer, whether a stop string ended it)."""
    cut = [text.find(s) for s in stop if s and text.find(s) > 0]
    hit = bool(cut)
    if cut:
        text = text[: min(cut)]
    for tok in special_tokens or []:
        if tok:
            text = text.replace(tok, "")
    return text.strip(), hit
