"""`openai-batch`: OpenAI's Batch API (half price, results within 24 hours) through the official SDK.

Each batch is a JSONL file of Chat Completions (or Completions) requests whose `custom_id` is the request's cache
key, uploaded with purpose "batch" and submitted with metadata `nift_local_id`, the id the engine recorded in its
store before submitting — so a crash between the upload and the store update finds the batch again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from nift.errors import NiftError
from nift.llm.backends import BatchBackend
from nift.llm.backends.openai_backend import chat_body, import_openai, parse_response
from nift.llm.types import RequestFailed, Result, RetryableError

_RUNNING = {"validating", "in_progress", "finalizing", "cancelling"}


class OpenAIBatchBackend(BatchBackend):
    family = "openai"
    max_requests = 50_000
    max_bytes = 190 * 1024 * 1024  # the limit is 200 MB; keep a margin for the multipart envelope

    def __init__(self, cfg, log=print):
        super().__init__(cfg, log)
        self._sdk = import_openai()
        self._key_env = cfg.api_key_env or "OPENAI_API_KEY"
        self._client = self._sdk.OpenAI(api_key=self.api_key("OPENAI_API_KEY"), base_url=cfg.base_url,
                                        timeout=cfg.timeout_s, max_retries=3)

    @staticmethod
    def _url(payload: dict[str, Any]) -> str:
        return "/v1/chat/completions" if payload["kind"] == "chat" else "/v1/completions"

    def _line(self, key: str, payload: dict[str, Any]) -> str:
        return json.dumps({"custom_id": key, "method": "POST", "url": self._url(payload),
                           "body": chat_body(self.cfg.model, payload)}, ensure_ascii=False)

    def line_bytes(self, key: str, payload: dict[str, Any]) -> int:
        return len(self._line(key, payload).encode()) + 1

    def submit(self, local_id: str, items: list[tuple[str, dict[str, Any]]]) -> str:
        data = "".join(self._line(k, p) + "\n" for k, p in items).encode()
        try:
            f = self._call(self._client.files.create, file=(f"nift-{local_id}.jsonl", data), purpose="batch")
            # Not retried by the SDK: a retried create could submit (and bill) the batch twice.
            batch = self._call(self._client.with_options(max_retries=0).batches.create, input_file_id=f.id,
                               endpoint=self._url(items[0][1]), completion_window="24h",
                               metadata={"nift_local_id": local_id})
        except (RetryableError, RequestFailed) as e:
            raise NiftError(f"openai-batch: submitting a batch failed ({e}); run the same command again "
                            "(a batch that did reach the provider is found and not submitted twice)") from None
        return batch.id

    def find_submitted(self, local_id: str, created_after: float, n: int) -> str | None:
        for b in self._call(self._client.batches.list, limit=100):
            if (getattr(b, "metadata", None) or {}).get("nift_local_id") == local_id:
                return b.id
            if b.created_at and b.created_at < created_after - 3600:
                break  # listed newest first: older batches cannot be ours
        return None

    def poll(self, batch_id: str) -> tuple[str, dict[str, Any]]:
        b = self._call(self._client.batches.retrieve, batch_id)
        counts = b.request_counts.model_dump() if getattr(b, "request_counts", None) else {}
        info = {"status": b.status, "counts": counts}
        if b.status in _RUNNING:
            return "in_progress", info
        return ("ended" if b.status == "completed" else "failed"), info

    def download(self, batch_id: str) -> Iterator[tuple[str, Result | RequestFailed]]:
        b = self._call(self._client.batches.retrieve, batch_id)
        for file_id in (b.output_file_id, b.error_file_id):
            if not file_id:
                continue
            text = self._call(self._client.files.content, file_id).text
            for line in text.splitlines():
                if not line.strip():
                    continue
                row = json.loads(line)
                key = row.get("custom_id", "")
                resp = row.get("response") or {}
                if resp.get("status_code") == 200 and isinstance(resp.get("body"), dict):
                    body = resp["body"]
                    kind = "chat" if body.get("object", "").startswith("chat") else "completion"
                    try:
                        yield key, parse_response(body, {"kind": kind, "messages": [], "prompt": ""}, 0.0)
                    except RetryableError as e:
                        yield key, RequestFailed(str(e))
                else:
                    err = row.get("error") or (resp.get("body") or {}).get("error") or resp
                    yield key, RequestFailed(f"batch {batch_id}: {json.dumps(err)[:300]}", resp.get("status_code"))

    def close(self) -> None:
        self._client.close()

