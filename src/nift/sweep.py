"""`nift sweep CONFIG --param KEY --values V...`: the pipeline once per value of one setting, with the plot of score
against that setting (the paper's Figure 2 for data size) and against the teacher's cost; and a study table: every
arm (the base model, each value) with 95% CIs, each value paired against the base model and against the control.

Run as: nift sweep quickstart --param distill.limit --values 24 48 96
        nift sweep my.yaml --param distill.teacher.model --values gpt-4o-mini gpt-4-0125-preview
        nift sweep my.yaml --param audit.drop --values '[]' '[uppercase_start]'
        nift sweep study/small        (the config's `sweep:` section: values, labels, seeds, control)

Each point is a full run in `RUN_DIR/sweep-<param>/<value>[-seed<S>]/`. Work is shared, never repeated: stages
upstream of the swept setting are linked from the first point (their manifests match, so they are skipped), the
"before" evaluation is linked when the swept setting cannot change it, and every point's teacher calls go through one
request store, so a data-size sweep over `distill.limit` (nested subsets, by prepare's key order) pays each prompt
once. With `seeds`, every value is trained once per `train.seed` and its seeds are pooled per unit in the study
table (`study.json`, `study.md`, see `nift.study`).
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
from nift.io import read_json

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
    results = read_json(results_path) if results_path.is_file() else {}
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


def run(config: str, param: str | None = None, values: list[str] | None = None, run_dir: str | None = None,
        log=print) -> list[dict[str, Any]]:
    """One pipeline run per (value, seed); `param`/`values` from the command line, else the config's `sweep:`."""
    base_cfg = load_config(config, top_overrides={"run_dir": run_dir} if run_dir else None)
    spec = base_cfg.sweep
    from_cli = param is not None
    if not from_cli:
        if not spec.param:
            raise ConfigError(f"{config}: give --param and --values, or a `sweep:` section with param and values")
        param = spec.param
    if (values is None) != (not from_cli):
        raise ConfigError("--param and --values go together")
    parsed = [yaml.safe_load(v) for v in values] if from_cli else list(spec.values)
    seeds: list[int | None] = list(spec.seeds) or [None]
    labels = [str(v) if isinstance(v, str) else json.dumps(v) for v in parsed] if from_cli or not spec.labels \
        else list(spec.labels)
    _check(param, parsed, labels, seeds, spec.control if not from_cli else None)
    section = param.split(".")[0]
    base = Path(base_cfg.run_dir) / f"sweep-{param}"
    upstream = pipeline.ORDER[: pipeline.ORDER.index(section)]
    share_before = section not in ("eval",) and param != "train.model"
    shared_cache = base / "teacher-cache.sqlite"
    rows = []
    points: dict[str, dict[str, Path]] = {}
    first: Path | None = None
    # Every point's config is built (and validated) before the first runs: a bad last value must not cost the
    # whole pipeline of the values before it.
    plan = []
    for value, label in zip(parsed, labels, strict=True):
        for seed in seeds:
            point = base / (_slug(value) + (f"-seed{seed}" if seed is not None else ""))
            overrides = _nested(param, value)
            if seed is not None:
                overrides.setdefault("train", {})["seed"] = seed
            if base_cfg.distill.cache is None and param != "distill.cache":
                overrides.setdefault("distill", {}).setdefault("cache", str(shared_cache))
            cfg = load_config(config, overrides=overrides, top_overrides={"run_dir": str(point)},
                              cli_names={tuple(param.split(".")): f"--param {param} (value {value!r})"})
            plan.append((value, label, seed, point, cfg))
    for value, label, seed, point, cfg in plan:
        if first is not None:
            for stage in upstream:
                _link(first / stage, point / stage)
            if share_before:
                _link(first / "eval" / "before", point / "eval" / "before")
        log(f"[sweep] {param} = {value!r}" + (f", train.seed = {seed}" if seed is not None else "")
            + f" -> {point}")
        pipeline.run(cfg, log=log)
        first = first or point
        rows.append({**_point_row(point, value), "label": label, "seed": seed})
        points.setdefault(label, {})[str(seed if seed is not None else cfg.train.seed)] = point
    write_json(base / "sweep.json", {"param": param, "points": rows})
    _write_table(base / "sweep.md", param, rows)
    _plot(base / "sweep.png", param, rows)
    log(f"[sweep] wrote {base / 'sweep.md'} and {base / 'sweep.png'}")
    if share_before and first is not None:
        _study(base, first, points, spec.control if not from_cli else None, log)
    return rows


def _check(param: str, values: list[Any], labels: list[str], seeds: list[int | None], control: str | None) -> None:
    """Every mistake in the sweep's shape, before the first (long) point runs."""
    if "." not in param:
        raise ConfigError(f"--param {param!r}: name a setting as SECTION.KEY, e.g. distill.limit or train.lr")
    section = param.split(".")[0]
    if section not in pipeline.ORDER or section == "report":
        raise ConfigError(f"--param {param!r}: {section!r} is not a pipeline stage ({', '.join(pipeline.ORDER)})")
    if len(values) < 2 and len(seeds) < 2:
        raise ConfigError("sweep values: a sweep needs at least two values (or one value with several seeds)")
    if len(labels) != len(values):
        raise ConfigError(f"sweep.labels: {len(labels)} labels for {len(values)} values; give one per value")
    if len(set(labels)) != len(labels) or len({_slug(v) for v in values}) != len(values):
        raise ConfigError("sweep values and labels must be distinct")
    if len(set(seeds)) != len(seeds):
        raise ConfigError("sweep.seeds must be distinct")
    if control is not None and control not in labels:
        raise ConfigError(f"sweep.control {control!r} is not one of the labels ({', '.join(labels)})")


def _study(base: Path, first: Path, points: dict[str, dict[str, Path]], control: str | None, log) -> None:
    """The study table: the base model and every arm with CIs, each arm against base and against the control."""
    from nift import study

    before = first / "eval" / "before"
    done = {label: {s: p / "eval" / "after" for s, p in seeds.items() if (p / "eval" / "after" / "per_item.jsonl")
                    .is_file()} for label, seeds in points.items()}
    if not (before / "per_item.jsonl").is_file() or not any(done.values()):
        return
    base_arm = study.Arm("base", {"-": before})
    trained = [study.Arm(label, evals) for label, evals in done.items() if evals]
    vs_base = {a.name: study.pair(base_arm, a) for a in trained}
    ctrl = next((a for a in trained if a.name == control), None)
    vs_control = {a.name: study.pair(ctrl, a) for a in trained if ctrl is not None and a is not ctrl}
    pairs = [*vs_base.values(), *vs_control.values()]
    # the headline speaks of the first arm that is not the control (the distilled one in the paper's design)
    treated = next((a.name for a in trained if a is not ctrl), None)
    results = read_json(before / "results.json")
    trained_with = (read_manifest(first / "train") or {}).get("config", {}).get("template")
    sentence = study.headline(vs_base[treated], vs_control.get(treated), results.get("template"),
                              trained_with) if treated else ""
    arms = [base_arm, *trained]
    table = study.arm_table(arms)
    warnings = [w for a in arms for w in a.warnings]
    for w in warnings:
        log(f"[sweep] warning: {w}")
    write_json(base / "study.json", {"headline": sentence, "control": control,
                                     "arms": {a.name: sorted(a.seeds) for a in arms}, "table": table,
                                     "pairs": pairs, "warnings": warnings})
    (base / "study.md").write_text(f"# Study: {base.name}\n\n" + study.markdown(arms, table, pairs, sentence),
                                   encoding="utf-8")
    log(f"[sweep] {sentence}\n[sweep] wrote {base / 'study.md'}")


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
