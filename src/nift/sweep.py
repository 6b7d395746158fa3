"""`nift sweep CONFIG --param KEY --values V...`: the pipeline once per value of one setting, with the plot of score
against that setting (the paper's Figure 2 for data size) and against the teacher's cost.

Run as: nift sweep quickstart --param distill.limit --values 24 48 96
        nift sweep my.yaml --param distill.teacher.model --values gpt-4o-mini gpt-4-0125-preview
        nift sweep my.yaml --param audit.drop --values '[]' '[uppercase_start]'

Each point is a full run in `RUN_DIR/sweep-<param>/<value>/`. Work is shared, never repeated: stages upstream of the
swept setting are linked from the first point (their manifests match, so they are skipped), the "before" evaluation
is linked when the swept setting cannot change it, and every point's teacher calls go through one request store, so
a data-size sweep over `distill.limit` (nested subsets, by prepare's key order) pays each prompt once.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from nift import pipeline
from nift.artifacts import read_manifest, write_json
from nift.config import load_config
from nift.errors import ConfigError

# Metrics plotted when present in eval/after/results.json: (label, path in results.json).
METRICS = [
    ("IFEval prompt-level strict", ("benchmarks", "ifeval", "prompt_level_strict_acc")),
    ("IFEval instruction-level loose", ("benchmarks", "ifeval", "inst_level_loose_acc")),
    ("MT-Bench score", ("benchmarks", "mt_bench", "score")),
    ("Arena-Hard win rate", ("benchmarks", "arena_hard", "win_rate")),
    ("stopped by itself (EOS before the limit)", ("signals", "all", "stop_rate")),
]


def _dig(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


def _slug(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "empty"


def _nested(param: str, value: Any) -> dict[str, Any]:
    parts = param.split(".")
    out: dict[str, Any] = {}
    node = out
    for part in parts[1:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return {parts[0]: out}


def _link(src: Path, dst: Path) -> None:
    if dst.exists() or dst.is_symlink() or not src.exists():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.symlink_to(src.resolve(), target_is_directory=True)


def _point_row(run_dir: Path, value: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"value": value, "run_dir": str(run_dir)}
    results_path = run_dir / "eval" / "after" / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for label, path in METRICS:
        v = _dig(results, path)
        if isinstance(v, (int, float)):
            row[label] = v
    total = ((read_manifest(run_dir / "distill") or {}).get("cost") or {}).get("total") or {}
    row["teacher_cost_usd"] = total.get("cost_usd")
    row["teacher_tokens"] = (total.get("prompt_tokens") or 0) + (total.get("completion_tokens") or 0)
    examples = (read_manifest(run_dir / "train") or {}).get("stats", {}).get("examples")
    row["train_examples"] = examples.get("train") if isinstance(examples, dict) else examples
    return row


def run(config: str, param: str, values: list[str], run_dir: str | None = None, log=print) -> list[dict[str, Any]]:
    if "." not in param:
        raise ConfigError(f"--param {param!r}: name a setting as SECTION.KEY, e.g. distill.limit or train.lr")
    section = param.split(".")[0]
    if section not in pipeline.ORDER or section == "report":
        raise ConfigError(f"--param {param!r}: {section!r} is not a pipeline stage ({', '.join(pipeline.ORDER)})")
    parsed = [yaml.safe_load(v) for v in values]
    if len(parsed) < 2:
        raise ConfigError("--values: a sweep needs at least two values")
    base_cfg = load_config(config, top_overrides={"run_dir": run_dir} if run_dir else None)
    base = Path(base_cfg.run_dir) / f"sweep-{param}"
    upstream = pipeline.ORDER[: pipeline.ORDER.index(section)]
    share_before = section not in ("eval",) and param != "train.model"
    shared_cache = base / "teacher-cache.sqlite"
    rows = []
    first: Path | None = None
    for value in parsed:
        point = base / _slug(value)
        overrides = _nested(param, value)
        if base_cfg.distill.cache is None and param != "distill.cache":
            overrides.setdefault("distill", {}).setdefault("cache", str(shared_cache))
        cfg = load_config(config, overrides=overrides, top_overrides={"run_dir": str(point)},
                          cli_names={tuple(param.split(".")): f"--param {param}"})
        if first is not None:
            for stage in upstream:
                _link(first / stage, point / stage)
            if share_before:
                _link(first / "eval" / "before", point / "eval" / "before")
        log(f"[sweep] {param} = {value!r} -> {point}")
        pipeline.run(cfg, log=log)
        first = first or point
        rows.append(_point_row(point, value))
    write_json(base / "sweep.json", {"param": param, "points": rows})
    _write_table(base / "sweep.md", param, rows)
    _plot(base / "sweep.png", param, rows)
    log(f"[sweep] wrote {base / 'sweep.md'} and {base / 'sweep.png'}")
    return rows


def _metric_labels(rows: list[dict[str, Any]]) -> list[str]:
    return [label for label, _ in METRICS if any(label in r for r in rows)]


def _write_table(path: Path, param: str, rows: list[dict[str, Any]]) -> None:
    labels = _metric_labels(rows)
    head = ["value", *labels, "teacher cost (USD)", "teacher tokens", "train examples"]
    lines = [f"# Sweep over `{param}`", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [json.dumps(r["value"]) if not isinstance(r["value"], str) else r["value"]]
        cells += [f"{r[m]:.4f}" if m in r else "" for m in labels]
        cells += [f"{r['teacher_cost_usd']:.4f}" if isinstance(r.get("teacher_cost_usd"), (int, float)) else "",
                  str(r.get("teacher_tokens") or ""), str(r.get("train_examples") or "")]
        lines.append("| " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")


def _plot(path: Path, param: str, rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = _metric_labels(rows)
    numeric = all(isinstance(r["value"], (int, float)) for r in rows)
    xs = [r["value"] for r in rows] if numeric else list(range(len(rows)))
    costs = [r.get("teacher_cost_usd") or 0.0 for r in rows]
    use_tokens = not any(costs)
    cost_x = [r.get("teacher_tokens") or 0 for r in rows] if use_tokens else costs
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for label in labels:
        ys = [r.get(label) for r in rows]
        axes[0].plot(xs, ys, marker="o", label=label)
        axes[1].plot(cost_x, ys, marker="o", label=label)
    axes[0].set_xlabel(param)
    if not numeric:
        axes[0].set_xticks(xs, [str(r["value"]) for r in rows], rotation=20)
    elif min(xs) > 0 and max(xs) / min(xs) >= 10:
        axes[0].set_xscale("log")
    axes[1].set_xlabel("teacher tokens (local teacher: $0)" if use_tokens else "teacher cost (USD)")
    for ax in axes:
        ax.set_ylabel("score")
        ax.grid(alpha=0.3)
    axes[0].set_title(f"score vs {param}")
    axes[1].set_title("score vs cost")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
