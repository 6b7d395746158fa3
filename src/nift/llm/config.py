"""How to call a teacher or judge: `BackendConfig` (backend, model, generation and rate settings), `Price`,
`RayConfig` (spreading an in-process teacher over a Ray cluster) and the paper's system prompt.

Used by `nift distill` (`teacher:`), audit's and eval's judges (`judge:`) and the request engine.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from nift.config import NoBoolNumbers, volatile

# The paper's system prompt for its Claude-3 teachers (§3); the `anthropic` backends use it unless told otherwise.
PAPER_SYSTEM_PROMPT = "Please continue directly from the end of the given sentence without repeating it."


class Price(BaseModel):
    """A model's price in US dollars per million tokens."""

    model_config = ConfigDict(extra="forbid")

    input: float = Field(..., ge=0, description="USD per million input (prompt) tokens.")
    output: float = Field(..., ge=0, description="USD per million output (completion) tokens.")
    batch_discount: float = Field(
        0.5, ge=0, le=1, description="Fraction of the price charged through the provider's Batch API (0.5 = half).",
    )


class BackendConfig(NoBoolNumbers):
    """A teacher or judge: which backend, which model, and how to call it.

    Used by `nift distill` (as `teacher:`) and by any stage that calls a model (judges). Settings that do not change
    what the model answers (concurrency, rate limits, timeouts, retries, batch size, device) are volatile: they are
    left out of config hashes and of request-cache keys.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    backend: Literal["hf", "vllm", "openai", "anthropic", "openai-batch", "anthropic-batch"] = Field(
        "hf", description="hf: transformers in-process (CPU or CUDA); vllm: vLLM in-process (GPU); openai: any "
        "OpenAI-compatible server (OpenAI, vLLM, llama.cpp, Ollama, gateways); anthropic: Messages API; "
        "openai-batch / anthropic-batch: the providers' Batch APIs (half price, results within 24 h).",
    )
    model: str = Field(
        "smollm2-135m-instruct", description="Model: for hf/vllm a demo model name, HF folder, .gguf file or hub id; "
        "for API backends the provider's model name (e.g. gpt-4o-mini, claude-3-haiku-20240307).",
    )
    base_url: str | None = Field(
        None, description="API base URL (e.g. http://127.0.0.1:8000/v1 for a local server); null = the provider's.",
    )
    api_key_env: str | None = Field(
        None, description="Name of the environment variable holding the API key (never the key itself); null = "
        "OPENAI_API_KEY or ANTHROPIC_API_KEY.",
    )
    system_prompt: str | None = Field(
        None, description="System prompt for chat requests; null = the backend's default (anthropic: the paper's "
        f"'{PAPER_SYSTEM_PROMPT}'; others: none); '' = none.",
    )
    endpoint: Literal["chat", "completions"] = Field(
        "chat", description="How a plain text prompt is sent: chat = as the user message of a chat request (with "
        "the system prompt); completions = raw continuation of the text (OpenAI Completions endpoint, or the hf/vllm "
        "model continuing the text without a chat template; for base-model teachers).",
    )
    max_tokens: int = Field(512, ge=1, description="Maximum tokens generated per request.")
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature (the paper: 0 = greedy).")
    stop: list[str] = Field(default_factory=list, description="Stop sequences (generation ends before them).")
    seed: int | None = Field(
        None, description="Seed sent with every request (hf: torch seed per batch; vllm: the sampling seed; "
        "OpenAI-compatible: the seed parameter; Anthropic has none); part of the cache key; null = the backend's "
        "default.",
    )
    top_logprobs: int | None = Field(
        None, ge=1, le=20, description="openai: also return the k most likely tokens at each generated position "
        "with their log-probabilities (AlpacaEval's weighted judge reads them); null = none.",
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="hf/vllm weights dtype; auto = bf16 on bf16-capable GPUs and on CPUs with AVX512-BF16/AMX, "
        "fp32 on other CPUs, fp16 on older GPUs.",
    )
    context_tokens: int | None = Field(
        None, ge=16, description="Teacher context window in tokens; null = the model's own (hf/vllm) or the known "
        "window of the API model (unknown: no check).",
    )
    on_long_prompt: Literal["truncate", "skip", "error"] = Field(
        "truncate", description="A prompt that leaves fewer than max_tokens of context: truncate it from the left "
        "(counted), skip it (counted), or stop with an error.",
    )
    prices: dict[str, Price] = Field(
        default_factory=dict, description="Price overrides by model name, e.g. "
        '{"my-model": {"input": 0.15, "output": 0.6}} (USD per million tokens).',
    )
    concurrency: int = volatile(default=8, ge=1, le=4096, description="API requests in flight at once.")
    rpm: float | None = volatile(default=None, gt=0, description="Request-per-minute limit; null = none.")
    tpm: float | None = volatile(
        default=None, gt=0, description="Token-per-minute limit (prompt estimate + max_tokens); null = none.",
    )
    timeout_s: float = volatile(default=300.0, gt=0, description="Per-request timeout in seconds.")
    max_retries: int = volatile(
        default=8, ge=0, description="Retries on 429, 5xx, timeouts and dropped connections (exponential backoff "
        "with jitter, honouring retry-after); other 4xx errors are not retried.",
    )
    batch_size: int = volatile(default=16, ge=1, description="hf/vllm: prompts generated together.")
    tensor_parallel: int = volatile(
        default=1, ge=1, description="vllm: GPUs that hold one copy of the model (tensor parallelism); a 70B teacher "
        "in bf16 needs at least 2 GPUs of 80 GB (4 leave room for a large KV cache).",
    )
    device: str | None = volatile(default=None, description="hf: torch device (cpu, cuda, cuda:1); null = CUDA if "
                                  "available, else CPU.")
    poll_interval_s: float = volatile(default=30.0, gt=0, description="Batch APIs: seconds between status polls.")
    batch_max_requests: int | None = volatile(
        default=None, ge=1, description="Batch APIs: requests per batch; null = the provider's limit "
        "(OpenAI 50,000 / 200 MB, Anthropic 100,000 / 256 MB).",
    )


class RayConfig(BaseModel):
    """Spread an in-process teacher (hf, vllm) over a Ray cluster: one Ray actor per model copy, each result stored
    by the driver the moment its chunk returns; Ray restarts a worker that dies and re-runs its unfinished chunk."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    address: str | None = Field(
        None, description="null = no Ray (one process); 'local' = start a Ray cluster on this machine; 'auto' = join "
        "the cluster this machine belongs to (`ray start --head` on one node, `ray start --address HEAD:6379` on the "
        "others); HOST:PORT = that cluster's GCS; ray://HOST:10001 = Ray Client.",
    )
    workers: int | None = Field(
        None, ge=1, description="Model copies (Ray actors); null = as many as the cluster holds: its GPUs / "
        "gpus_per_worker, or on a cluster without GPUs its CPUs / cpus_per_worker.",
    )
    gpus_per_worker: float | None = Field(
        None, ge=0, description="GPUs per model copy; null = teacher.tensor_parallel (vllm) or 1 (hf) on a cluster "
        "with GPUs, 0 (CPU workers) on one without.",
    )
    cpus_per_worker: float = Field(1.0, gt=0, description="CPU cores per model copy (CPU workers use that many "
                                   "threads).")
    max_restarts: int = Field(
        3, ge=0, description="Times Ray restarts a worker that dies (its unfinished chunk is re-run on the new one); "
        "a worker that dies more often is dropped and its chunks go to the others.",
    )
    local_cpus: int | None = Field(None, ge=1, description="address=local: CPU cores the local cluster may use; "
                                   "null = all.")
