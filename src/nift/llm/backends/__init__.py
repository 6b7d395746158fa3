"""Teacher/judge backends behind one small interface, imported lazily (a missing optional package is named).

Three kinds, one per way of talking to a model; the engine drives each:

- `OnlineBackend` (openai, anthropic): `async acall(payload) -> Result` per request; the engine adds concurrency,
  rate limits, retries and timeouts. Raise `RetryableError` (429/5xx/timeout/dropped connection/garbled reply),
  `RequestFailed` (a 4xx for this request) or `BackendAbort` (every request would fail: key, model, permission).
- `LocalBackend` (hf, vllm): `generate(payloads) -> [Result]` for one batch; the engine buckets by length and
  stores each chunk as `generate_chunks` yields it (in order here; `ray_pool.RayPoolBackend` spreads the chunks over
  a Ray cluster and yields them as they finish).
- `BatchBackend` (openai-batch, anthropic-batch): `submit`, `poll`, `download`; the engine records every batch
  in the store before and after submission so a crash resumes from the provider's batch id.

Every backend turns a `Request` into a canonical `payload` dict (resolved system prompt, generation parameters):
the payload is what is sent and what the cache key is computed from.
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Iterator
from typing import Any, Literal

from nift.config import register_secret
from nift.errors import ConfigError, did_you_mean
from nift.llm.config import BackendConfig
from nift.llm.types import Request, RequestFailed, Result

REGISTRY: dict[str, str] = {
    "hf": "nift.llm.backends.hf:HFBackend",
    "vllm": "nift.llm.backends.vllm_backend:VLLMBackend",
    "openai": "nift.llm.backends.openai_backend:OpenAIBackend",
    "anthropic": "nift.llm.backends.anthropic_backend:AnthropicBackend",
    "openai-batch": "nift.llm.backends.openai_batch:OpenAIBatchBackend",
    "anthropic-batch": "nift.llm.backends.anthropic_batch:AnthropicBatchBackend",
}


def make_backend(cfg: BackendConfig, log=print) -> Backend:
    """Instantiate the backend named by `cfg.backend` (its module is imported only now)."""
    if cfg.backend not in REGISTRY:
        raise ConfigError(f"unknown backend {cfg.backend!r}.{did_you_mean(cfg.backend, REGISTRY)}")
    module, cls = REGISTRY[cfg.backend].split(":")
    return getattr(importlib.import_module(module), cls)(cfg, log=log)


def estimate_tokens(text: str) -> int:
    """Rough token count for models whose tokenizer is not at hand (about 4 characters per token in English)."""
    return math.ceil(len(text) / 4)


class Backend:
    """What every backend offers the engine."""

    kind: Literal["online", "local", "batch"] = "online"
    family: str = ""  # requests of one family share cache entries (openai and openai-batch give the same answer)
    default_system_prompt: str | None = None
    supports_completions = True
    exact_tokens = False  # count_tokens is exact (a local tokenizer) rather than an estimate

    def __init__(self, cfg: BackendConfig, log=print):
        self.cfg = cfg
        self.log = log

    # ----------------------------------------------------------------------------------------- payloads

    def system_prompt(self) -> str | None:
        sp = self.cfg.system_prompt if self.cfg.system_prompt is not None else self.default_system_prompt
        return sp or None

    def payload(self, req: Request) -> dict[str, Any]:
        """The canonical request: what is sent, and what the cache key hashes."""
        params: dict[str, Any] = {
            "max_tokens": req.max_tokens or self.cfg.max_tokens,
            "temperature": self.cfg.temperature,
            "stop": list(self.cfg.stop),
        }
        # Only when set: a payload without them keeps the cache keys of answers stored before they existed.
        if self.cfg.seed is not None:
            params["seed"] = self.cfg.seed
        if self.cfg.top_logprobs:
            params["top_logprobs"] = self.cfg.top_logprobs
        if req.prompt is not None:
            if not self.supports_completions:
                raise ConfigError(f"the {self.cfg.backend} backend has no raw-completion endpoint: send chat messages "
                                  "(teacher.endpoint: chat)")
            return {"kind": "completion", "prompt": req.prompt, **params, **self.extra_params()}
        messages = [dict(m) for m in req.messages or ()]
        sp = self.system_prompt()
        if sp and not any(m["role"] == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": sp})
        return {"kind": "chat", "messages": messages, **params, **self.extra_params()}

    def extra_params(self) -> dict[str, Any]:
        """Backend-specific settings that change the answer (e.g. hf's dtype); part of the cache key."""
        return {}

    # ------------------------------------------------------------------------------------------- tokens

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    def count_tokens_many(self, texts: list[str]) -> list[int]:
        return [self.count_tokens(t) for t in texts]

    def truncate_left(self, text: str, n_tokens: int) -> str:
        """Keep about the last `n_tokens` tokens of `text`, starting at a word boundary."""
        keep = text[-n_tokens * 4:] if n_tokens > 0 else ""
        cut = keep.find(" ")
        return keep[cut + 1:] if 0 <= cut < len(keep) - 1 and len(keep) < len(text) else keep

    def context_tokens(self) -> int | None:
        from nift.llm.prices import context_for

        return self.cfg.context_tokens or context_for(self.cfg.model)

    def model_id(self) -> str:
        return self.cfg.model

    def close(self) -> None:
        pass

    def api_key(self, default_env: str) -> str:
        env = self.cfg.api_key_env or default_env
        key = os.environ.get(env)
        if not key:
            raise ConfigError(f"the {self.cfg.backend} backend needs an API key in the environment variable {env} "
                              f"(it is not set): export {env}=... or name another variable with teacher.api_key_env")
        register_secret(key)  # never written anywhere: manifests, results and reports are scrubbed of it
        return key


class OnlineBackend(Backend):
    kind = "online"

    async def aopen(self) -> None:
        """Create per-event-loop resources (HTTP clients)."""

    async def acall(self, payload: dict[str, Any]) -> Result:
        raise NotImplementedError

    async def aclose(self) -> None:
        pass


class LocalBackend(Backend):
    kind = "local"
    exact_tokens = True

    def load(self) -> None:
        """Load the weights (the engine calls this before its progress bar starts, and only if work remains)."""

    def generate(self, payloads: list[dict[str, Any]]) -> list[Result]:
        raise NotImplementedError

    def generate_chunks(
        self, chunks: list[list[dict[str, Any]]],
    ) -> Iterator[tuple[int, list[Result] | Exception]]:
        """(chunk index, its results) as each chunk is done, in any order; the engine stores each one at once. An
        exception in place of the results fails that chunk's requests (a Ray pool that lost it too often)."""
        for i, chunk in enumerate(chunks):
            yield i, self.generate(chunk)

    def sort_key(self, payload: dict[str, Any]) -> int:
        """Length used to bucket prompts of similar length together (less padding)."""
        text = payload.get("prompt") or "".join(m["content"] for m in payload.get("messages", []))
        return len(text)


class BatchBackend(Backend):
    kind = "batch"
    max_requests = 50_000
    max_bytes = 200 * 1024 * 1024
    _sdk: Any = None  # the imported SDK module (openai or anthropic)
    _key_env = ""

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """An SDK call whose exception is translated into retry later / fail / abort."""
        from nift.llm.backends.http_errors import translate

        try:
            return fn(*args, **kwargs)
        except Exception as e:
            raise translate(self._sdk, e, self.cfg.backend, self._key_env, self.cfg.model) from e

    def line_bytes(self, key: str, payload: dict[str, Any]) -> int:
        """Size of one request in the provider's batch input (for splitting within its byte limit)."""
        raise NotImplementedError

    def submit(self, local_id: str, items: list[tuple[str, dict[str, Any]]]) -> str:
        """Submit one batch; returns the provider's batch id."""
        raise NotImplementedError

    def find_submitted(self, local_id: str, created_after: float, n: int) -> str | None:
        """After a crash during submission: the provider's id of the batch recorded as `local_id`, if it exists."""
        raise NotImplementedError

    def poll(self, batch_id: str) -> tuple[str, dict[str, Any]]:
        """('in_progress' | 'ended' | 'failed', info)."""
        raise NotImplementedError

    def download(self, batch_id: str) -> Iterator[tuple[str, Result | RequestFailed]]:
        """(request key, result or per-request failure) for every request of an ended batch."""
        raise NotImplementedError
