"""`anthropic-batch`: Anthropic's Message Batches API (half price, results within 24 hours) through the official SDK.

Each request's `custom_id` is its cache key (64 hex characters, within the API's pattern). Message batches carry
no metadata, so a batch whose submission was interrupted before its id reached the store is recognised on resume
by its creation time (after the recorded intent) and its request count."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from nift.errors import NiftError
from nift.llm.backends import BatchBackend
from nift.llm.backends.anthropic_backend import import_anthropic, messages_params, parse_message
from nift.llm.config import PAPER_SYSTEM_PROMPT
from nift.llm.types import RequestFailed, Result, RetryableError


def _ts(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return float(value or 0)


class AnthropicBatchBackend(BatchBackend):
    family = "anthropic"
    default_system_prompt = PAPER_SYSTEM_PROMPT
    supports_completions = False
    max_requests = 100_000
    max_bytes = 250 * 1024 * 1024  # the limit is 256 MB

    def __init__(self, cfg, log=print):
        super().__init__(cfg, log)
        self._sdk = import_anthropic()
        self._key_env = cfg.api_key_env or "ANTHROPIC_API_KEY"
        self._client = self._sdk.Anthropic(api_key=self.api_key("ANTHROPIC_API_KEY"), base_url=cfg.base_url,
                                           timeout=cfg.timeout_s, max_retries=3)

    def _request(self, key: str, payload: dict[str, Any]) -> dict[str, Any]:
        return {"custom_id": key, "params": messages_params(self.cfg.model, payload)}

    def line_bytes(self, key: str, payload: dict[str, Any]) -> int:
        return len(json.dumps(self._request(key, payload), ensure_ascii=False).encode()) + 2

    def submit(self, local_id: str, items: list[tuple[str, dict[str, Any]]]) -> str:
        try:
            # Not retried by the SDK: a retried create could submit (and bill) the batch twice.
            batch = self._call(self._client.with_options(max_retries=0).messages.batches.create,
                               requests=[self._request(k, p) for k, p in items])
        except (RetryableError, RequestFailed) as e:
            raise NiftError(f"anthropic-batch: submitting a batch failed ({e}); run the same command again "
                            "(a batch that did reach the provider is found and not submitted twice)") from None
        return batch.id

    def find_submitted(self, local_id: str, created_after: float, n: int) -> str | None:
        candidates = []
        for b in self._call(self._client.messages.batches.list, limit=100):
            created = _ts(b.created_at)
            if created < created_after - 3600:
                break  # listed newest first: older batches cannot be ours
            if created < created_after - 5:
                continue
            c = b.request_counts
            total = c.processing + c.succeeded + c.errored + c.canceled + c.expired
            if total == n:
                candidates.append((created, b.id))
        return min(candidates)[1] if candidates else None

    def poll(self, batch_id: str) -> tuple[str, dict[str, Any]]:
        b = self._call(self._client.messages.batches.retrieve, batch_id)
        info = {"status": b.processing_status, "counts": b.request_counts.model_dump()}
        return ("ended" if b.processing_status == "ended" else "in_progress"), info

    def download(self, batch_id: str) -> Iterator[tuple[str, Result | RequestFailed]]:
        for entry in self._call(self._client.messages.batches.results, batch_id):
            res = entry.result
            if res.type == "succeeded":
                try:
                    yield entry.custom_id, parse_message(res.message, 0.0)
                except RetryableError as e:
                    yield entry.custom_id, RequestFailed(str(e))
            else:
                detail = res.error.model_dump() if getattr(res, "error", None) is not None else {}
                yield entry.custom_id, RequestFailed(f"batch {batch_id}: {res.type} {json.dumps(detail)[:300]}")

    def close(self) -> None:
        self._client.close()
