"""`hf`: transformers generation in-process, batched (left padding; the engine hands over length-sorted buckets),
greedy at temperature 0, on CPU or CUDA. bf16 by default (on this CPU class bf16 is about twice as fast as fp32 at
batch 32; see DESIGN.md).

Raw prompts are continued as text (with the tokenizer's BOS where it adds one); chat messages go through the
tokenizer's chat template with the generation prompt. finish_reason is "stop" when the model produced an end
token or a stop sequence (stop_reason "eos" or "stop_string"), "length" when it used all of max_tokens.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from nift.errors import NiftError
from nift.llm.backends import LocalBackend
from nift.llm.types import Result


class TokenizerBackend(LocalBackend):
    """The tokenizer side shared by the in-process backends (hf, vllm): exact token counts, left truncation at a
    token boundary, the chat template, the model's context window and a fingerprint of its weights."""

    def __init__(self, cfg, log=print, tokenizer: Any = None):
        super().__init__(cfg, log)
        from nift import models

        self._ref = models.resolve(cfg.model, log=log) if tokenizer is None else None
        self.tok = tokenizer if tokenizer is not None else models.load_tokenizer(self._ref, log=log)
        self._version = _model_version(Path(self._ref.path)) if self._ref else None
        self.tok.padding_side = "left"
        self._context: int | None = None
        self._encoded: dict[int, list[int]] = {}

    def count_tokens(self, text: str) -> int:
        return len(self.tok(text, add_special_tokens=False)["input_ids"])

    def count_tokens_many(self, texts: list[str]) -> list[int]:
        return [len(x) for x in self.tok(texts, add_special_tokens=False)["input_ids"]] if texts else []

    def truncate_left(self, text: str, n_tokens: int) -> str:
        enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        if len(offsets) <= n_tokens:
            return text
        if n_tokens <= 0:
            return ""
        return text[offsets[len(offsets) - n_tokens][0]:]

    def model_config(self) -> Any:
        from transformers import AutoConfig

        conf = AutoConfig.from_pretrained(self._ref.path, **self._ref.kwargs())
        return getattr(conf, "text_config", conf)

    def context_tokens(self) -> int | None:
        if self.cfg.context_tokens:
            return self.cfg.context_tokens
        if self._context is None:
            self._context = getattr(self.model_config(), "max_position_embeddings", None)
        return self._context

    def encode(self, payload: dict[str, Any]) -> list[int]:
        if payload["kind"] == "chat":
            text = self.tok.apply_chat_template(payload["messages"], add_generation_prompt=True, tokenize=False)
            return list(self.tok(text, add_special_tokens=False)["input_ids"])
        return list(self.tok(payload["prompt"], add_special_tokens=True)["input_ids"])

    def sort_key(self, payload: dict[str, Any]) -> int:
        # Kept until generate() takes it: each prompt is tokenized once per run.
        ids = self._encoded.setdefault(id(payload), self.encode(payload))
        return len(ids)

    def encoded(self, payload: dict[str, Any]) -> list[int]:
        ids = self._encoded.pop(id(payload), None)
        return ids if ids is not None else self.encode(payload)

    def fit(self, ids: list[int], max_new: int) -> tuple[list[int], int]:
        """Left-truncate token ids to leave max_new tokens of context (a last resort: the engine truncates the
        text first); returns (ids, tokens cut)."""
        ctx = self.context_tokens()
        room = ctx - max_new if ctx else len(ids)
        if room > 0 and len(ids) > room:
            return ids[-room:], len(ids) - room
        return ids, 0


class HFBackend(TokenizerBackend):
    family = "hf"

    def __init__(self, cfg, log=print, model: Any = None, tokenizer: Any = None):
        """Loads the tokenizer now and the model on first use (a fully cached run never loads the weights).
        `model`/`tokenizer` may be passed in to reuse loaded ones."""
        super().__init__(cfg, log, tokenizer=tokenizer if model is not None else None)
        import torch

        from nift import models

        self._torch = torch
        self.model = model
        if model is not None:
            self.device = str(next(model.parameters()).device)
            self._dtype = str(model.dtype).removeprefix("torch.")
            self._context = getattr(model.config, "max_position_embeddings", None)
        else:
            self.device = cfg.device or models.default_device()
            dtype = models.pick_dtype(self.device) if cfg.dtype == "auto" else getattr(torch, cfg.dtype)
            self._dtype = str(dtype).removeprefix("torch.")
        self._eos: set[int] | None = None
        self._pad: int | None = None
        # Prompts of a batch that start with the same tokens (FastChat's one_shot: ~460 tokens of one-shot example
        # before every question) share one computed prefix: its key/value cache is made once and copied per batch.
        self.prefix_cache = True
        self._prefix: tuple[tuple[int, ...], Any] | None = None
        self._prefix_ok = False  # checked once per model: the cached prefix gives the same next-token logits

    def load(self) -> None:
        if self.model is None:
            from nift import models

            self.model, _ = models.load_model(self._ref, device=self.device, dtype=getattr(self._torch, self._dtype),
                                              purpose="inference", log=self.log)
        if self._eos is None:
            self._eos = end_token_ids(self.tok, self.model.generation_config, self.cfg.model)
            self._pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else sorted(self._eos)[0]

    def extra_params(self) -> dict[str, Any]:
        return {"dtype": self._dtype}

    def _prefix_kv(self, prefix: list[int], batch: int) -> Any:
        """A fresh cache holding `prefix` for each of `batch` rows (generate extends it in place)."""
        import copy

        torch = self._torch
        if self._prefix is None or self._prefix[0] != tuple(prefix):
            with torch.inference_mode():
                out = self.model(input_ids=torch.tensor([prefix], device=self.device), use_cache=True)
            self._prefix = (tuple(prefix), out.past_key_values)
        kv = copy.deepcopy(self._prefix[1])
        kv.batch_repeat_interleave(batch)
        return kv

    # ----------------------------------------------------------------------------------------- generate

    def generate(self, payloads: list[dict[str, Any]]) -> list[Result]:
        """One batch; all payloads share max_tokens, temperature and stop (the engine groups them so)."""
        self.load()
        torch = self._torch
        from transformers import GenerationConfig

        p0 = payloads[0]
        max_new = p0["max_tokens"]
        encoded, cut = [], []
        for p in payloads:
            ids, n_cut = self.fit(self.encoded(p), max_new)
            encoded.append(ids)
            cut.append(n_cut)
        prefix = shared_prefix(encoded) if self.prefix_cache else []
        if prefix and not self._prefix_ok:
            self._prefix_ok = self.prefix_cache = _check_prefix_cache(self.model, self.tok, prefix, self.device)
            if not self._prefix_ok:
                self.log(f"[hf] {self.cfg.model}: a shared prompt prefix cannot be cached for this model; "
                         "computing every prompt whole")
                prefix = []
        width = max(len(x) for x in encoded) - len(prefix)
        input_ids = torch.full((len(encoded), len(prefix) + width), self._pad, dtype=torch.long)
        mask = torch.zeros((len(encoded), len(prefix) + width), dtype=torch.long)
        input_ids[:, :len(prefix)] = torch.tensor(prefix, dtype=torch.long)
        mask[:, :len(prefix)] = 1
        for i, ids in enumerate(encoded):  # each row: the shared prefix, padding, then its own tokens
            rest = ids[len(prefix):]
            input_ids[i, input_ids.shape[1] - len(rest):] = torch.tensor(rest, dtype=torch.long)
            mask[i, mask.shape[1] - len(rest):] = 1
        width = input_ids.shape[1]
        extra = {"past_key_values": self._prefix_kv(prefix, len(encoded))} if prefix else {}
        gen_cfg = GenerationConfig(
            max_new_tokens=max_new, do_sample=p0["temperature"] > 0, pad_token_id=self._pad,
            eos_token_id=sorted(self._eos), bos_token_id=self.tok.bos_token_id,
            **({"temperature": p0["temperature"]} if p0["temperature"] > 0 else {}),
            **({"stop_strings": p0["stop"]} if p0["stop"] else {}),
        )
        if p0.get("seed") is not None:
            torch.manual_seed(p0["seed"])
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                                      generation_config=gen_cfg, **({"tokenizer": self.tok} if p0["stop"] else {}),
                                      **extra)
        latency = time.perf_counter() - t0
        new = out[:, width:].tolist()
        results = []
        for p, ids, row, n_cut in zip(payloads, encoded, new, cut, strict=True):
            finish, why = "length", None
            gen = []
            for t in row:
                if t in self._eos:
                    finish, why = "stop", "eos"
                    gen.append(t)
                    break
                gen.append(t)
            if finish == "length" and p["stop"]:
                # a row that generate() ended at a stop string is filled with padding to the batch's longest row
                while gen and gen[-1] == self._pad:
                    gen.pop()
            n_completion = len(gen)
            text = self.tok.decode([t for t in gen if t not in self._eos], skip_special_tokens=True)
            cuts = [at for s in p["stop"] if (at := text.find(s)) >= 0]
            if cuts:  # the earliest stop string ends the text, whatever came after it
                text, finish, why = text[:min(cuts)], "stop", "stop_string"
            results.append(Result(
                id="", text=text, finish_reason=finish, prompt_tokens=len(ids), completion_tokens=n_completion,
                latency_s=round(latency, 4), model=self.cfg.model, model_version=self._version,
                truncated_tokens=n_cut, stop_reason=why,
            ))
        return results


# A shared prefix shorter than this is not worth a separate forward pass and a cache copy.
MIN_SHARED_PREFIX = 64


def shared_prefix(rows: list[list[int]]) -> list[int]:
    """The longest prefix every row starts with, leaving each row at least one token of its own (the last prompt
    token must run through the model to give the first new token's logits); [] when shorter than
    MIN_SHARED_PREFIX or for a single row."""
    if len(rows) < 2:
        return []
    limit = min(len(r) for r in rows) - 1
    first = rows[0]
    n = 0
    while n < limit and all(r[n] == first[n] for r in rows):
        n += 1
    return first[:n] if n >= MIN_SHARED_PREFIX else []


def _check_prefix_cache(model: Any, tok: Any, prefix: list[int], device: str) -> bool:
    """Does this model continue a copied prefix cache with padding after it exactly as it runs the whole sequence?
    (Models whose caches cannot be copied or repeated, or that ignore the attention mask in the middle, fail.)"""
    import copy

    import torch

    tail = prefix[-8:]
    try:
        with torch.inference_mode():
            full = model(input_ids=torch.tensor([prefix + tail], device=device)).logits[0, -1].float()
            kv = model(input_ids=torch.tensor([prefix], device=device), use_cache=True).past_key_values
            kv = copy.deepcopy(kv)
            kv.batch_repeat_interleave(2)
            pad = tok.pad_token_id if tok.pad_token_id is not None else 0
            ids = torch.tensor([prefix + [pad] * 3 + tail, prefix + [pad] * 3 + tail], device=device)
            mask = torch.ones_like(ids)
            mask[:, len(prefix):len(prefix) + 3] = 0
            pos = (mask.cumsum(-1) - 1)[:, len(prefix):]
            got = model(input_ids=ids[:, len(prefix):], attention_mask=mask, past_key_values=kv,
                        position_ids=pos).logits[:, -1].float()
    except Exception:  # noqa: BLE001 - any failure means: do not use it for this model
        return False
    # the same prediction, with logits as close as the model's precision allows (bf16 keeps ~3 significant digits,
    # and a cached prefix sums its attention in another order than the whole sequence)
    rel = 1e-3 if model.dtype == torch.float32 else 5e-2
    same_top = bool((got.argmax(-1) == full.argmax()).all())
    return same_top and bool(torch.allclose(got, full.expand_as(got), atol=rel * max(1.0, float(full.abs().max()))))


def end_token_ids(tok: Any, generation_config: Any, name: str) -> set[int]:
    """Token ids that end a generation: the generation config's and tokenizer's EOS, plus a document boundary
    token (instruct models' EOS is often their end-of-turn token, but a raw continuation ends at end-of-text)."""
    ids: set[int] = set()
    for src in (getattr(generation_config, "eos_token_id", None), tok.eos_token_id):
        if isinstance(src, int):
            ids.add(src)
        elif isinstance(src, (list, tuple)):
            ids.update(int(x) for x in src)
    special = set(tok.all_special_tokens)
    for tname in ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>"):
        if tname in special:
            ids.add(int(tok.convert_tokens_to_ids(tname)))
    if not ids:
        raise NiftError(f"model {name!r} declares no end-of-sequence token; cannot tell when it stops")
    return ids


def _model_version(folder: Path) -> str | None:
    """A fingerprint of the weights actually used: the demo model's GGUF sha256, else the hub commit."""
    meta = folder / "nift_model.json"
    if meta.is_file():
        try:
            return "gguf-sha256:" + json.loads(meta.read_text())["gguf_sha256"][:16]
        except (json.JSONDecodeError, KeyError):
            return None
    cfg = folder / "config.json"
    if cfg.is_file():
        try:
            commit = json.loads(cfg.read_text()).get("_commit_hash")
            return f"commit:{commit}" if commit else None
        except json.JSONDecodeError:
            return None
    return None
