"""Prompt formats, at the level of text: how a conversation becomes text segments, each marked as trained (an
assistant turn) or not. Training (`nift.prompts.encoder`) tokenizes the segments; generation (eval) sends their
concatenation up to the last user turn. One rendering for both, so a generation prompt is what training put before
an answer.

- `vanilla`: no formatting at all (LLaMA-Factory's `vanilla`, the paper's training template): the user text, then
  the assistant text; every assistant turn but a text cut at max_tokens is followed by EOS.
- a string containing `{prompt}` (a custom template): the user text replaces `{prompt}`, then the assistant text
  and EOS as with `vanilla`.
- `chat`: the tokenizer's own chat template (`apply_chat_template`); an assistant turn is what the template adds
  after the generation prompt.
- `one_shot`, `zephyr`, `llama-2`, `llama-3`: FastChat's conversation templates, the ones the paper evaluated base
  models with (Table 1). The first three come from FastChat itself (`fastchat.conversation`, the PyPI package
  `fschat`, installed with `--no-deps`); `llama-3` was added to FastChat after its last PyPI release, so it is
  defined here exactly as FastChat's main branch defines it (SeparatorStyle.LLAMA3, BOS left to the tokenizer). An
  assistant turn is what FastChat renders after the generation prompt: the answer and the template's separator.

A conversation is a list of (user, assistant) turns; for generation the last assistant is None.
"""

from __future__ import annotations

from typing import Any

from nift.errors import ConfigError, missing_package

FASTCHAT_TEMPLATES = ("one_shot", "zephyr", "llama-2", "llama-3")
BUILTIN = ("vanilla", "chat")
TEMPLATES = ("chat", "vanilla", *FASTCHAT_TEMPLATES)
PLACEHOLDER = "{prompt}"  # marks the user text in a custom template

Turns = list[tuple[str, str | None]]
Segments = list[tuple[str, bool]]  # (text, trained)


def kind(template: str) -> str:
    """`chat`, `fastchat` or `plain` (vanilla and custom templates: user text, assistant text, EOS)."""
    if template == "chat":
        return "chat"
    return "fastchat" if template in FASTCHAT_TEMPLATES else "plain"


def user_text(template: str, user: str) -> str:
    return user if template == "vanilla" else template.replace(PLACEHOLDER, user)


def messages_of(turns: Turns, system: str | None = None) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": system}] if system else []
    for user, assistant in turns:
        msgs.append({"role": "user", "content": user})
        if assistant is not None:
            msgs.append({"role": "assistant", "content": assistant})
    return msgs


def segments(template: str, turns: Turns, tok: Any = None, system: str | None = None) -> Segments:
    """The conversation as text segments; a last turn whose assistant is None ends with its (untrained) prompt."""
    if kind(template) == "plain":
        out: Segments = []
        for user, assistant in turns:
            out.append((user_text(template, user), False))
            if assistant is not None:
                out.append((assistant, True))
        return out
    if kind(template) == "chat":
        def text(upto: Turns, generation: bool) -> str:
            return _apply_chat(tok, messages_of(upto, system), generation)
    else:
        def text(upto: Turns, generation: bool) -> str:
            return fastchat_prompt(template, upto, system)
    return _by_difference(template, turns, text)


def _by_difference(template: str, turns: Turns, text) -> Segments:
    """Segments of a template that renders whole conversations: a turn's prompt is what the generation prompt adds to
    the conversation so far, its answer what the answered turn adds to the generation prompt."""
    out: Segments = []
    done = ""
    for k, (user, assistant) in enumerate(turns):
        with_prompt = text([*turns[:k], (user, None)], True)
        full = text(turns[:k + 1], False) if assistant is not None else with_prompt
        if not with_prompt.startswith(done) or not full.startswith(with_prompt):
            what = "tokenizer's chat template" if template == "chat" else "template"
            raise ConfigError(
                f"--template {template}: this {what} does not render a conversation as a prefix of its "
                "continuation (it rewrites earlier turns), so prompt and completion tokens cannot be told apart; "
                "use --template vanilla or a template string with {prompt}"
            )
        out.append((with_prompt[len(done):], False))
        if assistant is not None:
            out.append((full[len(with_prompt):], True))
        done = full
    return out


def _apply_chat(tok: Any, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    try:
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as e:  # noqa: BLE001 - jinja errors from the model's own template
        raise ConfigError(f"--template chat: the tokenizer's chat template failed: {e}") from None


# ----------------------------------------------------------------------------------------------- FastChat


def fastchat_conversation(name: str) -> Any:
    try:
        from fastchat import conversation as fc
    except ImportError:
        raise missing_package("fschat", purpose=f"FastChat's {name!r} template; install it with "
                              "`pip install --no-deps fschat==0.2.36`") from None
    if name == "llama-3":
        return _llama3(fc)
    return fc.get_conv_template(name)


def fastchat_prompt(name: str, turns: Turns, system: str | None = None) -> str:
    """FastChat's `get_prompt` for these turns (a None assistant leaves the generation prompt)."""
    conv = fastchat_conversation(name)
    if system is not None:
        conv.set_system_message(system)
    for user, assistant in turns:
        conv.append_message(conv.roles[0], user)
        conv.append_message(conv.roles[1], assistant)
    return conv.get_prompt()


def fastchat_stop(name: str) -> tuple[str, ...]:
    """The strings that end an answer in this FastChat template."""
    stop = fastchat_conversation(name).stop_str
    return tuple(stop if isinstance(stop, list) else ([stop] if stop else []))


def _llama3(fc: Any) -> Any:
    class Llama3Conversation(fc.Conversation):
        def get_prompt(self) -> str:
            ret = self.system_template.format(system_message=self.system_message) if self.system_message else ""
            for role, message in self.messages:
                ret += f"<|start_header_id|>{role}<|end_header_id|>\n\n"
                if message:
                    ret += f"{message.strip()}<|eot_id|>"
            return ret

    return Llama3Conversation(
        name="llama-3",
        system_template="<|start_header_id|>system<|end_header_id|>\n\n{system_message}<|eot_id|>",
        roles=("user", "assistant"),
        messages=[],
        sep_style=fc.SeparatorStyle.ADD_COLON_SINGLE,  # unused: get_prompt is overridden
        sep="",
        stop_str="<|eot_id|>",
        stop_token_ids=[128001, 128009],
    )
