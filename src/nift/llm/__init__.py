"""The request engine every stage that calls a model uses: distill (the teacher), audit (the judge) and eval (answer
generation and the judges).

What it holds: `engine` (the public `run_requests` / `estimate_requests`), `items` (requests checked, truncated
and keyed; worst-case cost), `run_state` (the ledger, progress and bookkeeping of one call), `drivers` (the three
ways of running: online async requests, a local in-process batch, provider batch jobs), `store` (the durable SQLite
store), `config` (`BackendConfig`, `Price`, `RayConfig`, the paper's system prompt), `types` (`Request`, `Result`,
`Usage`, `RunSummary`, the errors), `prices`, `ratelimit` and `backends/` (hf, vllm, openai, anthropic, their batch
APIs, a Ray pool).

Public API:

- `BackendConfig` (pydantic, in `nift.llm.config`): backend (hf | vllm | openai | anthropic | openai-batch |
  anthropic-batch), model, base_url, api_key_env, system_prompt, endpoint (chat | completions), max_tokens,
  temperature, stop, concurrency, rpm, tpm, timeout_s, max_retries, batch_size, device, dtype, context_tokens,
  on_long_prompt, prices (overrides), poll_interval_s, batch_max_requests.
- `Request(id, prompt=... | messages=[...], max_tokens=None)`: a raw prompt is continued as text (Completions
  endpoint; hf/vllm continue it without a chat template); messages are a chat (multi-turn allowed; the backend's
  system prompt is added when none is given). `text_request(id, text, cfg)` builds the form `cfg.endpoint` asks for.
- `Result`: id, text, finish_reason ("stop" = ended by itself, "length" = hit max_tokens), prompt_tokens,
  completion_tokens, cost_usd (None if the model has no price), latency_s, model, model_version, cached,
  truncated_tokens.
- `Usage`: requests, tokens and dollars summed with `add` (a `Result`, or another `Usage`).
- `run_requests(cfg, requests, store_path, *, budget_usd=None, progress=True, log=print) -> Results`: a dict
  `{id: Result}` with `.summary` (`RunSummary`: cached/new/skipped/failed/retries, `stopped == "budget"`,
  `.ledger()` for manifests). Goes through the SQLite store at `store_path`: a re-run never repeats a stored
  request. See `nift.llm.engine` for the guarantees.
- `estimate_requests(cfg, requests, store_path)`: dry-run numbers (tokens, maximum dollars), nothing sent.

The names are loaded on first use, so that importing `nift.llm` (or one of its modules) loads no backend and no
engine it does not need.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BackendAbort": "nift.llm.types", "BudgetReached": "nift.llm.types", "Request": "nift.llm.types",
    "Result": "nift.llm.types", "RunSummary": "nift.llm.types", "Usage": "nift.llm.types",
    "text_request": "nift.llm.types",
    "Results": "nift.llm.engine", "estimate_requests": "nift.llm.engine", "run_requests": "nift.llm.engine",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'nift.llm' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
