"""`nift run CONFIG`: the whole method from one config — prepare, distill, audit, train, merge, eval before and
after, compare, report — each stage skipped when its manifest matches its config and inputs.

Run as: nift run quickstart          (the embedded default: no network, no GPU)
        nift run my.yaml --from train --until eval --set train.lr=1e-4

A stage that fails leaves the run resumable: finished stages keep their manifests, the failed one resumes from what
it stored (the distill store, training checkpoints), and the same command picks up there.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from nift import stages
from nift.errors import ConfigError, did_you_mean

# The pipeline's steps in order; `--from` / `--until` name these.
ORDER = stages.NAMES


def _eval_cfg(cfg: Any, model: str, name: str) -> Any:
    """Before and after are asked the same way: an `auto` template is chosen once, as for the student."""
    update: dict[str, Any] = {"model": model, "name": name}
    if cfg.eval.template == "auto" and not cfg.eval.template_model:
        update["template_model"] = cfg.train.model
    return cfg.eval.model_copy(update=update)


def after_model(run_dir: Path, steps: list[str]) -> str:
    """What "after" evaluates: the merged model when the run merges, else the trained adapter."""
    return str(run_dir / "merge" / "model") if "merge" in steps else str(run_dir / "train")


def compare_before_after(run_dir: Path, n_boot: int, seed: int, force: bool = False) -> str:
    """`nift compare eval/before eval/after` into eval/compare/, skipped when both evals are unchanged."""
    from nift.artifacts import manifest_hash, write_json
    from nift.eval.compare import compare

    before, after, out = run_dir / "eval" / "before", run_dir / "eval" / "after", run_dir / "eval" / "compare"
    ident = {"before": manifest_hash(before), "after": manifest_hash(after), "n_boot": n_boot, "seed": seed}
    marker = out / "inputs.json"
    if not force and marker.is_file() and (out / "compare.json").is_file():
        import json

        if json.loads(marker.read_text()) == ident:
            return "skipped"
    compare(before, after, out=out, n_boot=n_boot, seed=seed)
    write_json(marker, ident)
    return "ran"


def plan(cfg: Any, start: str | None = None, until: str | None = None) -> list[str]:
    """The steps this invocation runs: the configured ones, cut to [start, until]."""
    for flag, name in (("--from", start), ("--until", until)):
        if name is not None and name not in ORDER:
            raise ConfigError(f"{flag} {name!r} is not a stage.{did_you_mean(name, ORDER)}")
    wanted = [s for s in ORDER if s in cfg.pipeline.stages]
    lo = ORDER.index(start) if start else 0
    hi = ORDER.index(until) if until else len(ORDER) - 1
    if lo > hi:
        raise ConfigError(f"--from {start} comes after --until {until}")
    return [s for s in wanted if lo <= ORDER.index(s) <= hi]


def run(cfg: Any, start: str | None = None, until: str | None = None, force: bool = False, log=print) -> list[dict]:
    """Run the configured steps in order; returns one summary row per step (ran / skipped, seconds)."""
    run_dir = Path(cfg.run_dir)
    steps = plan(cfg, start, until)
    configured = [s for s in ORDER if s in cfg.pipeline.stages]
    summary: list[dict] = []
    log(f"[run] {run_dir}: {' -> '.join(steps)}")

    def step(label: str, fn, *args) -> Any:
        t0 = time.perf_counter()
        res = fn(*args, run_dir, force=force, log=log)
        skipped = bool(getattr(res, "skipped", False))
        summary.append({"step": label, "status": "skipped" if skipped else "ran",
                        "seconds": round(time.perf_counter() - t0, 1)})
        return res

    for s in steps:
        if s == "eval":
            # Before and after are asked the same way, in a conversation as the paper did (Table 1 "Template"), not
            # with the training template: `auto` resolves to the student's conversation template, for both.
            if cfg.pipeline.eval_before:
                step("eval before", stages.runner("eval"), _eval_cfg(cfg, cfg.train.model, "before"))
            if cfg.pipeline.eval_after:
                step("eval after", stages.runner("eval"), _eval_cfg(cfg, after_model(run_dir, configured), "after"))
            if cfg.pipeline.eval_before and cfg.pipeline.eval_after:
                t0 = time.perf_counter()
                status = compare_before_after(run_dir, cfg.eval.n_boot, cfg.eval.seed, force)
                summary.append({"step": "compare", "status": status, "seconds": round(time.perf_counter() - t0, 1)})
            continue
        step(s, stages.runner(s), getattr(cfg, s))
    log("[run] done:\n" + "\n".join(f"  {r['step']:12} {r['status']:8} {r['seconds']:8.1f} s" for r in summary))
    return summary
