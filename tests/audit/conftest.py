"""Fixtures for the audit tests: a real prepare run on OpenWebText plus a distill output with planted failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nift.artifacts import write_json, write_jsonl
from nift.io import read_jsonl
from nift.prepare import PrepareConfig
from nift.prepare import run as prepare_run

GERMAN = ("Die Stadtverwaltung hat am Dienstag beschlossen, den Radweg am Fluss um zwölf Kilometer zu verlängern. "
          "Die Arbeiten sollen bis zum Ende des nächsten Jahres abgeschlossen sein.")


def plant(prepare_rows: list[dict], ifeval_prompt: str) -> tuple[list[dict], dict[str, set[str]]]:
    """Distill rows for the prepare rows: honest continuations (the reference's next words, lower-cased start kept)
    and, on the first rows, one planted failure each. Returns the rows and the ids each flag must hit."""
    rows, expect = [], {}

    def want(flag: str, rid: str) -> None:
        expect.setdefault(flag, set()).add(rid)

    for i, p in enumerate(prepare_rows):
        ref = p["reference"]
        honest = " ".join(ref.split()[:60])
        completion, finish = " " + honest, "stop"
        rid = p["id"]
        if i == 0:
            completion = "Sure! Here is a continuation of the article: " + honest
            want("preamble", rid)
        elif i == 1:
            completion = "I'm sorry, but I can't continue this text."
            want("refusal", rid)
        elif i == 2:
            completion = "   "
            want("empty", rid)
        elif i == 3:
            finish = "length"
            want("truncated", rid)
        elif i == 4:
            completion = " " + " ".join(p["prompt"].split()[-20:]) + " " + honest
            want("echo", rid)
        elif i == 5:
            completion = " " + GERMAN
            want("language", rid)
        elif i == 6:
            completion = " and then, as the brochure said: " + ifeval_prompt + " That was all."
            want("contaminated", rid)
        elif i == 7:
            completion = "This article discusses " + honest
        rows.append({"id": rid, "completion": completion, "finish_reason": finish, "prompt_tokens": 10,
                     "completion_tokens": 20, "cost_usd": 0.0, "teacher": "test-teacher", "latency_s": 0.1})
    return rows, expect


@pytest.fixture(scope="session")
def audit_run(tmp_path_factory, owt_corpus: Path, shared_data: Path):
    """runs/x with a real prepare/ (40 OWT documents) and a distill/ with planted failures."""
    run_dir = tmp_path_factory.mktemp("audit_run")
    prepare_run(PrepareConfig(input=[str(owt_corpus)], n_docs=40, seed=1, progress=False), run_dir, log=lambda m: None)
    prep = list(read_jsonl(run_dir / "prepare" / "data.jsonl"))
    ifeval = json.loads((shared_data / "ifeval" / "input_data.jsonl").read_text().splitlines()[10])["prompt"]
    rows, expect = plant(prep, ifeval)
    write_jsonl(run_dir / "distill" / "data.jsonl", rows)
    write_json(run_dir / "distill" / "manifest.json", {"stage": "distill", "config": {"teacher": {
        "model": "test-teacher"}}})
    # the upper-case rule: every row whose reference starts lower-case and whose completion starts upper-case
    for p, r in zip(prep, rows, strict=True):
        c, ref = r["completion"].lstrip(), p["reference"].lstrip()
        if c and c[0].isupper() and not ref[0].isupper():
            expect.setdefault("uppercase_start", set()).add(p["id"])
    return run_dir, prep, rows, expect


class RecordingProxy:
    """A loopback HTTP proxy that records every request body it forwards: what the judge really sent."""

    def __init__(self, upstream: str):
        import threading
        import urllib.error
        import urllib.request
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.bodies: list[dict] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                proxy.bodies.append({"path": self.path, **json.loads(body)})
                req = urllib.request.Request(upstream + self.path, data=body, method="POST",
                                             headers={"content-type": "application/json"})
                try:
                    with urllib.request.urlopen(req, timeout=300) as r:
                        status, data = r.status, r.read()
                except urllib.error.HTTPError as e:
                    status, data = e.code, e.read()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
