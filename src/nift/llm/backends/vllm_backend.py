"""`vllm`: vLLM offline generation in-process (GPU only; `pip install 'nift[gpu]'`).

Prompts are tokenized here, exactly as the hf backend does (same chat template, same BOS handling), and handed to
vLLM as token ids, so the two in-process backends see identical inputs. vLLM batches continuously inside one
`generate` call; the engine hands it chunks of at least `MIN_CHUNK` prompts, and stores each chunk's results as
soon as that chunk returns.
"""

from __future__ import annotations

import time
from typing import Any

from nift.errors import NiftError, missing_package
from nift.llm.backends.hf import TokenizerBackend
from nift.llm.types import Result

MIN_CHUNK = 512


class VLLMBackend(TokenizerBackend):
    family = "vllm"

    def __init__(self, cfg, log=print):
        try:
            import vllm
        except ImportError:
            raise missing_package("vllm", "gpu", "the vllm backend") from None
        import torch

        if not torch.cuda.is_available():
            raise NiftError("the vllm backend needs a CUDA GPU and none is visible; use --teacher.backend hf on CPU")
        super().__init__(cfg, log)
        self._vllm = vllm
        self._llm: Any = None
        if cfg.dtype == "auto":
            self._dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        else:
            self._dtype = cfg.dtype

    @property
    def chunk_size(self) -> int:
        return max(self.cfg.batch_size, MIN_CHUNK)

    def extra_params(self) -> dict[str, Any]:
        return {"dtype": self._dtype}

    def load(self) -> None:
        if self._llm is not None:
            return
        ref = self._ref
        model = f"{ref.path}/{ref.gguf_file}" if ref.gguf_file else ref.path
        kwargs: dict[str, Any] = {"model": model, "tokenizer": ref.path, "dtype": self._dtype, "seed": 0}
        if self.cfg.context_tokens:
            kwargs["max_model_len"] = self.cfg.context_tokens
        if self.cfg.tensor_parallel > 1:
            # Worker processes of its own on the GPUs this process sees (also inside a Ray actor that owns them).
            kwargs.update(tensor_parallel_size=self.cfg.tensor_parallel, distributed_executor_backend="mp")
        if self.cfg.device and self.cfg.device.startswith("cuda:"):
            self.log("note: vllm picks GPUs through CUDA_VISIBLE_DEVICES; --teacher.device is ignored")
        self._llm = self._vllm.LLM(**kwargs)

    def generate(self, payloads: list[dict[str, Any]]) -> list[Result]:
        """One chunk; all payloads share max_tokens, temperature and stop (the engine groups them so)."""
        self.load()
        p0 = payloads[0]
        params = self._vllm.SamplingParams(
            temperature=p0["temperature"], max_tokens=p0["max_tokens"], stop=p0["stop"] or None,
            seed=p0["seed"] if p0.get("seed") is not None else 0,
            skip_special_tokens=True,
        )
        prompts, cut = [], []
        for p in payloads:
            ids, n_cut = self.fit(self.encoded(p), p0["max_tokens"])
            prompts.append({"prompt_token_ids": ids})
            cut.append(n_cut)
        t0 = time.perf_counter()
        outs = self._llm.generate(prompts, params, use_tqdm=False)
        latency = time.perf_counter() - t0
        results = []
        for out, n_cut in zip(outs, cut, strict=True):
            c = out.outputs[0]
            results.append(Result(
                id="", text=c.text, finish_reason=c.finish_reason if c.finish_reason in ("stop", "length") else
                str(c.finish_reason), prompt_tokens=len(out.prompt_token_ids), completion_tokens=len(c.token_ids),
                latency_s=round(latency, 4), model=self.cfg.model, model_version=self._version,
                truncated_tokens=n_cut, stop_reason=_stop_reason(c.finish_reason, c.stop_reason),
            ))
        return results


def _stop_reason(finish: str, stop: Any) -> str | None:
    """vLLM's stop_reason: None for the model's EOS, the matched string for a stop string, an id for a stop token."""
    if finish != "stop":
        return None
    return "stop_string" if isinstance(stop, str) else "eos"
