"""Token ids for a template and a conversation: the training ids and labels (`TemplateEncoder.encode`), and the
generation prompt (`TemplateEncoder.generation`: text and ids, the ids exactly the start of the training ids of the
conversation answered). The text segments come from `nift.prompts.formats`; each is tokenized on its own.

The kinds of template:

- `vanilla` — the paper's (`--template vanilla` in LLaMA-Factory 0.5.2, the version it used). There it is
  `_register_template(name="vanilla")` with every slot left at its default: user turn `{{content}}`, assistant turn
  `{{content}}` followed by the EOS token, no system text, an empty separator between turns. So a training sequence is
  the prompt's tokens directly followed by the completion's tokens and EOS, each part tokenized on its own
  (`add_special_tokens=False`), which makes the prompt/completion boundary a token boundary. One deliberate
  difference: nift keeps the tokenizer's own prefix (the BOS that `tokenizer(text)` adds, e.g. Llama's `<s>` or
  Gemma's `<bos>`; none for GPT-2-style tokenizers) so that training sees what `tokenizer(prompt)` gives at inference.
- `chat` — the tokenizer's own chat template, user = prompt, assistant = completion (optional system prompt). The
  prompt part ends with the generation prompt (the assistant header); the completion part is the assistant message as
  the template renders it, cut right after the EOS token if the template emits one, else followed by EOS.
- any other string is a user template in which `{prompt}` marks where the prompt goes (e.g.
  `"### Instruction:\\n{prompt}\\n\\n### Response:\\n"`); the completion and EOS follow it directly.
- `one_shot`, `zephyr`, `llama-2`, `llama-3` (FastChat's, what eval asks base models with): the prompt part ends
  with the assistant role tag; the completion part is the answer and the template's separator, cut right after the
  EOS token if the separator holds one (zephyr, llama-2). Otherwise EOS follows only the last answer: an earlier
  answer ends at the separator, as in the generation prompt of the next turn, which FastChat renders without EOS.

Labels are the token ids of every completion token (EOS included) and -100 for everything else, so the loss covers
completion tokens only. EOS is a target only where the text really ends: a completion the teacher cut at max_tokens
(`Conversation.ends` False) is trained without it, so the student never learns that a text may stop mid-sentence.
Multi-turn conversations (alpaca `history`, sharegpt) train on every assistant turn, as LLaMA-Factory does.

Truncation at `max_length` keeps the last completion whole and cuts the sequence from the left (after the BOS, which
stays): the prompt loses its beginning, never the completion its end. LLaMA-Factory instead cuts prompt and completion
from the right in proportion to their lengths, which would train the model to stop in mid-text. An example whose last
completion does not fit in `max_length` together with at least one prompt token cannot be trained as specified: it is
dropped and counted (`truncation: left`) or reported as an error (`truncation: error`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nift.errors import ConfigError, InputError
from nift.prompts.formats import BUILTIN, FASTCHAT_TEMPLATES, PLACEHOLDER, Turns, kind, segments

IGNORE = -100


@dataclass(frozen=True)
class Conversation:
    """One training example: alternating (user, assistant) turns, the last assistant turn being the completion."""

    turns: tuple[tuple[str, str], ...]
    system: str | None = None
    id: str = ""
    where: str = ""  # "file:line" for error messages
    # Whether the text really ends after the last completion: False for a teacher output cut at max_tokens, which
    # is trained without EOS (an EOS there would teach the student that any token, even mid-word, may end a text).
    ends: bool = True

    @classmethod
    def single(cls, prompt: str, completion: str, id: str = "", where: str = "", ends: bool = True) -> Conversation:
        return cls(((prompt, completion),), None, id, where, ends)


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    prompt_tokens: int  # tokens without a label (prompt, template text)
    completion_tokens: int  # tokens with a label (completions + EOS)
    truncated: bool
    eos: bool = True  # the last completion is followed by a trained EOS (False for a completion cut at max_tokens)


@dataclass(frozen=True)
class Prompt:
    """A generation prompt: the text to send and its ids, as training tokenized them (the tokenizer's prefix, each
    segment on its own)."""

    text: str
    ids: list[int]


@dataclass(frozen=True)
class TemplateInfo:
    """What merge and eval need to reproduce the training format (written into nift_train.json)."""

    name: str  # vanilla, chat, a FastChat template or "custom"
    text: str | None  # the user template string for custom
    prefix_ids: tuple[int, ...]  # the tokenizer's own prefix (BOS) kept in front of every sequence
    eos_token: str
    eos_token_id: int
    system_prompt: str | None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "text": self.text, "prefix_ids": list(self.prefix_ids),
                "eos_token": self.eos_token, "eos_token_id": self.eos_token_id, "system_prompt": self.system_prompt}


def check_template(template: str) -> None:
    """A template is `vanilla`, `chat` or a string with exactly one `{prompt}`."""
    if template in BUILTIN:
        return
    if template.count(PLACEHOLDER) != 1:
        raise ConfigError(
            f"--template {template!r}: use 'vanilla', 'chat' or a template string with exactly one {PLACEHOLDER} "
            "(e.g. '### Instruction:\\n{prompt}\\n\\n### Response:\\n'); the completion follows the rendered text"
        )


def resolve_eos(tok: Any, eos_token: str | None, model_ref: str) -> tuple[str, int]:
    """The token appended to every completion: the tokenizer's EOS unless overridden; a tokenizer without one is an
    error (a model that never sees EOS never learns to stop)."""
    if eos_token is not None:
        ids = tok.convert_tokens_to_ids([eos_token])
        unk = getattr(tok, "unk_token_id", None)
        if not ids or ids[0] is None or (ids[0] == unk and eos_token != getattr(tok, "unk_token", None)):
            raise ConfigError(f"--eos-token {eos_token!r} is not a token of the tokenizer of {model_ref!r}; "
                              "give a token that is already in its vocabulary")
        return eos_token, int(ids[0])
    if tok.eos_token is None or tok.eos_token_id is None:
        raise InputError(
            f"the tokenizer of {model_ref!r} has no EOS token, so the student could not learn to stop: set one with "
            "--eos-token TOKEN (a token already in its vocabulary)"
        )
    return tok.eos_token, int(tok.eos_token_id)


def resolve_pad(tok: Any, eos_id: int, log=print) -> int:
    """Padding id. Without a pad token, EOS is used: safe here because labels come from the template (never from
    masking pad ids) and padded positions are either masked or a separate packed segment, so the EOS that ends every
    completion stays a training target."""
    if tok.pad_token_id is not None:
        return int(tok.pad_token_id)
    log("[train] the tokenizer has no pad token: padding with EOS (safe: labels are built from the template, not by "
        "masking pad ids, so every completion's EOS is still trained)")
    return eos_id


def _prefix_ids(tok: Any) -> tuple[int, ...]:
    with_special = tok("a b")["input_ids"]
    plain = tok("a b", add_special_tokens=False)["input_ids"]
    n = len(with_special) - len(plain)
    if n > 0 and with_special[n:n + len(plain)] == plain:
        return tuple(with_special[:n])
    return ()


class TemplateEncoder:
    """Turns conversations into (input_ids, labels) for one tokenizer and template."""

    def __init__(self, tok: Any, template: str, eos: tuple[str, int], max_length: int,
                 system_prompt: str | None = None, model_ref: str = ""):
        if template not in FASTCHAT_TEMPLATES:  # the ones eval asks with; `nift train --template` takes the others
            check_template(template)
        self.tok = tok
        self.template = template
        self.eos_token, self.eos_id = eos
        self.max_length = max_length
        self.system_prompt = system_prompt
        if template == "chat" and not getattr(tok, "chat_template", None):
            raise ConfigError(f"--template chat: the tokenizer of {model_ref!r} has no chat template; use --template "
                              "vanilla or a template string with {prompt}")
        self.prefix = () if template == "chat" else _prefix_ids(tok)

    @property
    def info(self) -> TemplateInfo:
        name = self.template if self.template in (*BUILTIN, *FASTCHAT_TEMPLATES) else "custom"
        return TemplateInfo(name, None if name != "custom" else self.template, self.prefix, self.eos_token,
                            self.eos_id, self.system_prompt)

    # ------------------------------------------------------------------------------------------- rendering

    def render(self, conv: Conversation) -> list[tuple[str, bool]]:
        """Text segments with a flag: True for text the loss covers (assistant turns)."""
        system = conv.system if conv.system is not None else self.system_prompt
        return segments(self.template, list(conv.turns), self.tok, system)

    def generation(self, turns: Turns, system: str | None = None) -> Prompt:
        """The prompt to answer the last turn (its assistant None): its text and ids, the ids exactly those that
        start the training ids of the conversation once answered."""
        system = system if system is not None else self.system_prompt
        segs = segments(self.template, turns, self.tok, system)
        pieces = self.tok([t for t, _ in segs], add_special_tokens=False)["input_ids"] if segs else []
        ids, text = list(self.prefix), ""
        for (seg, trained), piece in zip(segs, pieces, strict=True):
            piece = self._completion_ids(list(piece), last=False) if trained else list(piece)
            ids += piece
            text += seg + (self.eos_token if trained and kind(self.template) == "plain" else "")
        return Prompt(text, ids)

    # -------------------------------------------------------------------------------------------- encoding

    def encode_many(self, convs: Sequence[Conversation], truncation: str = "left",
                    batch: int = 512) -> list[Encoded | None]:
        """Encode conversations; None for an example that cannot fit (dropped and counted by the caller)."""
        out: list[Encoded | None] = []
        for start in range(0, len(convs), batch):
            chunk = convs[start:start + batch]
            rendered = [self.render(c) for c in chunk]
            texts = [t for segs in rendered for t, _ in segs]
            ids = self.tok(texts, add_special_tokens=False)["input_ids"] if texts else []
            k = 0
            for conv, segs in zip(chunk, rendered, strict=True):
                pieces = ids[k:k + len(segs)]
                k += len(segs)
                out.append(self._assemble(conv, segs, pieces, truncation))
        return out

    def encode(self, conv: Conversation, truncation: str = "left") -> Encoded | None:
        return self.encode_many([conv], truncation)[0]

    def _completion_ids(self, ids: list[int], ends: bool = True, last: bool = True) -> list[int]:
        """An assistant turn's ids; `ends`: the text ends there; `last`: no turn follows it."""
        if kind(self.template) != "plain" and self.eos_id in ids:
            # The template already ends the turn with EOS (e.g. "<|im_end|>\n"): stop right after it, or, for
            # a text that does not end here, right before it.
            end = len(ids) - 1 - ids[::-1].index(self.eos_id)
            return ids[: end + 1] if ends else ids[:end]
        if kind(self.template) == "fastchat" and not last:
            return list(ids)  # FastChat's next turn follows the separator directly
        return [*ids, self.eos_id] if ends else list(ids)

    def _assemble(self, conv: Conversation, segs: list[tuple[str, bool]], pieces: list[list[int]],
                  truncation: str) -> Encoded | None:
        input_ids: list[int] = list(self.prefix)
        labels: list[int] = [IGNORE] * len(self.prefix)
        last_start = 0
        last_trained = max((i for i, (_, trained) in enumerate(segs) if trained), default=-1)
        for i, ((_, trained), ids) in enumerate(zip(segs, pieces, strict=True)):
            if trained:
                ids = self._completion_ids(list(ids), ends=conv.ends or i != last_trained, last=i == last_trained)
                last_start = len(input_ids)
                labels += ids
            else:
                labels += [IGNORE] * len(ids)
            input_ids += ids
        n_completion = sum(1 for x in labels if x != IGNORE)
        truncated = False
        if len(input_ids) > self.max_length:
            keep = len(self.prefix)
            completion_len = len(input_ids) - last_start
            if truncation == "error":
                raise InputError(
                    f"{conv.where or 'example'} (id {conv.id!r}): {len(input_ids)} tokens "
                    f"({len(input_ids) - completion_len} prompt, {completion_len} completion incl. EOS) exceed "
                    f"--max-length {self.max_length}; raise --max-length or use --truncation left (cuts the prompt "
                    "from the left, keeps the completion)"
                )
            if completion_len + keep + 1 > self.max_length:
                return None
            tail = self.max_length - keep
            input_ids = input_ids[:keep] + input_ids[-tail:]
            labels = labels[:keep] + labels[-tail:]
            truncated = True
            n_completion = sum(1 for x in labels if x != IGNORE)
        return Encoded(input_ids, labels, len(input_ids) - n_completion, n_completion, truncated, conv.ends)
