"""Prices (USD per million tokens) and context windows of the paper's teachers and today's common API models.

Provider list prices as published for each model id; the Batch APIs of both providers charge half. A config may
override or add entries (`prices: {model: {input:, output:, batch_discount:}}`). A dated model id without its own
entry takes the price of its undated family name (`gpt-4o-mini-2024-07-18` -> `gpt-4o-mini`); a model still
unknown has no price: its cost is reported as unknown, and a run with a budget refuses to start.
"""

from __future__ import annotations

from nift.llm.config import BackendConfig, Price

# model id -> (input, output) USD per 1M tokens; batch APIs charge 50%.
_LIST_PRICES: dict[str, tuple[float, float]] = {
    # OpenAI — the paper's teachers first (§3, Table 2), then current models.
    "gpt-3.5-turbo-0125": (0.50, 1.50),
    "gpt-3.5-turbo": (0.50, 1.50),
    "gpt-4-0125-preview": (10.00, 30.00),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-4-turbo-2024-04-09": (10.00, 30.00),
    "gpt-4-0314": (30.00, 60.00),
    "gpt-4-0613": (30.00, 60.00),
    "gpt-4": (30.00, 60.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-2024-05-13": (5.00, 15.00),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    "davinci-002": (2.00, 2.00),
    "babbage-002": (0.40, 0.40),
    "gpt-3.5-turbo-instruct": (1.50, 2.00),
    # Anthropic — the paper's Claude-3 teachers, then current models.
    "claude-3-haiku-20240307": (0.25, 1.25),
    "claude-3-sonnet-20240229": (3.00, 15.00),
    "claude-3-opus-20240229": (15.00, 75.00),
    "claude-3-5-haiku-20241022": (0.80, 4.00),
    "claude-3-5-sonnet-20241022": (3.00, 15.00),
    "claude-3-5-sonnet-20240620": (3.00, 15.00),
    "claude-3-7-sonnet-20250219": (3.00, 15.00),
    "claude-sonnet-4-20250514": (3.00, 15.00),
    "claude-opus-4-20250514": (15.00, 75.00),
    "claude-opus-4-1-20250805": (15.00, 75.00),
    "claude-sonnet-4-5": (3.00, 15.00),
    "claude-haiku-4-5": (1.00, 5.00),
}

PRICES: dict[str, Price] = {m: Price(input=i, output=o, batch_discount=0.5) for m, (i, o) in _LIST_PRICES.items()}

# Context windows in tokens (prompt + completion), for the long-prompt check of API teachers.
CONTEXT: dict[str, int] = {
    "gpt-3.5-turbo": 16_385, "gpt-3.5-turbo-0125": 16_385, "gpt-3.5-turbo-instruct": 4_096,
    "gpt-4": 8_192, "gpt-4-0314": 8_192, "gpt-4-0613": 8_192,
    "gpt-4-0125-preview": 128_000, "gpt-4-turbo": 128_000, "gpt-4o": 128_000, "gpt-4o-mini": 128_000,
    "gpt-4.1": 1_047_576, "gpt-4.1-mini": 1_047_576, "gpt-4.1-nano": 1_047_576,
    "claude-3": 200_000, "claude-sonnet": 200_000, "claude-opus": 200_000, "claude-haiku": 200_000,
}


def _family_lookup(table: dict, model: str):
    """Exact id, else the longest table entry that the id starts with (dated snapshots -> family)."""
    if model in table:
        return table[model]
    best = max((k for k in table if model.startswith(k)), key=len, default=None)
    return table[best] if best else None


def price_for(cfg: BackendConfig) -> Price | None:
    """The price of the backend's model (config overrides first); None for an unknown model.

    In-process backends (hf, vllm) cost nothing per token: the machine is already paid for."""
    if cfg.model in cfg.prices:
        return cfg.prices[cfg.model]
    if cfg.backend in ("hf", "vllm"):
        return Price(input=0.0, output=0.0, batch_discount=1.0)
    return _family_lookup(cfg.prices, cfg.model) or _family_lookup(PRICES, cfg.model)


def context_for(model: str) -> int | None:
    return _family_lookup(CONTEXT, model)


def cost(price: Price | None, prompt_tokens: int, completion_tokens: int, batch: bool = False) -> float | None:
    if price is None:
        return None
    usd = (prompt_tokens * price.input + completion_tokens * price.output) / 1e6
    return usd * price.batch_discount if batch else usd
