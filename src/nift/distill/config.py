"""`DistillConfig`: the settings of `nift distill` (the teacher is a `nift.llm.config.BackendConfig`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from nift.config import StageConfig, volatile
from nift.llm.config import BackendConfig, RayConfig


class DistillConfig(StageConfig):
    """`nift distill`: a teacher continues every prepared prompt (temperature 0); every paid call is stored the
    moment it returns, so an interrupted run resumes without repeating it."""

    stage: ClassVar[str] = "distill"

    teacher: BackendConfig = Field(
        default_factory=BackendConfig, description="The teacher model and how to call it (default: the demo model "
        "smollm2-135m-instruct in-process).",
    )
    limit: int | None = Field(
        None, ge=1, description="Distill only the first N prepared prompts (prepare's order makes these a nested "
        "subsample); null = all.",
    )
    shard: str | None = Field(
        None, pattern=r"^\d+/\d+$", description="I/N: distill only the I-th (0-based) of N equal contiguous "
        "ranges of the prompts, to split a run over N machines; copy their stores together with `nift cache merge` "
        "and run once more without --shard to assemble the whole output, nothing sent again (docs/scaling.md). "
        "null = all.",
    )
    on_empty_prompt: Literal["skip", "error"] = Field(
        "skip", description="An empty or blank prompt: skip it (counted in the manifest) or stop with an error.",
    )
    on_failure: Literal["error", "skip"] = Field(
        "error", description="A request that still fails after retries (or gets a non-retryable 4xx): error = stop "
        "without writing the output (a re-run retries only those), skip = write the output without them (counted).",
    )
    budget_usd: float | None = volatile(
        default=None, gt=0, description="Stop cleanly before the teacher's total cost for this run's prompts "
        "(stored results included) would exceed this many US dollars; null = no cap.",
    )
    dry_run: bool = volatile(
        default=False, description="Print the estimated tokens and dollars for the remaining requests; spend nothing.",
    )
    cache: str | None = volatile(
        default=None, description="Request store (SQLite); null = run_dir/distill/cache.sqlite. Point several runs "
        "at one file to share results.",
    )
    @field_validator("shard")
    @classmethod
    def _shard_in_range(cls, v: str | None) -> str | None:
        if v is not None:
            i, n = (int(x) for x in v.split("/"))
            if n < 1 or i >= n:
                raise ValueError(f"shard {v}: needs 0 <= I < N (e.g. 0/4 .. 3/4)")
        return v

    ray: RayConfig = volatile(
        default_factory=RayConfig, description="Distributed generation on a Ray cluster for the hf and vllm teachers "
        "(--ray.address local|auto|HOST:PORT); results go to the same store as they complete, so a worker or driver "
        "that dies loses nothing stored",
    )
    progress: bool = volatile(default=True, description="Show a progress bar.")
