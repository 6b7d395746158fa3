"""LLM judging through the request engine (`nift.llm`): cached by request hash, resumable, cost-accounted.

Any distill backend can judge (OpenAI, Anthropic, an OpenAI-compatible local server, even an in-process model).
Each judgment is parsed by the benchmark's parser. A judgment whose verdict is missing is retried once, as
arena-hard-auto does it: the conversation goes on with the judge's first answer and a request to finish with the
verdict (a new request, so the engine's cache stays exact), and the two answers are parsed together. What is still
unreadable is kept with status `unparseable` (and the reason) and reported; it is never scored.
Every judgment records the judge model, its version as the API reported it, tokens and cost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nift.llm.types import Usage


@dataclass
class JudgeTask:
    id: str
    messages: list[dict[str, str]]
    parse: Callable[[str], tuple[Any, str]]  # -> (value, status); status "ok" or a reason
    follow_up: str = ""
    retry_on: tuple[str, ...] = ("missing",)
    # Reads the whole result instead of its text (AlpacaEval's weighted judge needs the log-probabilities).
    parse_result: Callable[[Any], tuple[Any, str]] | None = None


class Judge:
    def __init__(self, cfg: Any, store_path: Path, progress: bool = True, log=print, budget_usd: float | None = None):
        self.cfg = cfg
        self.store_path = store_path
        self.progress = progress
        self.log = log
        self.budget_usd = budget_usd
        self.backend = None
        self.usage = {"requests": 0, "cached": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0,
                      "cost_unknown_requests": 0, "failed": 0, "retried": 0, "unparseable": 0, "wall_s": 0.0}
        self.spent = Usage()  # over every call; the dollars rounded as written

    def describe(self) -> dict[str, Any]:
        return {"backend": self.cfg.backend, "model": self.cfg.model, "base_url": self.cfg.base_url,
                "temperature": self.cfg.temperature, "max_tokens": self.cfg.max_tokens}

    def _run(self, requests: list[Any], desc: str, overrides: dict[str, Any] | None = None) -> Any:
        from nift.llm import run_requests
        from nift.llm.backends import make_backend

        if self.backend is None:
            self.backend = make_backend(self.cfg, log=self.log)
        cfg = self.cfg.model_copy(update=overrides) if overrides else self.cfg
        self.backend.cfg = cfg  # the loaded backend builds its payloads from this
        spent = self.usage["cost_usd"]
        budget = None if self.budget_usd is None else max(0.0, self.budget_usd - spent)
        res = run_requests(cfg, requests, self.store_path, budget_usd=budget, progress=self.progress,
                           log=self.log, backend=self.backend, desc=desc)
        s = res.summary
        u = self.usage
        u["requests"] += s.total
        u["cached"] += s.cached
        self.spent.add(s.usage_total, ndigits=6)
        u.update(prompt_tokens=self.spent.prompt_tokens, completion_tokens=self.spent.completion_tokens,
                 cost_usd=self.spent.cost_usd, cost_unknown_requests=self.spent.cost_unknown)
        u["wall_s"] = round(u["wall_s"] + s.wall_s, 3)
        if s.stopped == "budget":
            from nift.errors import NiftError

            raise NiftError(f"the judge budget (--judge-budget-usd {self.budget_usd}) is spent; every judgment so "
                            "far is stored: raise the budget and run the same command again to go on")
        return res

    def judge(self, tasks: list[JudgeTask], max_tokens: int, desc: str,
              overrides: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        """Judge every task; returns {task id: outcome}. `overrides` change judge settings for these tasks only
        (a seed for a repeated judgment, AlpacaEval's logprobs); they are part of the request keys."""
        from nift.llm import Request

        first = self._run([Request(id=t.id, messages=t.messages, max_tokens=max_tokens) for t in tasks], desc,
                          overrides)
        failed = {f.id: f.error for f in first.summary.failed}
        failed.update({s.id: f"skipped: {s.reason}" for s in first.summary.skipped})
        out: dict[str, dict[str, Any]] = {}
        retry: list[tuple[JudgeTask, Any]] = []
        for t in tasks:
            r = first.get(t.id)
            if r is None:
                out[t.id] = {"value": None, "status": "failed", "error": failed.get(t.id, "no result"),
                             "attempts": 1, "judgment": None}
                self.usage["failed"] += 1
                continue
            value, status = t.parse_result(r) if t.parse_result else t.parse(r.text)
            out[t.id] = self._outcome(value, status, [r])
            if status in t.retry_on:
                retry.append((t, r))
        if retry:
            self.usage["retried"] += len(retry)
            reqs = [Request(id=t.id + "#retry", max_tokens=max_tokens, messages=[
                *t.messages, {"role": "assistant", "content": r.text}, {"role": "user", "content": t.follow_up}])
                for t, r in retry]
            second = self._run(reqs, desc + " (retry)", overrides)
            for t, r in retry:
                r2 = second.get(t.id + "#retry")
                if r2 is None:
                    out[t.id]["status"] = "unparseable:" + out[t.id]["status"] + "+retry_failed"
                    continue
                # arena-hard: the judgment is the first answer followed by the second, parsed as one.
                value, status = t.parse(r.text + "\n" + r2.text)
                o = self._outcome(value, status, [r, r2])
                if status != "ok":
                    o["status"] = "unparseable:" + status
                out[t.id] = o
        for o in out.values():
            if o["status"] in ("ok", "failed"):
                continue
            if not o["status"].startswith("unparseable:"):
                o["status"] = "unparseable:" + o["status"]
            self.usage["unparseable"] += 1
        return out

    @staticmethod
    def _outcome(value: Any, status: str, results: list[Any]) -> dict[str, Any]:
        spent = Usage()
        for r in results:
            spent.add(r)
        return {
            "value": value if status == "ok" else None, "status": status, "attempts": len(results),
            "judgment": "\n".join(r.text for r in results),
            "judge_model": results[-1].model, "judge_version": results[-1].model_version,
            "prompt_tokens": spent.prompt_tokens, "completion_tokens": spent.completion_tokens,
            "cost_usd": None if spent.cost_unknown else round(spent.cost_usd, 6),
            "cached": all(r.cached for r in results),
        }

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()
