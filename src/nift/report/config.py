"""`ReportConfig`: the settings of `nift report`."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from nift.config import StageConfig


class ReportConfig(StageConfig):
    """`nift report`: one self-contained HTML page (and its Markdown twin) about a run: the config, data
    statistics with length histograms, the audit table, the cost ledger, the loss curve, before/after results with
    confidence intervals and paired tests, side-by-side example answers (as the paper's Tables 10-14) and the
    timings of every stage. Built from whatever stages the run directory holds; missing ones are named."""

    stage: ClassVar[str] = "report"

    title: str | None = Field(None, description="Report title; null = 'nift run report: <run dir name>'.")
    before: str = Field(
        "before", description="Name of the evaluation of the model before fine-tuning (run_dir/eval/<name>).",
    )
    after: str = Field(
        "after", description="Name of the evaluation of the fine-tuned model (run_dir/eval/<name>).",
    )
    examples: int = Field(
        4, ge=0, le=50, description="Side-by-side example answers (same prompt, before vs after), chosen "
        "deterministically: one per kind of change first (stopped by itself after hitting the limit before, empty "
        "before, instruction followed after, repetition gone, and the same changes for the worse), then in "
        "benchmark and id order; 0 = none.",
    )
    example_ids: list[str] = Field(
        default_factory=list, description="Answers to show first, as BENCHMARK:ID (e.g. ifeval:1000) or ID.",
    )
    example_max_chars: int = Field(
        1500, ge=100, description="Answers longer than this are cut in the report (marked; the full text is in "
        "eval/<name>/answers/).",
    )
    bins: int = Field(30, ge=5, le=200, description="Bins of the length histograms.")
    n_boot: int = Field(
        2000, ge=100, description="Bootstrap resamples for the intervals the report computes itself (per-model "
        "intervals from per_item.jsonl; the paired comparison when the run holds no `nift compare` output).",
    )
    seed: int = Field(0, description="Seed of those bootstrap resamples.")
