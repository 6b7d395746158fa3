"""`nift report`: one self-contained HTML page (and a Markdown twin) about a run.

Run as: nift report --run-dir runs/x

Written into `run_dir/report/`: `report.html` (inline CSS, images as base64 PNG, no script, nothing fetched),
`report.md` with its PNGs beside it (`lengths.png`, `loss.png`, `results.png`, `timings.png`, `compare.png`),
`compare/` when the report ran the before/after comparison itself, and `manifest.json` last.

Sections, each shown when its stage is in the run (otherwise it says what to run): overview, before/after results
with confidence intervals and paired tests, side-by-side example answers (the paper's Tables 10-14), data statistics
with length histograms, the audit table (Table 8, flags, drops), training (loss curve, final losses), merge, the cost
ledger, timings, and the resolved config of every stage.

Modules: `stage` (`run`, `build`), `config` (`ReportConfig`), `rundir` (reading a run), one module per group
of sections, `charts`, `formatting` and `document` (HTML and Markdown).
"""

from __future__ import annotations

from typing import Any

__all__ = ["build", "run"]


def __getattr__(name: str) -> Any:
    # The stage (and matplotlib, which its charts need) is imported on first use, not with `nift.report.config`:
    # the config loader reads that, and loading a config must stay light.
    if name in __all__:
        from nift.report import stage

        return getattr(stage, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
