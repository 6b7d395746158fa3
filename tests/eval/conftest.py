"""Eval test helpers: a judge that answers nonsense, behind a real HTTP server on 127.0.0.1 that speaks the
OpenAI Chat Completions protocol (driven by the official `openai` SDK through the distill engine)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

GARBAGE = "Well, it depends on many things. I think it is fine overall, more or less."


class _Handler(BaseHTTPRequestHandler):
    counts: ClassVar[Counter] = Counter()

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        mode = self.path.strip("/").split("/")[0]
        msgs = body.get("messages") or []
        retry = len(msgs) >= 3 and msgs[-2]["role"] == "assistant"
        type(self).counts[(mode, "retry" if retry else "first")] += 1
        text = GARBAGE
        if mode == "answer":
            text = "Paris is the capital of France. It has many museums."
        elif mode == "fixable" and retry:
            pairwise = "[[A>>B]]" in (msgs[0]["content"] if msgs else "")
            text = "My final verdict is tie: [[A=B]]" if pairwise else "Rating: [[6]]"
        out = {"id": "x", "object": "chat.completion", "created": int(time.time()), "model": "garbage-judge-1",
               "system_fingerprint": "fp_test",
               "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}}
        data = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def garbage_judge():
    """(base URL prefix, request counter). `{url}/garbage/v1` always answers without a verdict;
    `{url}/fixable/v1` answers a verdict when asked again; `{url}/answer/v1` gives a fixed plain answer."""
    _Handler.counts = Counter()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Handler.counts
    finally:
        server.shutdown()
        server.server_close()
