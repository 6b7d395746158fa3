"""Requests made ready to send: checked, truncated to the context, keyed for the store (`prepare`), one `Item` per
distinct request, with its worst-case cost for the budget (`worst_cost`) and the price-table check."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from nift.errors import ConfigError, InputError
from nift.llm.backends import Backend
from nift.llm.config import BackendConfig, Price
from nift.llm.prices import cost
from nift.llm.store import request_key
from nift.llm.types import Failure, Request, RunSummary, Skip

CHAT_OVERHEAD_TOKENS = 8  # role markers of a chat template, per message, in the context check
PROMPT_ESTIMATE_MARGIN = 1.25  # budget reservations over-estimate prompts whose tokenizer is not at hand


@dataclass
class Item:
    """One distinct request to send (several ids may share it)."""

    key: str
    payload: dict[str, Any]
    ids: list[str]
    prompt_tokens: int  # exact or estimated
    truncated_tokens: int = 0
    attempts: int = 0

    @property
    def max_tokens(self) -> int:
        return self.payload["max_tokens"]


def _with_text(req: Request, text: str) -> Request:
    """The request with its (last message's) text replaced: for left truncation."""
    if req.prompt is not None:
        return replace(req, prompt=text)
    msgs = [dict(m) for m in req.messages or ()]
    msgs[-1]["content"] = text
    return replace(req, messages=tuple(msgs))


def _main_text(req: Request) -> str:
    return req.prompt if req.prompt is not None else (req.messages or ({"content": ""},))[-1]["content"]


def _not_unicode(req: Request) -> str | None:
    """Why the request's text cannot be sent as UTF-8 (a lone surrogate such as \\ud800, common in scraped text
    that went through JSON), or None."""
    texts = [req.prompt] if req.prompt is not None else [m.get("content") for m in req.messages or ()]
    for text in texts:
        if not isinstance(text, str):
            continue
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            return (f"the prompt is not valid Unicode: a lone surrogate {text[e.start]!r} at character {e.start}; "
                    "it cannot be sent (fix the input; nothing was sent or retried)")
    return None


def prepare(
    backend: Backend, cfg: BackendConfig, reqs: list[Request], summary: RunSummary,
) -> tuple[dict[str, str], dict[str, Item]]:
    """Check, truncate and key every request. Returns ({id: key}, {key: item})."""
    seen: set[str] = set()
    for r in reqs:
        if r.id in seen:
            raise InputError(f"request id {r.id!r} appears twice: ids must be unique")
        seen.add(r.id)
    live = []
    for r in reqs:
        if not r.text().strip():
            summary.skipped.append(Skip(r.id, "empty", "the prompt is empty or blank"))
        elif (bad := _not_unicode(r)) is not None:  # a local fault: no server sees it, no retry can fix it
            summary.failed.append(Failure(r.id, bad, None, 0))
        else:
            live.append(r)
    ctx = backend.context_tokens()
    counts = backend.count_tokens_many([r.text() for r in live])
    id_key: dict[str, str] = {}
    items: dict[str, Item] = {}
    for r, n in zip(live, counts, strict=True):
        max_tokens = r.max_tokens or cfg.max_tokens
        overhead = CHAT_OVERHEAD_TOKENS * (len(r.messages) + 1) if r.messages is not None else 1
        truncated = 0
        if ctx and n + overhead + max_tokens > ctx:
            room = ctx - max_tokens - overhead - (n - backend.count_tokens(_main_text(r)))
            if cfg.on_long_prompt == "error":
                raise InputError(f"request {r.id!r}: the prompt has {n} tokens, more than the teacher's context of "
                                 f"{ctx} leaves after max_tokens={max_tokens}; set on_long_prompt to truncate or skip")
            if cfg.on_long_prompt == "skip" or room <= 0:
                summary.skipped.append(Skip(r.id, "too_long", f"{n} prompt tokens, context {ctx}, "
                                                              f"max_tokens {max_tokens}"))
                continue
            main = _main_text(r)
            new_main = backend.truncate_left(main, room)
            truncated = backend.count_tokens(main) - backend.count_tokens(new_main)
            r = _with_text(r, new_main)
            n = backend.count_tokens(r.text())
            summary.truncated += 1
            summary.truncated_tokens += truncated
        payload = backend.payload(r)
        # Sampling (temperature > 0) gives each id its own draw; the draw is still stored, so a resume keeps it.
        key = request_key(backend.family, cfg.model,
                          payload if cfg.temperature == 0 else {**payload, "sample_for_id": r.id})
        id_key[r.id] = key
        if key in items:
            items[key].ids.append(r.id)
        else:
            items[key] = Item(key, payload, [r.id], n + overhead, truncated)
    return id_key, items


def worst_cost(price: Price | None, item: Item, exact: bool, batch: bool) -> float:
    prompt = item.prompt_tokens if exact else math.ceil(item.prompt_tokens * PROMPT_ESTIMATE_MARGIN)
    return cost(price, prompt, item.max_tokens, batch=batch) or 0.0


def check_price(cfg: BackendConfig, price: Price | None, budget: float | None, log: Callable) -> None:
    if price is not None:
        return
    if budget is not None:
        raise ConfigError(f"model {cfg.model!r} is not in the price table, so a budget cannot be enforced: add its "
                          f'price (teacher.prices: {{"{cfg.model}": {{"input": USD_PER_M, "output": USD_PER_M}}}}) '
                          "or drop the budget")
    log(f"warning: model {cfg.model!r} is not in the price table; its cost is reported as unknown "
        "(set prices in the config to count it)")

