"""The training template as a Jinja chat template, for models that have none: LLaMA-Factory's export writes its
template into the tokenizer the same way (`Template.fix_jinja_template`), so that any transformers or vLLM user
gets the format the model was trained on from `apply_chat_template`.

Written for `vanilla` and custom (`{prompt}`) templates only: a `chat` model has its own template already. The
template renders what `TemplateEncoder.generation` sends, preceded by the tokenizer's own prefix (BOS) as text, the
way chat templates carry their BOS: the user text (inside the custom template), each earlier answer followed by EOS;
a system message is left out, as in training. Its first line is a Jinja comment naming nift's training template,
which eval reads to tell it from a model's own chat template (`written_by_nift`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nift.artifacts import atomic_open
from nift.prompts.formats import PLACEHOLDER, kind

MARK = "{#- nift training template: "
TOKENIZER_CONFIG = "tokenizer_config.json"


def _literal(text: str) -> str:
    """A Jinja string literal (Jinja reads backslash escapes as Python does)."""
    return json.dumps(text, ensure_ascii=False)


def chat_template(template: str, prefix: str, eos: str) -> str | None:
    """The Jinja chat template of a `vanilla` or custom training template (None for the others); `prefix` is the text
    of the tokenizer's prefix tokens (BOS), `eos` the EOS token trained after every answer."""
    if kind(template) != "plain":
        return None
    before, after = ("", "") if template == "vanilla" else template.split(PLACEHOLDER)
    user = " + ".join([*([_literal(before)] if before else []), "message['content']",
                       *([_literal(after)] if after else [])])
    name = "vanilla" if template == "vanilla" else _literal(template)
    return (
        MARK + name.replace("#}", "# }") + " -#}\n"
        + ("{{- " + _literal(prefix) + " -}}" if prefix else "")
        + "{%- for message in messages -%}"
        + "{%- if message['role'] == 'user' -%}{{- " + user + " -}}"
        + "{%- elif message['role'] == 'assistant' -%}{{- message['content'] + " + _literal(eos) + " -}}"
        + "{%- endif -%}{%- endfor -%}"
    )


def written_by_nift(text: Any) -> bool:
    """Whether a chat template is one nift wrote from a training template (not the model's own)."""
    return isinstance(text, str) and text.startswith(MARK)


def has_chat_template(folder: Path, count_nift: bool = True) -> bool:
    """Whether a model folder carries a chat template (a file of its own or tokenizer_config.json's); with
    `count_nift` False, one nift wrote from the training template does not count."""
    if (folder / "chat_template.json").is_file():
        return True
    jinja, cfg = folder / "chat_template.jinja", folder / TOKENIZER_CONFIG
    if jinja.is_file():  # where transformers >= 4.50 saves a tokenizer's template
        chat: Any = jinja.read_text(encoding="utf-8")
    else:
        chat = json.loads(cfg.read_text(encoding="utf-8")).get("chat_template") if cfg.is_file() else None
    return bool(chat) and (count_nift or not written_by_nift(chat))


def write_chat_template(folder: Path, info: dict[str, Any], tok: Any) -> str | None:
    """Write the training template (`template_info` of nift_train.json) into `folder`'s tokenizer_config.json where
    the folder has no chat template; returns the template written, or None. `tok` (the tokenizer, or a function that
    loads it) turns the prefix ids into text."""
    cfg_path = folder / TOKENIZER_CONFIG
    name = info.get("text") if info.get("name") == "custom" else info.get("name")
    if not name or kind(name) != "plain" or not cfg_path.is_file() or has_chat_template(folder):
        return None
    tok = tok() if callable(tok) and not hasattr(tok, "convert_ids_to_tokens") else tok
    prefix = "".join(tok.convert_ids_to_tokens(list(info.get("prefix_ids") or [])))
    text = chat_template(name, prefix, info["eos_token"])
    config = json.loads(cfg_path.read_text(encoding="utf-8"))
    config["chat_template"] = text
    with atomic_open(cfg_path) as f:  # not write_json: a tokenizer's strings are not to be scrubbed
        json.dump(config, f, indent=2, ensure_ascii=False)
        f.write("\n")
    return text
