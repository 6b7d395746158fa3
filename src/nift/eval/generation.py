"""Answer generation for the benchmarks, through the request engine (`nift.llm.run_requests`).

Every answer is one engine request, stored in a SQLite store keyed by the fingerprint of the evaluated weights
(`target.fingerprint`): the engine's request key covers the exact prompt and the generation settings, the store file
covers the weights, so answers are generated once per (model, benchmark question, generation settings) and every
judge, every re-run and every other eval name of the run reuses them; an interrupted generation resumes where it
stopped. Backends: `hf` (transformers, batched, CPU or CUDA), `vllm` (when installed), `openai` (any
OpenAI-compatible endpoint).

Multi-turn benchmarks are generated turn by turn: turn t+1 sees the model's own answer to turn t. Questions with
different temperatures (MT-Bench's per-category ones) are sent in one engine call per temperature, with the loaded
model reused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nift.eval.templates import Rendered, clean_answer, render
from nift.llm.types import Usage


@dataclass(frozen=True)
class GenSettings:
    template: str
    max_new_tokens: int
    system_prompt: str | None = None


class Generator:
    """One evaluated model behind one backend, answering conversations through the engine's store."""

    def __init__(self, backend_cfg: Any, store_path: Path, progress: bool = True, log=print):
        from nift.llm.backends import make_backend

        self.cfg = backend_cfg
        self.store_path = store_path
        self.progress = progress
        self.log = log
        self.backend = make_backend(backend_cfg, log=log)
        self.tokenizer = getattr(self.backend, "tok", None) or getattr(self.backend, "tokenizer", None)
        self.usage = {"requests": 0, "cached": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0,
                      "failed": 0, "skipped": 0, "wall_s": 0.0}
        self.spent = Usage()  # over every call; the dollars rounded as written

    @property
    def is_endpoint(self) -> bool:
        return self.cfg.backend not in ("hf", "vllm")

    def special_tokens(self) -> list[str]:
        tok = self.tokenizer
        if tok is None:
            return []
        return [t for t in getattr(tok, "all_special_tokens", []) if t]

    def rendered(self, settings: GenSettings, turns: list[tuple[str, str | None]]) -> Rendered:
        # `chat` goes as messages: the backend (or the server) applies the model's template with its own BOS rules.
        return render(settings.template, turns, tokenizer=self.tokenizer, system=settings.system_prompt,
                      as_messages=settings.template == "chat")

    def answer(self, benchmark: str, items: list[dict[str, Any]], settings: GenSettings,
               temperature: Callable[[dict[str, Any]], float], n_turns: int | None = None) -> list[dict[str, Any]]:
        """Answer every turn of every item (`id`, `turns`); returns one row per (item, turn)."""
        from nift.llm import Request, run_requests

        rows: list[dict[str, Any]] = []
        answers: dict[str, list[str]] = {it["id"]: [] for it in items}
        max_turns = n_turns or max(len(it["turns"]) for it in items)
        for t in range(max_turns):
            live = [it for it in items if len(it["turns"]) > t and len(answers[it["id"]]) == t]
            by_temp: dict[float, list[dict[str, Any]]] = {}
            for it in live:
                by_temp.setdefault(float(temperature(it)), []).append(it)
            for temp, group in sorted(by_temp.items()):
                reqs, meta = [], {}
                stop: tuple[str, ...] = ()
                for it in group:
                    turns = [(q, a) for q, a in zip(it["turns"][:t], answers[it["id"]], strict=True)]
                    turns.append((it["turns"][t], None))
                    r = self.rendered(settings, turns)
                    stop = r.stop
                    rid = f"{benchmark}:{it['id']}:turn{t}"
                    if r.messages is not None:
                        reqs.append(Request(id=rid, messages=r.messages, max_tokens=settings.max_new_tokens))
                    else:
                        reqs.append(Request(id=rid, prompt=r.prompt, max_tokens=settings.max_new_tokens))
                    meta[rid] = it
                cfg = self.cfg.model_copy(update={"temperature": temp, "stop": list(stop),
                                                  "max_tokens": settings.max_new_tokens})
                self.backend.cfg = cfg  # reuse the loaded model; the payload reads temperature and stop from here
                desc = f"{benchmark} turn {t + 1}" + (f" T={temp}" if temp else "")
                res = run_requests(cfg, reqs, self.store_path, progress=self.progress, log=self.log,
                                   backend=self.backend, desc=desc)
                self._account(res.summary)
                failures = {f.id: f.error for f in res.summary.failed}
                failures.update({s.id: f"skipped: {s.reason} {s.detail}".strip() for s in res.summary.skipped})
                for req in reqs:
                    it = meta[req.id]
                    row = {"benchmark": benchmark, "id": it["id"], "turn": t, "question": it["turns"][t],
                           "template": settings.template, "temperature": temp,
                           "max_new_tokens": settings.max_new_tokens}
                    result = res.get(req.id)
                    if result is None:
                        row.update({"status": "failed", "error": failures.get(req.id, "no result"), "answer": None})
                        rows.append(row)
                        continue
                    text, hit_stop = clean_answer(result.text, stop, self.special_tokens())
                    finish = "stop" if hit_stop else result.finish_reason
                    answers[it["id"]].append(text)
                    row.update({"status": "ok", "answer": text, "finish_reason": finish,
                                "ended_by": ended_by(result, hit_stop),
                                "prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
                                "truncated_prompt_tokens": result.truncated_tokens, "latency_s": result.latency_s,
                                "cost_usd": result.cost_usd, "model": result.model,
                                "model_version": result.model_version, "cached": result.cached})
                    rows.append(row)
        rows.sort(key=lambda r: (r["turn"], r["id"]))
        return rows

    def _account(self, summary: Any) -> None:
        u = self.usage
        u["requests"] += summary.total
        u["cached"] += summary.cached
        self.spent.add(summary.usage_total, ndigits=6)
        u.update(prompt_tokens=self.spent.prompt_tokens, completion_tokens=self.spent.completion_tokens,
                 cost_usd=self.spent.cost_usd)
        u["failed"] += len(summary.failed)
        u["skipped"] += len(summary.skipped)
        u["wall_s"] = round(u["wall_s"] + summary.wall_s, 3)

    def close(self) -> None:
        self.backend.close()


def ended_by(result: Any, hit_stop: bool) -> str:
    """How an answer ended: "eos" (the model's own end token), "stop_string" (the template's stop string, found by
    the backend or by FastChat's post-processing), "length" (the token limit), or "stop" where an endpoint stopped
    without saying which of the first two."""
    if hit_stop:
        return "stop_string"
    if result.finish_reason != "stop":
        return "length" if result.finish_reason in ("length", "max_tokens") else str(result.finish_reason)
    return getattr(result, "stop_reason", None) or "stop"
