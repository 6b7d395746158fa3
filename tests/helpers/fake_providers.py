"""A local HTTP fake of the paid provider APIs that cannot run here, driven in tests by the official SDKs through
their base-URL setting: Anthropic's Messages API and Message Batches API, and OpenAI's Files + Batch API.

The fake answers deterministically (the last words of the prompt, reversed) with the providers' JSON shapes,
checks the API key header, honours max_tokens (stop_reason "max_tokens" / finish_reason "length"), and records
every call so tests can count what reached the "provider". Batches stay `in_progress` for `polls_to_end` status
polls (or until `release()` when `hold` is set), then end with results downloadable by the SDK.

    with FakeProviders() as fake:
        cfg = BackendConfig(backend="anthropic-batch", model="claude-3-haiku-20240307", base_url=fake.anthropic_url,
                            api_key_env=fake.key_env, poll_interval_s=0.05)
"""

from __future__ import annotations

import email.parser
import json
import os
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

KEY_ENV = "NIFT_TEST_PROVIDER_KEY"
KEY = "sk-fake-provider-key"


def answer(texts: list[str], max_tokens: int) -> tuple[str, int, int, bool]:
    """(text, input tokens, output tokens, cut at max_tokens) — one 'token' per word."""
    words = " ".join(texts).split()
    out = list(reversed(words[-6:]))
    cut = len(out) > max_tokens
    out = out[:max_tokens]
    return " ".join(out), len(words), len(out), cut


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


class FakeProviders:
    def __init__(self, polls_to_end: int = 2, hold: bool = False):
        self.polls_to_end = polls_to_end
        self.hold = hold
        self.lock = threading.Lock()
        self.messages: list[dict] = []  # bodies of POST /v1/messages
        self.chats: list[dict] = []  # bodies of POST /v1/chat/completions and /v1/completions
        self.anthropic_batches: dict[str, dict] = {}
        self.openai_batches: dict[str, dict] = {}
        self.files: dict[str, bytes] = {}
        self.batch_creates = 0
        self.error_ids: set[str] = set()  # custom_ids answered with an error inside a batch
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # ------------------------------------------------------------------------------------------ lifecycle

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def anthropic_url(self) -> str:
        return self.root  # the anthropic SDK appends /v1/...

    @property
    def openai_url(self) -> str:
        return self.root + "/v1"

    key_env = KEY_ENV

    def __enter__(self) -> FakeProviders:
        os.environ[KEY_ENV] = KEY
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def release(self) -> None:
        self.hold = False

    # ------------------------------------------------------------------------------------------- answers

    def _message(self, params: dict) -> dict:
        texts = ([params["system"]] if params.get("system") else []) + [m["content"] for m in params["messages"]]
        text, n_in, n_out, cut = answer(texts, params["max_tokens"])
        return {"id": "msg_" + uuid.uuid4().hex[:20], "type": "message", "role": "assistant",
                "model": params["model"], "content": [{"type": "text", "text": text}],
                "stop_reason": "max_tokens" if cut else "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": n_in, "output_tokens": n_out}}

    def _chat(self, body: dict, url: str) -> dict:
        if url.endswith("/chat/completions"):
            texts = [m["content"] for m in body["messages"]]
        else:
            texts = [body["prompt"]]
        text, n_in, n_out, cut = answer(texts, body.get("max_tokens") or body.get("max_completion_tokens") or 16)
        finish = "length" if cut else "stop"
        usage = {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}
        if url.endswith("/chat/completions"):
            return {"id": "chatcmpl-" + uuid.uuid4().hex[:12], "object": "chat.completion", "created": int(time.time()),
                    "model": body["model"], "system_fingerprint": "fp_fake",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": finish}], "usage": usage}
        return {"id": "cmpl-" + uuid.uuid4().hex[:12], "object": "text_completion", "created": int(time.time()),
                "model": body["model"], "choices": [{"index": 0, "text": text, "finish_reason": finish}],
                "usage": usage}

    # ---------------------------------------------------------------------------------- anthropic batches

    def _anth_batch_view(self, b: dict) -> dict:
        ended = b["status"] == "ended"
        n = len(b["requests"])
        errored = sum(1 for r in b["requests"] if r["custom_id"] in self.error_ids) if ended else 0
        return {"id": b["id"], "type": "message_batch", "processing_status": b["status"],
                "request_counts": {"processing": 0 if ended else n, "succeeded": n - errored if ended else 0,
                                   "errored": errored, "canceled": 0, "expired": 0},
                "created_at": _iso(b["created"]), "expires_at": _iso(b["created"] + 86400),
                "ended_at": _iso(time.time()) if ended else None, "archived_at": None, "cancel_initiated_at": None,
                "results_url": f"{self.root}/v1/messages/batches/{b['id']}/results" if ended else None}

    def _advance(self, b: dict, ended_value: str) -> None:
        b["polls"] += 1
        if not self.hold and b["polls"] >= self.polls_to_end:
            b["status"] = ended_value

    def _anth_results(self, b: dict) -> bytes:
        lines = []
        for r in b["requests"]:
            if r["custom_id"] in self.error_ids:
                res = {"type": "errored", "error": {"type": "error", "error": {"type": "invalid_request_error",
                                                                              "message": "fake error"}}}
            else:
                res = {"type": "succeeded", "message": self._message(r["params"])}
            lines.append(json.dumps({"custom_id": r["custom_id"], "result": res}))
        return ("\n".join(lines) + "\n").encode()

    # ------------------------------------------------------------------------------------- openai batches

    def _oai_batch_view(self, b: dict) -> dict:
        n = len(b["lines"])
        done = b["status"] == "completed"
        failed = sum(1 for x in b["lines"] if x["custom_id"] in self.error_ids) if done else 0
        return {"id": b["id"], "object": "batch", "endpoint": b["endpoint"], "input_file_id": b["input_file_id"],
                "completion_window": "24h", "status": b["status"], "created_at": int(b["created"]),
                "output_file_id": b.get("output_file_id"), "error_file_id": b.get("error_file_id"),
                "metadata": b["metadata"],
                "request_counts": {"total": n, "completed": n - failed if done else 0, "failed": failed}}

    def _oai_finish(self, b: dict) -> None:
        out, err = [], []
        for x in b["lines"]:
            if x["custom_id"] in self.error_ids:
                err.append(json.dumps({"id": "batch_req_" + uuid.uuid4().hex[:8], "custom_id": x["custom_id"],
                                       "response": None, "error": {"code": "invalid_request", "message": "fake"}}))
            else:
                out.append(json.dumps({"id": "batch_req_" + uuid.uuid4().hex[:8], "custom_id": x["custom_id"],
                                       "response": {"status_code": 200, "request_id": "req",
                                                    "body": self._chat(x["body"], x["url"])}, "error": None}))
        b["output_file_id"] = self._new_file(("\n".join(out) + "\n").encode()) if out else None
        b["error_file_id"] = self._new_file(("\n".join(err) + "\n").encode()) if err else None

    def _new_file(self, data: bytes) -> str:
        fid = "file-" + uuid.uuid4().hex[:16]
        self.files[fid] = data
        return fid

    # ------------------------------------------------------------------------------------------- handler

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, obj: Any, raw: bytes | None = None, ctype: str = "application/json"):
                data = raw if raw is not None else json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorised(self) -> bool:
                key = self.headers.get("x-api-key") or self.headers.get("authorization", "").removeprefix("Bearer ")
                if key != KEY:
                    self._send(401, {"type": "error", "error": {"type": "authentication_error",
                                                                "message": "invalid x-api-key"}})
                    return False
                return True

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("content-length") or 0))

            def do_POST(self) -> None:
                raw = self._body()
                if not self._authorised():
                    return
                path = self.path.split("?")[0]
                with fake.lock:
                    if path == "/v1/messages":
                        body = json.loads(raw)
                        fake.messages.append(body)
                        return self._send(200, fake._message(body))
                    if path == "/v1/messages/batches":
                        body = json.loads(raw)
                        fake.batch_creates += 1
                        bid = "msgbatch_" + uuid.uuid4().hex[:16]
                        fake.anthropic_batches[bid] = {"id": bid, "requests": body["requests"], "status":
                                                       "in_progress", "polls": 0, "created": time.time()}
                        return self._send(200, fake._anth_batch_view(fake.anthropic_batches[bid]))
                    if path == "/v1/files":
                        msg = email.parser.BytesParser().parsebytes(
                            b"Content-Type: " + self.headers["content-type"].encode() + b"\r\n\r\n" + raw)
                        data = next(p.get_payload(decode=True) for p in msg.get_payload()
                                    if p.get_param("name", header="content-disposition") == "file")
                        fid = fake._new_file(data)
                        return self._send(200, {"id": fid, "object": "file", "bytes": len(data), "created_at":
                                                int(time.time()), "filename": "batch.jsonl", "purpose": "batch",
                                                "status": "processed"})
                    if path == "/v1/batches":
                        body = json.loads(raw)
                        fake.batch_creates += 1
                        lines = [json.loads(x) for x in fake.files[body["input_file_id"]].decode().splitlines()
                                 if x.strip()]
                        bid = "batch_" + uuid.uuid4().hex[:16]
                        fake.openai_batches[bid] = {"id": bid, "lines": lines, "status": "validating", "polls": 0,
                                                    "created": time.time(), "endpoint": body["endpoint"],
                                                    "input_file_id": body["input_file_id"],
                                                    "metadata": body.get("metadata") or {}}
                        return self._send(200, fake._oai_batch_view(fake.openai_batches[bid]))
                    if path in ("/v1/chat/completions", "/v1/completions"):
                        body = json.loads(raw)
                        fake.chats.append(body)
                        return self._send(200, fake._chat(body, path))
                self._send(404, {"error": {"message": f"no route {path}"}})

            def do_GET(self) -> None:
                if not self._authorised():
                    return
                path = self.path.split("?")[0]
                parts = path.strip("/").split("/")
                with fake.lock:
                    if path == "/v1/messages/batches":
                        data = [fake._anth_batch_view(b) for b in reversed(list(fake.anthropic_batches.values()))]
                        return self._send(200, {"data": data, "has_more": False,
                                                "first_id": data[0]["id"] if data else None,
                                                "last_id": data[-1]["id"] if data else None})
                    if parts[:3] == ["v1", "messages", "batches"] and len(parts) == 4:
                        b = fake.anthropic_batches[parts[3]]
                        fake._advance(b, "ended")
                        return self._send(200, fake._anth_batch_view(b))
                    if parts[:3] == ["v1", "messages", "batches"] and parts[-1] == "results":
                        b = fake.anthropic_batches[parts[3]]
                        return self._send(200, None, fake._anth_results(b), "application/binary")
                    if path == "/v1/batches":
                        data = [fake._oai_batch_view(b) for b in reversed(list(fake.openai_batches.values()))]
                        return self._send(200, {"object": "list", "data": data, "has_more": False,
                                                "first_id": data[0]["id"] if data else None,
                                                "last_id": data[-1]["id"] if data else None})
                    if parts[:2] == ["v1", "batches"] and len(parts) == 3:
                        b = fake.openai_batches[parts[2]]
                        if b["status"] != "completed":
                            fake._advance(b, "completed")
                            if b["status"] == "completed":
                                fake._oai_finish(b)
                            elif b["polls"] >= 1:
                                b["status"] = "in_progress"
                        return self._send(200, fake._oai_batch_view(b))
                    if parts[:2] == ["v1", "files"] and parts[-1] == "content":
                        return self._send(200, None, fake.files[parts[2]], "application/octet-stream")
                self._send(404, {"error": {"message": f"no route {path}"}})

        return Handler

