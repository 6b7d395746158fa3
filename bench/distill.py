"""Benchmarks of the distillation engine, each a ratio measured side by side in this one script.

1. Engine overhead: the hf backend through `run_requests` (keys, store, buckets, bookkeeping) vs the same batched
   `generate` calls made directly, same prompts, model (SmolLM2-135M), batch size and stopping rule; goal >= 0.95.
2. Batching: hf backend output tokens/s at batch sizes 1, 4, 16, 64 (CPU here; CUDA when one is visible).
3. Rate-limit fidelity: the openai backend against a local OpenAI-compatible server with artificial latency that
   enforces a requests/min (or tokens/min) limit with a one-second token bucket and answers 429 beyond it;
   achieved rate vs the configured limit, goal >= 90 % with zero 429s provoked.

Run as: python bench/distill.py [--only overhead,batching,ratelimit] [--quick]
Results are printed and written to bench/results/distill.json (--only updates just those entries).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see tests/conftest.py: spinning threads on a shared CPU

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from nift.llm import Request, run_requests  # noqa: E402
from nift.llm.config import BackendConfig, Price  # noqa: E402

SHARED = Path(os.environ.get("NIFT_SHARED", REPO.parent / "shared"))


def prompts(n: int, words: int = 48) -> list[str]:
    """The first `words` words of real OpenWebText documents (shared data), else of the packaged corpus."""
    corpus = SHARED / "data" / "corpus" / "openwebtext_800.jsonl"
    texts = []
    if corpus.is_file():
        with open(corpus, encoding="utf-8") as f:
            for line in f:
                texts.append(" ".join(json.loads(line)["text"].split()[:words]))
                if len(texts) == n:
                    break
    while len(texts) < n:
        texts.append(f"Document {len(texts)} begins with an ordinary sentence about the weather and the town")
    return texts


# ------------------------------------------------------------------------------------------- 1. overhead


def _direct(backend, texts: list[str], batch: int, max_new: int) -> tuple[float, int]:
    """Batched generate without the engine: length-sorted batches, left padding, greedy, same stopping rule."""
    import torch
    from transformers import GenerationConfig

    tok, model = backend.tok, backend.model
    order = sorted(texts, key=lambda t: -len(tok(t)["input_ids"]))
    gen_cfg = GenerationConfig(max_new_tokens=max_new, do_sample=False, pad_token_id=backend._pad,
                               eos_token_id=sorted(backend._eos), bos_token_id=tok.bos_token_id)
    t0 = time.perf_counter()
    n_tokens = 0
    for i in range(0, len(order), batch):
        enc = tok(order[i:i + batch], return_tensors="pt", padding=True)
        with torch.inference_mode():
            out = model.generate(**enc.to(backend.device), generation_config=gen_cfg)
        for row in out[:, enc["input_ids"].shape[1]:].tolist():
            gen = []
            for t in row:
                gen.append(t)
                if t in backend._eos:
                    break
            n_tokens += len(gen)
            tok.decode(gen, skip_special_tokens=True)  # the text, as the engine returns it
    return time.perf_counter() - t0, n_tokens


_GEN_S: list[float] = []


def _engine(backend, cfg: BackendConfig, texts: list[str]) -> tuple[float, int]:
    """Through run_requests; also records the time spent inside the backend's generate calls, so that the engine's
    own share of the wall time (keys, store, sorting, bookkeeping) is measured exactly, free of machine noise."""
    inner = backend.generate
    spent = [0.0]

    def timed(payloads):
        t = time.perf_counter()
        try:
            return inner(payloads)
        finally:
            spent[0] += time.perf_counter() - t

    backend.generate = timed
    try:
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            res = run_requests(cfg, [Request(id=str(i), prompt=t) for i, t in enumerate(texts)],
                               Path(d) / "c.sqlite", progress=False, log=lambda *_: None, backend=backend)
            wall = time.perf_counter() - t0
    finally:
        del backend.generate
    _GEN_S.append(spent[0] / wall)
    return wall, sum(r.completion_tokens for r in res.values())


def bench_overhead(quick: bool) -> dict:
    from nift.llm.backends.hf import HFBackend

    n, batch, max_new, reps = (16, 8, 16, 2) if quick else (32, 16, 32, 4)
    cfg = BackendConfig(backend="hf", model="smollm2-135m-instruct", max_tokens=max_new, batch_size=batch,
                        endpoint="completions")
    backend = HFBackend(cfg, log=lambda *_: None)
    backend.load()
    texts = prompts(n)
    _direct(backend, texts[:batch], batch, 2)  # warm-up
    direct, engine = [], []
    _GEN_S.clear()
    for rep in range(reps):  # interleaved pairs, order alternating, so machine load hits both alike
        pair = [lambda: direct.append(_direct(backend, texts, batch, max_new)),
                lambda: engine.append(_engine(backend, cfg, texts))]
        for run in pair if rep % 2 == 0 else reversed(pair):
            run()
    d_tps = [tok / s for s, tok in direct]
    e_tps = [tok / s for s, tok in engine]
    paired = sorted(e / d for e, d in zip(e_tps, d_tps, strict=True))
    median = statistics.median(paired)
    out = {"prompts": n, "batch_size": batch, "max_new_tokens": max_new, "device": backend.device,
           "dtype": backend._dtype, "direct_tokens_per_s": [round(x, 2) for x in d_tps],
           "engine_tokens_per_s": [round(x, 2) for x in e_tps], "tokens": [direct[0][1], engine[0][1]],
           "paired_ratios": [round(x, 3) for x in paired], "ratio_engine_over_direct_median": round(median, 3),
           "ratio_best_over_best": round(max(e_tps) / max(d_tps), 3),
           "generate_share_of_engine_wall": [round(x, 4) for x in _GEN_S], "goal": ">= 0.95"}
    print(f"\n1. engine overhead ({n} prompts, batch {batch}, {max_new} new tokens, {backend.device} "
          f"{backend._dtype}, {reps} interleaved pairs)")
    print(f"   direct generate : {out['direct_tokens_per_s']} tok/s")
    print(f"   through engine  : {out['engine_tokens_per_s']} tok/s   (tokens {out['tokens']})")
    print(f"   ratio engine/direct: median of pairs {median:.3f}, best/best {out['ratio_best_over_best']:.3f} "
          "(goal >= 0.95)")
    print(f"   inside the backend's generate: {min(_GEN_S):.2%} of the engine's wall time at worst; the engine's "
          f"own work (keys, store, sorting) costs {1 - min(_GEN_S):.2%}: implied ratio {min(_GEN_S):.3f}, free of "
          "machine noise")
    return out


# ------------------------------------------------------------------------------------------- 2. batching


def bench_batching(quick: bool) -> dict:
    from nift.llm.backends.hf import HFBackend

    max_new = 16 if quick else 32
    sizes = [1, 4, 16, 64]
    base = BackendConfig(backend="hf", model="smollm2-135m-instruct", max_tokens=max_new, endpoint="completions")
    backend = HFBackend(base, log=lambda *_: None)
    backend.load()
    rows = []
    print(f"\n2. hf backend output tokens/s by batch size ({backend.device}, {backend._dtype}, {max_new} new tokens, "
          "48-word OpenWebText prompts)")
    for bs in sizes:
        n = max(bs, 4 if quick else 8)  # at least 8 prompts so batch 1 is measured over several calls
        cfg = base.model_copy(update={"batch_size": bs})
        wall, tokens = _engine(backend, cfg, prompts(n))
        rows.append({"batch_size": bs, "prompts": n, "tokens": tokens, "seconds": round(wall, 2),
                     "tokens_per_s": round(tokens / wall, 2)})
        print(f"   batch {bs:3d}: {tokens / wall:8.1f} tok/s  ({n} prompts, {tokens} tokens, {wall:.1f}s)")
    b1 = rows[0]["tokens_per_s"]
    for r in rows:
        r["speedup_vs_batch_1"] = round(r["tokens_per_s"] / b1, 2)
    print("   speed-up vs batch 1: " + ", ".join(f"{r['batch_size']}: {r['speedup_vs_batch_1']}x" for r in rows))
    return {"device": backend.device, "dtype": backend._dtype, "max_new_tokens": max_new, "rows": rows}


# ------------------------------------------------------------------------------------------ 3. rate limits


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # the client opens up to `concurrency` connections at once


class LimitedServer:
    """OpenAI-compatible Chat Completions with artificial latency and an enforced limit (one-second bucket)."""

    def __init__(self, latency_s: float, rpm: float | None = None, tpm: float | None = None):
        self.latency_s, self.rpm, self.tpm = latency_s, rpm, tpm
        self.lock = threading.Lock()
        self.levels = {"r": (rpm or 0) / 60, "t": (tpm or 0) / 60}
        self.t = time.monotonic()
        self.ok = self.limited = 0
        self.times: list[float] = []
        server = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                # Providers count a request's prompt tokens plus its max_tokens against the token limit.
                cost = math.ceil(sum(len(m["content"]) for m in body["messages"]) / 4) + body["max_tokens"]
                allowed = server.admit(cost)
                time.sleep(server.latency_s)
                if not allowed:
                    data = b'{"error": {"message": "rate limit", "type": "requests"}}'
                    self.send_response(429)
                    self.send_header("retry-after", "1")
                else:
                    data = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                                       "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                           "role": "assistant", "content": "ok"}}],
                                       "usage": {"prompt_tokens": cost - body["max_tokens"], "completion_tokens": 1,
                                                 "total_tokens": cost - body["max_tokens"] + 1}}).encode()
                    self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = _Server(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def admit(self, tokens: int) -> bool:
        with self.lock:
            now = time.monotonic()
            dt, self.t = now - self.t, now
            ok = True
            for k, limit, need in (("r", self.rpm, 1), ("t", self.tpm, tokens)):
                if limit:
                    self.levels[k] = min(limit / 60, self.levels[k] + dt * limit / 60)
                    ok = ok and self.levels[k] >= need - 1e-9
            if ok:
                for k, limit, need in (("r", self.rpm, 1), ("t", self.tpm, tokens)):
                    if limit:
                        self.levels[k] -= need
                self.ok += 1
                self.times.append(now)
            else:
                self.limited += 1
            return ok

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _rate_case(name: str, n: int, latency: float, rpm: float | None, tpm: float | None, text_words: int,
               max_tokens: int) -> dict:
    srv = LimitedServer(latency, rpm=rpm, tpm=tpm)
    os.environ["NIFT_BENCH_KEY"] = "sk-bench"
    cfg = BackendConfig(backend="openai", model="bench-model", base_url=srv.url, api_key_env="NIFT_BENCH_KEY",
                        max_tokens=max_tokens, concurrency=64, rpm=rpm, tpm=tpm, timeout_s=30,
                        prices={"bench-model": Price(input=0, output=0)})
    words = " ".join(["word"] * text_words)
    reqs = [Request(id=str(i), messages=[{"role": "user", "content": f"{i} {words}"}]) for i in range(n)]
    with tempfile.TemporaryDirectory() as d:
        res = run_requests(cfg, reqs, Path(d) / "c.sqlite", progress=False, log=lambda *_: None)
    srv.close()
    # the steady rate: leave out the first second (both buckets start full, a burst any limiter allows)
    steady = [t for t in srv.times if t >= srv.times[0] + 1.0]
    achieved_per_min = (len(steady) - 1) / (steady[-1] - steady[0]) * 60
    if rpm:
        limit, unit = rpm, "requests/min"
        achieved = achieved_per_min
    else:
        per_req = math.ceil((len(str(n)) + 1 + len(words)) / 4) + max_tokens
        limit, unit = tpm, "tokens/min"
        achieved = achieved_per_min * per_req
    out = {"case": name, "limit": limit, "unit": unit, "requests": n, "latency_s": latency, "done": len(res),
           "achieved": round(achieved, 1), "fraction_of_limit": round(achieved / limit, 3),
           "server_429s": srv.limited, "client_retries": res.summary.retries, "goal": ">= 0.90, zero 429s"}
    print(f"   {name:28s}: {achieved:9.1f} {unit} of {limit:g} = {achieved / limit:6.1%}; 429s {srv.limited}, "
          f"retries {res.summary.retries}, {len(res)}/{n} done")
    return out


def bench_ratelimit(quick: bool) -> dict:
    print("\n3. rate-limit fidelity (local server, 0.2-0.5 s latency, limit enforced with 429s; steady rate, "
          "after the first second)")
    scale = 0.5 if quick else 1.0
    cases = [
        _rate_case("600 rpm, 200 ms latency", int(300 * scale), 0.2, 600, None, 20, 16),
        _rate_case("1200 rpm, 500 ms latency", int(600 * scale), 0.5, 1200, None, 20, 16),
        _rate_case("60k tpm (~250 tok/request)", int(200 * scale), 0.3, None, 60_000, 160, 50),
    ]
    return {"cases": cases}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="overhead,batching,ratelimit")
    ap.add_argument("--quick", action="store_true", help="smaller workloads (a smoke run)")
    args = ap.parse_args()
    import torch

    results = {"machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                           "load_avg": os.getloadavg()}}
    todo = args.only.split(",")
    if "overhead" in todo:
        results["overhead"] = bench_overhead(args.quick)
    if "batching" in todo:
        results["batching"] = bench_batching(args.quick)
    if "ratelimit" in todo:
        results["ratelimit"] = bench_ratelimit(args.quick)
    results["machine"]["load_avg_after"] = os.getloadavg()
    out = REPO / "bench" / "results" / "distill.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out.read_text()) if out.is_file() else {}
    previous.update(results)  # --only keeps the other benchmarks' last results
    out.write_text(json.dumps(previous, indent=2) + "\n")
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
