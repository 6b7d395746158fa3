"""`openai`: any OpenAI-compatible server (OpenAI, vLLM, llama.cpp's server, Ollama, gateways) through the
official SDK: Chat Completions for chat requests, the plain Completions endpoint for raw continuations."""

from __future__ import annotations

import time
from typing import Any

from nift.errors import missing_package
from nift.llm.backends import OnlineBackend, estimate_tokens
from nift.llm.backends.http_errors import translate
from nift.llm.types import Result, RetryableError

_REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")


def import_openai() -> Any:
    try:
        import openai
    except ImportError:
        raise missing_package("openai", "api", "the openai backends") from None
    return openai


def chat_body(model: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The JSON body of a Chat Completions / Completions request for a payload (also used in batch files)."""
    body: dict[str, Any] = {"model": model}
    if payload["kind"] == "chat":
        body["messages"] = payload["messages"]
    else:
        body["prompt"] = payload["prompt"]
    # Reasoning models take max_completion_tokens and only the default temperature.
    if payload["kind"] == "chat" and model.startswith(_REASONING_PREFIXES):
        body["max_completion_tokens"] = payload["max_tokens"]
    else:
        body["max_tokens"] = payload["max_tokens"]
        body["temperature"] = payload["temperature"]
    if payload["stop"]:
        body["stop"] = payload["stop"]
    if payload.get("seed") is not None:
        body["seed"] = payload["seed"]
    if payload.get("top_logprobs"):
        if payload["kind"] == "chat":
            body["logprobs"] = True
            body["top_logprobs"] = payload["top_logprobs"]
        else:
            body["logprobs"] = payload["top_logprobs"]
    return body


def _top_logprobs(choice: dict[str, Any]) -> list[list[dict[str, Any]]] | None:
    lp = choice.get("logprobs")
    if not isinstance(lp, dict):
        return None
    if isinstance(lp.get("content"), list):  # Chat Completions
        return [[{"token": t.get("token"), "logprob": t.get("logprob")} for t in (pos.get("top_logprobs") or [])]
                for pos in lp["content"] if isinstance(pos, dict)]
    if isinstance(lp.get("top_logprobs"), list):  # legacy Completions: one {token: logprob} dict per position
        return [[{"token": k, "logprob": v} for k, v in (pos or {}).items()] for pos in lp["top_logprobs"]]
    return None


def parse_response(data: Any, payload: dict[str, Any], latency: float) -> Result:
    """A Result from a Chat Completions / Completions response object or its JSON dict."""
    if hasattr(data, "model_dump"):
        data = data.model_dump()
    if not isinstance(data, dict) or not data.get("choices"):
        raise RetryableError(f"malformed response (no choices): {str(data)[:200]!r}")
    choice = data["choices"][0]
    if payload["kind"] == "chat":
        msg = choice.get("message") or {}
        text = msg.get("content")
    else:
        text = choice.get("text")
    if text is None:
        text = ""
    usage = data.get("usage") or {}
    prompt_text = payload.get("prompt") or "".join(m["content"] for m in payload.get("messages", []))
    finish = choice.get("finish_reason") or "stop"
    return Result(
        id="", text=text, finish_reason=finish, stop_reason=_stop_reason(finish, choice, payload),
        prompt_tokens=int(usage.get("prompt_tokens") or estimate_tokens(prompt_text)),
        completion_tokens=int(usage.get("completion_tokens") or estimate_tokens(text)),
        latency_s=round(latency, 4), model=str(data.get("model") or ""),
        model_version=data.get("system_fingerprint") or data.get("model") or None,
        top_logprobs=_top_logprobs(choice) if payload.get("top_logprobs") else None,
    )


class OpenAIBackend(OnlineBackend):
    family = "openai"

    def __init__(self, cfg, log=print):
        super().__init__(cfg, log)
        self._sdk = import_openai()
        self._key_env = cfg.api_key_env or "OPENAI_API_KEY"
        self._key = self.api_key("OPENAI_API_KEY")  # fail before anything is sent, naming the variable
        self._client: Any = None

    async def aopen(self) -> None:
        # One client per event loop: the engine runs each call set in its own loop.
        self._client = self._sdk.AsyncOpenAI(api_key=self._key, base_url=self.cfg.base_url,
                                             timeout=self.cfg.timeout_s, max_retries=0)

    async def acall(self, payload: dict[str, Any]) -> Result:
        body = chat_body(self.cfg.model, payload)
        t0 = time.perf_counter()
        try:
            if payload["kind"] == "chat":
                resp = await self._client.chat.completions.create(**body)
            else:
                resp = await self._client.completions.create(**body)
        except Exception as e:
            raise translate(self._sdk, e, "openai", self._key_env, self.cfg.model) from e
        return parse_response(resp, payload, time.perf_counter() - t0)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def _stop_reason(finish: str, choice: dict[str, Any], payload: dict[str, Any]) -> str | None:
    """Which kind of stop: without stop strings in the request only the model's end token can have stopped it;
    with some, only servers that say so (vLLM's `stop_reason`: the matched string, or null for EOS) tell."""
    if finish != "stop":
        return None
    if not payload.get("stop"):
        return "eos"
    if "stop_reason" in choice:
        return "stop_string" if isinstance(choice["stop_reason"], str) else "eos"
    return None
