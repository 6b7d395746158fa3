"""A real run for the report tests, made once per session by `nift run` on the smallest real inputs: 6 OpenWebText
documents, SmolLM2-135M-Instruct as teacher (16 tokens) and as audit judge, a tiny Llama student (LoRA, 4 steps,
held-out loss), its LoRA merge, IFEval before and after on 4 prompts (32 new tokens), their comparison and the
report."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

QUIET = {"log": lambda *_: None}


def short_owt(owt_corpus: Path, out: Path, n: int = 8) -> Path:
    """The n shortest OpenWebText documents (128-160 words): real prose that a CPU teacher continues quickly."""
    docs = [json.loads(line) for line in owt_corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    docs.sort(key=lambda d: (len(d["text"].split()), d["text"]))
    out.write_text("".join(json.dumps(d) + "\n" for d in docs[:n]), encoding="utf-8")
    return out


@pytest.fixture(scope="session")
def report_run(tmp_path_factory, owt_corpus, smollm2, shared_data) -> Path:
    """`nift run` on one config: every stage, eval before and after, their comparison and the report."""
    from helpers.models import save_tiny_llama

    from nift import pipeline
    from nift.config import validate

    tmp = tmp_path_factory.mktemp("report")
    run_dir = tmp / "run"
    student = save_tiny_llama(tmp / "tiny-llama", smollm2)
    hf = {"backend": "hf", "model": smollm2, "device": "cpu"}
    cfg = validate({
        "run_dir": str(run_dir),
        "prepare": {"input": [str(short_owt(owt_corpus, tmp / "owt_short.jsonl"))], "n_docs": 6, "progress": False},
        "distill": {"teacher": {**hf, "max_tokens": 16}, "progress": False},
        "audit": {"judge": hf, "judge_max_tokens": 2, "benchmark_dir": str(shared_data), "drop": ["empty", "refusal"],
                  "workers": 1, "progress": False},
        "train": {"model": student, "data": "audit", "max_steps": 4, "per_device_batch_size": 2, "grad_accum": 1,
                  "max_length": 128, "lr": 2e-3, "logging_steps": 1, "save_steps": 2, "eval_fraction": 0.34,
                  "progress": False},
        "merge": {"progress": False},
        "eval": {"benchmarks": ["ifeval"], "ifeval_data": str(shared_data / "ifeval"), "limit": 4,
                 "max_new_tokens": 32, "n_boot": 200, "progress": False},
        "report": {"n_boot": 200},
    })
    pipeline.run(cfg, **QUIET)
    return run_dir


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """Runs Debian's chromium (scripts/test.sh installs it) headless and offline: no first-run, sync, component or
    background fetches, a private profile. Call as browser(*args) -> CompletedProcess."""
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("chromium is not installed: `apt-get install -y chromium` (scripts/test.sh does it)")
    profile = tmp_path_factory.mktemp("chromium-profile")

    def run(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)

    return run
