"""A fault-injecting HTTP proxy on loopback, between an API client and a real server.

For each request the proxy asks `plan(key, attempt)` what to do, where `key` names the request's content (the
last chat message or the prompt) and `attempt` counts how often that content has arrived:

- "pass": forward to the upstream server and return its answer,
- "429": answer 429 with `retry-after: <retry_after>`, without calling upstream,
- "500": answer 500, without calling upstream,
- "400": answer 400 (not retryable), without calling upstream,
- "stall": hold the connection for `stall_s` seconds (past the client's timeout), then drop it,
- "drop": drop the connection before calling upstream,
- "drop_after": call upstream (the server does the work), then drop the connection without answering,
- "malformed": call upstream, then answer 200 with the first half of its JSON.

Every request is logged (`log`: time, key, attempt, action, whether upstream was called, whether a complete
answer was delivered, the usage upstream reported — the bill — also when the answer was then lost), so tests
can check what reached the server, what it billed, and that nothing delivered was asked again.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (timeout) closes its socket; the log says what happened


def content_key(body: dict[str, Any]) -> str:
    if "messages" in body:
        return body["messages"][-1]["content"]
    return str(body.get("prompt"))


@dataclass
class Entry:
    t: float
    key: str
    attempt: int
    action: str
    upstream: bool = False
    delivered: bool = False
    usage: dict | None = None


class FaultProxy:
    def __init__(self, upstream_root: str, plan: Callable[[str, int], str] | None = None, stall_s: float = 3.0,
                 retry_after: float = 1.0, delay_s: float = 0.0):
        self.upstream = upstream_root.rstrip("/")
        self.plan = plan or (lambda key, attempt: "pass")
        self.stall_s, self.retry_after, self.delay_s = stall_s, retry_after, delay_s
        self.lock = threading.Lock()
        self.attempts: Counter = Counter()
        self.log: list[Entry] = []
        self.server = _QuietServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def entries(self, key: str | None = None) -> list[Entry]:
        with self.lock:
            return [e for e in self.log if key is None or e.key == key]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()

            def _drop(self) -> None:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                key = content_key(json.loads(raw))
                with proxy.lock:
                    proxy.attempts[key] += 1
                    attempt = proxy.attempts[key]
                    entry = Entry(time.time(), key, attempt, proxy.plan(key, attempt))
                    proxy.log.append(entry)
                action = entry.action
                if action == "429":
                    return self._reply(429, b'{"error": {"message": "rate limited (injected)", "type": "rate"}}',
                                       {"retry-after": str(proxy.retry_after)})
                if action == "500":
                    return self._reply(500, b'{"error": {"message": "server error (injected)"}}')
                if action == "400":
                    return self._reply(400, b'{"error": {"message": "bad request (injected)"}}')
                if action == "stall":
                    time.sleep(proxy.stall_s)
                    return self._drop()
                if action == "drop":
                    return self._drop()
                if proxy.delay_s:
                    time.sleep(proxy.delay_s)
                req = urllib.request.Request(proxy.upstream + self.path, data=raw, method="POST", headers={
                    "content-type": "application/json",
                    "authorization": self.headers.get("authorization", ""),
                })
                try:
                    with urllib.request.urlopen(req, timeout=300) as r:
                        status, data = r.status, r.read()
                except urllib.error.HTTPError as e:
                    status, data = e.code, e.read()
                entry.upstream = True
                if status == 200:  # the work the server did (and would bill), whether or not the client hears of it
                    entry.usage = json.loads(data).get("usage")
                if action == "drop_after":
                    return self._drop()
                if action == "malformed":
                    return self._reply(200, data[: len(data) // 2])
                self._reply(status, data)
                if status == 200:
                    entry.delivered = True

        return Handler
