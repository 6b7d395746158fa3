"""`nift distill` and the request engine that every stage calling a model uses.

Public API (for the distill stage, eval's judging and answer generation, audit's judge):

- `BackendConfig` (pydantic, from `nift.llm.config`): backend (hf | vllm | openai | anthropic | openai-batch |
  anthropic-batch), model, base_url, api_key_env, system_prompt, endpoint (chat | completions), max_tokens,
  temperature, stop, concurrency, rpm, tpm, timeout_s, max_retries, batch_size, device, dtype, context_tokens,
  on_long_prompt, prices (overrides), poll_interval_s, batch_max_requests.
- `Request(id, prompt=... | messages=[...], max_tokens=None)`: a raw prompt is continued as text (Completions
  endpoint; hf/vllm continue it without a chat template); messages are a chat (multi-turn allowed; the backend's
  system prompt is added when none is given). `text_request(id, text, cfg)` builds the form `cfg.endpoint` asks for.
- `Result`: id, text, finish_reason ("stop" = ended by itself, "length" = hit max_tokens), prompt_tokens,
  completion_tokens, cost_usd (None if the model has no price), latency_s, model, model_version, cached,
  truncated_tokens.
- `run_requests(cfg, requests, store_path, *, budget_usd=None, progress=True, log=print) -> Results`: a dict
  `{id: Result}` with `.summary` (`RunSummary`: cached/new/skipped/failed/retries, `stopped == "budget"`,
  `.ledger()` for manifests). Goes through the SQLite store at `store_path`: a re-run never repeats a stored
  request. See `nift.distill.engine` for the guarantees.
- `estimate_requests(cfg, requests, store_path)`: dry-run numbers (tokens, maximum dollars), nothing sent.

Run as: nift distill --config quickstart
"""

from __future__ import annotations

from nift.distill.config import DistillConfig
from nift.distill.engine import Results, estimate_requests, run_requests
from nift.distill.types import BackendAbort, BudgetReached, Request, Result, RunSummary
from nift.llm.config import PAPER_SYSTEM_PROMPT, BackendConfig, Price


def text_request(id: str, text: str, cfg: BackendConfig, max_tokens: int | None = None) -> Request:
    """A request for a plain text in the form the config's endpoint asks for (chat: as the user message;
    completions: raw continuation)."""
    if cfg.endpoint == "completions":
        return Request(id=id, prompt=text, max_tokens=max_tokens)
    return Request(id=id, messages=[{"role": "user", "content": text}], max_tokens=max_tokens)


def run(cfg: DistillConfig, run_dir, force: bool = False, log=print):
    """The `nift distill` stage (see `nift.distill.stage`)."""
    from nift.distill.stage import run as _run

    return _run(cfg, run_dir, force=force, log=log)


__all__ = [
    "PAPER_SYSTEM_PROMPT", "BackendAbort", "BackendConfig", "BudgetReached", "DistillConfig", "Price", "Request",
    "Result", "Results", "RunSummary", "estimate_requests", "run", "run_requests", "text_request",
]
