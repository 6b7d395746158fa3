"""`nift audit`: instructional / conversational content, heuristics, decontamination, filtering (the paper's §6).

Modules: `rows` (reading any dataset), `heuristics` (cheap per-row rules), `benchmarks` + `decontam` (n-gram overlap
with evaluation prompts), `judge` (the Appendix-B prompts, sampling, Yes/No parsing), `judging` (the judge's calls
through the distill engine), `summary` (Table 8), `stage` (the three passes), `config` (`AuditConfig`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["run"]


def __getattr__(name: str) -> Any:
    # The stage (and the libraries it needs) is imported on first use, not with `nift.audit.config`: the config
    # loader reads that, and loading a config must stay light.
    if name in __all__:
        from nift.audit import stage

        return getattr(stage, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
