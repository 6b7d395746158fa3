"""The `vllm` backend (GPU only): same prompts as the hf backend, greedy; vLLM and transformers should agree on
the first tokens of a greedy continuation and both stop by themselves on a short chat answer."""

from __future__ import annotations

import pytest

from nift.llm import Request, run_requests
from nift.llm.config import BackendConfig


@pytest.mark.gpu
def test_vllm_matches_hf_greedy_and_reports_finish_reasons(smollm2, tmp_path):
    pytest.importorskip("vllm")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    reqs = [Request(id="raw", prompt="The capital of France is"),
            Request(id="chat", messages=[{"role": "user", "content": "What is 2+2?"}], max_tokens=48)]
    v = run_requests(BackendConfig(backend="vllm", model=smollm2, max_tokens=8, dtype="float32"), reqs,
                     tmp_path / "v.sqlite", progress=False)
    h = run_requests(BackendConfig(backend="hf", model=smollm2, max_tokens=8, dtype="float32", device="cuda"),
                     reqs, tmp_path / "h.sqlite", progress=False)
    assert v["raw"].text.split()[:2] == h["raw"].text.split()[:2] and "Paris" in v["raw"].text
    assert v["raw"].finish_reason == "length" and v["raw"].completion_tokens == 8
    assert v["chat"].finish_reason == "stop" and v["chat"].completion_tokens < 48
    assert v["raw"].prompt_tokens == h["raw"].prompt_tokens  # same tokenization (ids handed to vLLM)
    again = run_requests(BackendConfig(backend="vllm", model=smollm2, max_tokens=8, dtype="float32"), reqs,
                         tmp_path / "v.sqlite", progress=False)
    assert again.summary.cached == 2
