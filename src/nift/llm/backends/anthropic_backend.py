"""`anthropic`: the Messages API through the official SDK. The paper's system prompt for its Claude-3 teachers
("Please continue directly from the end of the given sentence without repeating it.") is this backend's default."""

from __future__ import annotations

import inspect
import time
from typing import Any

from nift.errors import missing_package
from nift.llm.backends import OnlineBackend
from nift.llm.backends.http_errors import translate
from nift.llm.config import PAPER_SYSTEM_PROMPT
from nift.llm.types import Result, RetryableError

_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}


def import_anthropic() -> Any:
    try:
        import anthropic
    except ImportError:
        raise missing_package("anthropic", "api", "the anthropic backends") from None
    return anthropic


def messages_params(model: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Messages API parameters for a chat payload: system messages become the `system` parameter."""
    system = "\n\n".join(m["content"] for m in payload["messages"] if m["role"] == "system")
    params: dict[str, Any] = {
        "model": model, "max_tokens": payload["max_tokens"], "temperature": payload["temperature"],
        "messages": [{"role": m["role"], "content": m["content"]} for m in payload["messages"]
                     if m["role"] != "system"],
    }
    if system:
        params["system"] = system
    if payload["stop"]:
        params["stop_sequences"] = payload["stop"]
    return params


def parse_message(msg: Any, latency: float) -> Result:
    """A Result from a Messages API response (SDK object or JSON dict)."""
    if hasattr(msg, "model_dump"):
        msg = msg.model_dump()
    if not isinstance(msg, dict) or not isinstance(msg.get("content"), list):
        raise RetryableError(f"malformed response (no content): {str(msg)[:200]!r}")
    text = "".join(b.get("text", "") for b in msg["content"] if b.get("type") == "text")
    usage = msg.get("usage") or {}
    reason = msg.get("stop_reason") or "stop"
    return Result(id="", text=text, finish_reason=_FINISH.get(reason, reason),
                  stop_reason={"end_turn": "eos", "stop_sequence": "stop_string"}.get(reason),
                  prompt_tokens=int(usage.get("input_tokens") or 0),
                  completion_tokens=int(usage.get("output_tokens") or 0), latency_s=round(latency, 4),
                  model=str(msg.get("model") or ""), model_version=msg.get("model") or None)


class AnthropicBackend(OnlineBackend):
    family = "anthropic"
    default_system_prompt = PAPER_SYSTEM_PROMPT
    supports_completions = False

    def __init__(self, cfg, log=print):
        super().__init__(cfg, log)
        self._sdk = import_anthropic()
        self._key_env = cfg.api_key_env or "ANTHROPIC_API_KEY"
        self._key = self.api_key("ANTHROPIC_API_KEY")
        self._client: Any = None
        self._sdk_takes_temperature = "temperature" in inspect.signature(
            self._sdk.resources.messages.AsyncMessages.create).parameters

    async def aopen(self) -> None:
        self._client = self._sdk.AsyncAnthropic(api_key=self._key, base_url=self.cfg.base_url,
                                                timeout=self.cfg.timeout_s, max_retries=0)

    async def acall(self, payload: dict[str, Any]) -> Result:
        params = messages_params(self.cfg.model, payload)
        if not self._sdk_takes_temperature:
            # SDK releases that dropped the keyword still reach an API that takes it (the paper's temperature 0).
            params["extra_body"] = {"temperature": params.pop("temperature")}
        t0 = time.perf_counter()
        try:
            msg = await self._client.messages.create(**params)
        except Exception as e:  # translated into retry / fail / abort
            raise translate(self._sdk, e, "anthropic", self._key_env, self.cfg.model) from e
        return parse_message(msg, time.perf_counter() - t0)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
