"""A real OpenAI-compatible server on 127.0.0.1 hosting a real small model, for tests of every stage that calls a
model over HTTP (distill's openai backend, eval's answer generation and judging, audit's judge).

It is `transformers serve` (pip install "transformers[serving]", in the `dev` extra) serving SmolLM2-135M-Instruct
from its converted folder: Chat Completions and Completions, greedy at temperature 0, `usage` and `finish_reason`
filled in. It starts in seconds (no build step), one generation at a time.

Use the session fixture `openai_server` (registered for all tests by the root conftest):

    def test_x(openai_server):
        cfg = BackendConfig(backend="openai", model=openai_server.model, base_url=openai_server.base_url,
                            api_key_env=openai_server.api_key_env, max_tokens=8)

`openai_server.api_key_env` names an environment variable the fixture sets to a dummy key (the server checks
none). `start_openai_server()` is the same as a context manager, for benchmarks and scripts.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

API_KEY_ENV = "NIFT_TEST_OPENAI_KEY"


@dataclass
class ServerHandle:
    base_url: str  # ends in /v1, as the openai SDK expects
    model: str  # the model name to send in requests
    port: int
    process: subprocess.Popen
    log_path: Path
    api_key_env: str = API_KEY_ENV

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict, timeout: float) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


@contextlib.contextmanager
def start_openai_server(model_dir: str | Path | None = None, threads: int = 1,
                        startup_timeout: float = 240.0) -> Iterator[ServerHandle]:
    """Start `transformers serve` on a free loopback port, wait until it answers a completion, stop it after."""
    if model_dir is None:
        from nift.models import pull

        model_dir = pull("smollm2-135m-instruct", log=lambda *_: None)
    model_dir = str(Path(model_dir).resolve())
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           # One thread: the server shares a small machine with the test process; oversubscribed torch threads
           # spin and slow both down by an order of magnitude.
           "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE",
           "HF_HUB_CACHE": os.environ.get("HF_HUB_CACHE", tempfile.gettempdir())}
    env.setdefault(API_KEY_ENV, "sk-test-not-a-real-key")
    os.environ.setdefault(API_KEY_ENV, "sk-test-not-a-real-key")
    log_path = Path(tempfile.mkstemp(prefix="nift-serve-", suffix=".log")[1])
    cmd = [sys.executable, "-c", "import sys; from transformers.cli.transformers import main; sys.exit(main())",
           "serve", model_dir, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
           "--dtype", "float32", "--log-level", "warning"]
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    handle = ServerHandle(f"http://127.0.0.1:{port}/v1", model_dir, port, proc, log_path)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                # A one-token completion: the model is loaded and generating, not just the HTTP socket open.
                _post(f"{handle.base_url}/completions", {"model": model_dir, "prompt": "Hi", "max_tokens": 1,
                                                         "temperature": 0}, timeout=60)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"transformers serve did not answer within {startup_timeout:.0f}s:\n"
                                       f"{log_path.read_text()[-3000:]}") from None
                time.sleep(0.5)
        yield handle
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log_path.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def openai_server(smollm2) -> Iterator[ServerHandle]:
    """A real OpenAI-compatible server (transformers serve + SmolLM2-135M-Instruct) on 127.0.0.1, session-wide."""
    from nift.models import demo_model_dir

    with start_openai_server(demo_model_dir(smollm2)) as handle:
        yield handle
