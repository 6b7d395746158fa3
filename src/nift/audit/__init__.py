"""`nift audit`: instructional / conversational content, heuristics, decontamination, filtering (the paper's §6).

Modules: `rows` (reading any dataset), `heuristics` (cheap per-row rules), `benchmarks` + `decontam` (n-gram overlap
with evaluation prompts), `judge` (the Appendix-B prompts, sampling, Yes/No parsing), `judging` (the judge's calls
through the distill engine), `summary` (Table 8), `stage` (the three passes).
"""

from nift.audit.stage import run

__all__ = ["run"]
