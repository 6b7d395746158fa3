"""`nift report` as a stage: read the run directory, build the sections, write `report.html` and `report.md`.

The report's inputs are the manifests of every stage the run holds (and the `nift compare` output, when there is
one), so a re-run is skipped while nothing changed and redone as soon as a stage finishes or re-runs.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nift import __version__
from nift.artifacts import StageContext, StageResult, atomic_open, run_stage
from nift.config import scrub
from nift.errors import InputError
from nift.report import document, examples, results, sections, spending, training
from nift.report.config import ReportConfig
from nift.report.rundir import RunDir

HTML = "report.html"
MARKDOWN = "report.md"


def build(cfg: ReportConfig, run: RunDir, out_dir: Path) -> document.Document:
    """The report of `run` as a document (figures included); `out_dir` receives a comparison it computes."""
    train_section, train_cards = training.training(run)
    results_section, result_cards, summary = results.results(run, cfg.before, cfg.after, out_dir, cfg.n_boot,
                                                             cfg.seed)
    parts: list[document.Section | None] = [
        sections.overview(run, train_cards + result_cards, cfg.before, cfg.after, summary),
        results_section,
        examples.examples(run, cfg.before, cfg.after, cfg.examples, cfg.example_ids, cfg.example_max_chars),
        sections.data(run, cfg.bins),
        sections.audit(run),
        train_section,
        training.merge(run),
        spending.cost(run),
        sections.timings(run),
        sections.config(run),
    ]
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return document.Document(
        title=cfg.title or f"nift run report: {run.path.resolve().name}",
        subtitle=[f"Run directory `{run.path.resolve()}` · written {now} by nift {__version__}",
                  "Non-instructional fine-tuning: documents cut in two, a teacher continues the first part, the "
                  "student learns prompt → continuation; evaluated before and after."],
        sections=[s for s in parts if s is not None],
    )


def write(doc: document.Document, out_dir: Path) -> None:
    for fig in document.figures(doc):
        with atomic_open(out_dir / fig.name, "wb") as f:
            f.write(fig.png)
    # The report is the file meant to be mailed: no credential reaches it, whichever part of the run it came from.
    with atomic_open(out_dir / MARKDOWN) as f:
        f.write(scrub(document.to_markdown(doc)))
    with atomic_open(out_dir / HTML) as f:  # last among the outputs: the page people open
        f.write(scrub(document.to_html(doc)))


def run(cfg: ReportConfig, run_dir: str | Path, force: bool = False, log: Callable[[str], Any] = print
        ) -> StageResult:
    """Write `run_dir/report/report.html` and `report.md` from whatever stages `run_dir` holds."""
    run_dir = Path(run_dir)
    rd = RunDir.open(run_dir)
    rd.order_evals((cfg.before, cfg.after))
    finished = rd.finished()
    if not finished:
        raise InputError(f"{run_dir} holds no finished stage (no <stage>/manifest.json): run `nift prepare "
                         f"--run-dir {run_dir}` (or `nift run`) first")
    inputs = {s.name: s.dir for s in finished}

    def body(ctx: StageContext) -> None:
        doc = build(cfg, rd, ctx.dir)
        write(doc, ctx.dir)
        ctx.stats.update({"sections": [s.id for s in doc.sections],
                          "missing": [s.id for s in doc.sections if s.missing],
                          "stages": [s.name for s in finished],
                          "figures": [f.name for f in document.figures(doc)]})

    result = run_stage("report", run_dir / "report", cfg, body, inputs=inputs,
                       fingerprints=rd.compare_fingerprint(cfg.before, cfg.after), force=force, log=log)
    if not result.skipped:
        missing = result.manifest["stats"]["missing"]
        log(f"[report] {result.dir / HTML} (and {MARKDOWN})"
            + (f"; sections without their stage: {', '.join(missing)}" if missing else ""))
    return result
