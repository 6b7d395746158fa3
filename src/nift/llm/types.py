"""The request and result types every backend speaks (`Request`, `text_request`, `Result`), the `Usage` sums, the
run summary, and the errors that steer the engine's retries."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from nift.errors import NiftError

if TYPE_CHECKING:
    from nift.llm.config import BackendConfig


@dataclass(frozen=True)
class Request:
    """One call to a model: EITHER a raw `prompt` (continued as text: the Completions endpoint, or an hf/vllm model
    continuing it without a chat template) OR chat `messages` ([{"role": "system"|"user"|"assistant", "content":
    str}, ...], multi-turn allowed; the backend's system prompt is added when the messages have none).

    `max_tokens` overrides the backend's for this request only (it is part of the cache key)."""

    id: str
    prompt: str | None = None
    messages: tuple[dict[str, str], ...] | list[dict[str, str]] | None = None
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError(f"request {self.id!r}: give exactly one of prompt= or messages=")
        if self.messages is not None:
            msgs = tuple(dict(m) for m in self.messages)
            for i, m in enumerate(msgs):
                if m.get("role") not in ("system", "user", "assistant") or not isinstance(m.get("content"), str):
                    raise ValueError(f"request {self.id!r}: message {i} needs role system|user|assistant and a "
                                     f"string content, got {m!r}")
            object.__setattr__(self, "messages", msgs)

    def text(self) -> str:
        """All the text the request carries (for emptiness checks and token estimates)."""
        if self.prompt is not None:
            return self.prompt
        return "\n".join(m["content"] for m in self.messages or ())


def text_request(id: str, text: str, cfg: BackendConfig, max_tokens: int | None = None) -> Request:
    """A request for a plain text in the form the config's endpoint asks for (chat: as the user message;
    completions: raw continuation)."""
    if cfg.endpoint == "completions":
        return Request(id=id, prompt=text, max_tokens=max_tokens)
    return Request(id=id, messages=[{"role": "user", "content": text}], max_tokens=max_tokens)


@dataclass
class Result:
    """What a backend returns for one request, plus what the engine adds (cost, cache flag).

    finish_reason: "stop" when the model ended by itself (EOS or a stop sequence), "length" when it hit max_tokens,
    or the provider's own value (e.g. "content_filter"). stop_reason, for "stop", says which where the backend
    knows: "eos" (an end token) or "stop_string" (one of the request's stop strings); None where it cannot tell (the
    OpenAI API does not say)."""

    id: str
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    model: str
    model_version: str | None = None
    cost_usd: float | None = None
    cached: bool = False
    truncated_tokens: int = 0
    stop_reason: str | None = None
    # With `top_logprobs`: per generated token, the most likely tokens as [{"token": str, "logprob": float}, ...].
    top_logprobs: list[list[dict[str, Any]]] | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("cached")
        if d["top_logprobs"] is None:
            d.pop("top_logprobs")
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any], **overrides: Any) -> Result:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        known.update(overrides)
        return cls(**known)


@dataclass
class Usage:
    """Requests, tokens and dollars summed over many results: the one place where usage is added up."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cost_unknown: int = 0  # results whose model has no price

    def add(self, r: Result | Usage, ndigits: int | None = None) -> None:
        """Count one result, or everything another `Usage` counted. `ndigits` rounds the running cost after the
        addition, for ledgers that keep a rounded total from call to call."""
        if isinstance(r, Usage):
            self.requests += r.requests
            self.prompt_tokens += r.prompt_tokens
            self.completion_tokens += r.completion_tokens
            self.cost_unknown += r.cost_unknown
            self.cost_usd += r.cost_usd
        else:
            self.requests += 1
            self.prompt_tokens += r.prompt_tokens
            self.completion_tokens += r.completion_tokens
            if r.cost_usd is None:
                self.cost_unknown += 1
            else:
                self.cost_usd += r.cost_usd
        if ndigits is not None:
            self.cost_usd = round(self.cost_usd, ndigits)


# ------------------------------------------------------------------------------------------------------ errors


class RetryableError(Exception):
    """A failure worth retrying: 429, 5xx, timeout, dropped connection, malformed response."""

    def __init__(self, message: str, retry_after: float | None = None, status: int | None = None):
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class RequestFailed(Exception):
    """A failure specific to one request that retrying will not fix (a 4xx such as 400 or 422)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class BackendAbort(NiftError):
    """A failure that every request would hit (bad key, unknown model, no permission): stop the whole run."""


class BudgetReached(NiftError):
    """The next request would cross --budget-usd; everything done so far is stored."""


@dataclass
class Failure:
    id: str
    error: str
    status: int | None = None
    attempts: int = 1


@dataclass
class Skip:
    id: str
    reason: str  # "empty" | "too_long"
    detail: str = ""


@dataclass
class RunSummary:
    """Everything a caller may want to know about a `run_requests` call besides the results."""

    total: int = 0
    cached: int = 0
    new: int = 0
    failed: list[Failure] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    truncated: int = 0
    truncated_tokens: int = 0
    retries: int = 0
    retry_reasons: dict[str, int] = field(default_factory=dict)
    stopped: str | None = None  # "budget" when --budget-usd stopped the run
    usage_new: Usage = field(default_factory=Usage)
    usage_total: Usage = field(default_factory=Usage)
    price: dict[str, Any] | None = None
    wall_s: float = 0.0
    batches: list[dict[str, Any]] = field(default_factory=list)
    # What went over the wire in this call, request by request (retries included): sent = answered + refused +
    # lost; answered results are stored unless the store failed. "Lost in transit": sent, but no usable answer came
    # back (timeout, dropped connection, garbled reply, 5xx) — the server may have done the work and billed it, up
    # to the prompt's tokens plus max_tokens at the price (lost_max_cost_usd).
    sent: int = 0
    answered: int = 0
    stored: int = 0
    refused: int = 0
    lost: int = 0
    lost_max_cost_usd: float = 0.0
    # Lost in transit over every run of this request set (also requests in flight when an earlier process died).
    lost_total: int = 0
    lost_total_max_cost_usd: float = 0.0
    lost_unpriced: int = 0

    def ledger(self) -> dict[str, Any]:
        """The cost ledger that goes into a manifest."""
        def u(x: Usage) -> dict[str, Any]:
            return {"requests": x.requests, "prompt_tokens": x.prompt_tokens,
                    "completion_tokens": x.completion_tokens, "cost_usd": round(x.cost_usd, 9),
                    "cost_unknown_requests": x.cost_unknown}
        return {"price_per_million": self.price, "total": u(self.usage_total), "this_run": u(self.usage_new),
                "cached_ids": self.cached, "retries": self.retries, "retry_reasons": dict(self.retry_reasons),
                "batches": self.batches,
                "requests_this_run": {"sent": self.sent, "answered": self.answered, "stored": self.stored,
                                      "refused": self.refused, "lost_in_transit": self.lost,
                                      "lost_max_cost_usd": round(self.lost_max_cost_usd, 9)},
                "lost_in_transit": {"requests": self.lost_total,
                                    "max_cost_usd": round(self.lost_total_max_cost_usd, 9),
                                    "cost_unknown_requests": self.lost_unpriced},
                # The most the provider can have billed for this request set: stored answers at their price plus
                # every lost request at its upper bound. --budget-usd caps this figure.
                "max_billed_usd": round(self.usage_total.cost_usd + self.lost_total_max_cost_usd, 9)}
