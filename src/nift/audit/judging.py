"""The judge's calls, made through the request engine (`nift.llm.run_requests`): any backend (OpenAI, Anthropic,
their Batch APIs, a local OpenAI-compatible server, an in-process model), every reply stored in SQLite by request
hash the moment it arrives (a re-run or a crash repeats no paid call), retries and rate limits, and a cost ledger.

One `Request` per (row, prompt): the rendered Appendix-B prompt as the single user message, temperature and system
prompt from the judge's backend config, `judge_max_tokens` for the reply (the verdict comes first; the reasoning
that follows is not needed).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from nift.audit.config import AuditConfig
from nift.audit.judge import examples_for, parse_yes_no, render
from nift.audit.rows import AuditRow
from nift.errors import NiftError
from nift.llm.types import Usage

STORE = "requests.sqlite"


class Judge:
    """Classifies rows with the Appendix-B prompts; accumulates the engine's ledgers across calls."""

    chunk = 5000  # rows per engine call: bounds memory when every row is judged (judge_sample: null)

    def __init__(self, cfg: AuditConfig, cache_dir: Path, log: Callable[[str], Any] = print):
        assert cfg.judge is not None
        self.cfg = cfg
        self.backend = cfg.judge
        self.store = cache_dir / STORE
        self.log = log
        self.examples = {k: examples_for(k, cfg.examples) for k in ("instructional", "conversational")}
        self.usage: dict[str, Any] = {"requests": 0, "cached": 0, "new": 0, "failed": 0, "skipped": 0,
                                      "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0,
                                      "cost_unknown_requests": 0, "retries": 0}
        self.spent, self.spent_this_run = Usage(), Usage()  # over every call; the dollars rounded as written
        self.models: set[str] = set()

    def document(self, row: AuditRow) -> str:
        doc = row.judge_doc if self.cfg.judge_text == "full" else row.completion
        return doc[: self.cfg.judge_max_chars] if self.cfg.judge_max_chars else doc

    def prompt(self, kind: str, row: AuditRow) -> str:
        positive, negative = self.examples[kind]
        return render(kind, self.document(row), positive, negative)

    def classify(self, rows: list[AuditRow], kinds: list[str], desc: str = "judge") -> list[dict[str, Any]]:
        """One record per (row, prompt): label (True/False/None), how it was parsed, the reply, tokens, cost."""
        from nift.llm import Request, run_requests

        self.store.parent.mkdir(parents=True, exist_ok=True)
        reqs, meta = [], {}
        for i, row in enumerate(rows):
            for kind in kinds:
                rid = f"{i}:{kind}"  # row ids may repeat in a dataset; positions do not
                reqs.append(Request(id=rid, messages=[{"role": "user", "content": self.prompt(kind, row)}],
                                    max_tokens=self.cfg.judge_max_tokens))
                meta[rid] = (row, kind)
        results = run_requests(self.backend, reqs, self.store, budget_usd=self.cfg.judge_budget_usd,
                               progress=self.cfg.progress, log=self.log, desc=desc)
        s = results.summary
        self._account(s)
        if s.stopped == "budget":
            raise NiftError(f"the judge's budget (judge_budget_usd = {self.cfg.judge_budget_usd}) was reached; "
                            f"{len(results)} replies are stored in {self.store} and will not be paid again: raise "
                            "the budget or lower judge_sample and run the same command again")
        problems = {f.id: f"failed: {f.error}" for f in s.failed} | {k.id: f"skipped: {k.reason}" for k in s.skipped}
        out = []
        for rid, (row, kind) in meta.items():
            res = results.get(rid)
            rec: dict[str, Any] = {"id": row.id, "prompt": kind}
            if res is None:
                rec.update(label=None, parse="no_reply", error=problems.get(rid, "no result"))
            else:
                label, how = parse_yes_no(res.text)
                self.models.add(res.model_version or res.model)
                rec.update(label=label, parse=how, answer=res.text, finish_reason=res.finish_reason,
                           prompt_tokens=res.prompt_tokens, completion_tokens=res.completion_tokens,
                           cost_usd=res.cost_usd, cached=res.cached)
            out.append(rec)
        return out

    def _account(self, s: Any) -> None:
        u = self.usage
        u["requests"] += s.total
        u["cached"] += s.cached
        u["new"] += s.new
        u["failed"] += len(s.failed)
        u["skipped"] += len(s.skipped)
        u["retries"] += s.retries
        self.spent.add(s.usage_total, ndigits=6)
        self.spent_this_run.add(s.usage_new, ndigits=6)
        u.update(prompt_tokens=self.spent.prompt_tokens, completion_tokens=self.spent.completion_tokens,
                 cost_usd=self.spent.cost_usd, cost_unknown_requests=self.spent.cost_unknown,
                 cost_usd_this_run=self.spent_this_run.cost_usd)
        u["price_per_million"] = s.price

    def ledger(self) -> dict[str, Any]:
        return {"judge": dict(self.usage)}

    def describe(self) -> dict[str, Any]:
        b = self.backend
        return {"backend": b.backend, "model": b.model, "served_by": sorted(self.models),
                "base_url": b.base_url, "temperature": b.temperature, "max_tokens": self.cfg.judge_max_tokens,
                "prompts": list(self.cfg.judge_prompts), "sample": self.cfg.judge_sample,
                "text": self.cfg.judge_text, "max_chars": self.cfg.judge_max_chars}
