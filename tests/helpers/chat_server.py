"""A scripted OpenAI-compatible Chat Completions server on 127.0.0.1, for tests that drive the engine (and the
official `openai` SDK) over real HTTP. `reply(mode, body)` decides the answer from the first path segment
(`{url}/<mode>/v1/...`) and the request body; it returns the text, or (text, top logprobs of the first token as
[(token, logprob), ...]). Every request body is recorded with its mode."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = Callable[[str, dict[str, Any]], "str | tuple[str, list[tuple[str, float]]]"]


def completion(text: str, model: str = "fake-1", top: list[tuple[str, float]] | None = None) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
    if top is not None:
        choice["logprobs"] = {"content": [{"token": text, "logprob": top[0][1] if top else 0.0,
                                           "top_logprobs": [{"token": t, "logprob": lp} for t, lp in top]}]}
    return {"id": "x", "object": "chat.completion", "created": int(time.time()), "model": model,
            "system_fingerprint": "fp_test", "choices": [choice],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}}


@contextmanager
def chat_server(reply: Reply) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(base URL, recorded bodies) while the server runs."""
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep pytest output clean
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
            mode = self.path.strip("/").split("/")[0]
            seen.append({"mode": mode, **body})
            out = reply(mode, body)
            text, top = (out, None) if isinstance(out, str) else out
            data = json.dumps(completion(text, top=top)).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
