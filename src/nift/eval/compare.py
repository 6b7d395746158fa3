"""`nift compare A B`: paired differences between two evaluations of the same benchmarks.

Run as: nift compare runs/x/eval/before runs/x/eval/after

Both folders hold `per_item.jsonl` (one row per metric and unit: an IFEval prompt or instruction, an MT-Bench
turn, an Arena-Hard question, an answer's judge-free signals). For each metric the units present in both are
paired; the table gives both means, the difference B - A with a paired bootstrap 95% CI, and a paired test that
fits the metric: McNemar for pass/fail metrics, Wilcoxon signed-rank for scores. Written: `compare.json`,
`compare.md` and `compare.png` (one panel per metric: the difference and its CI against zero).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any, NamedTuple

from nift.artifacts import MANIFEST, write_json
from nift.errors import InputError
from nift.eval import stats
from nift.io import enumerate_jsonl, read_json

PER_ITEM = "per_item.jsonl"
RESULTS = "results.json"


class Item(NamedTuple):
    metric: str
    unit: str
    value: float
    kind: str  # "binary" (pass/fail: 0 or 1) or a score
    better: str  # "+", "-" or ""


def read_per_item(path: Path) -> tuple[list[Item], list[str]]:
    """(items, warnings) of a per_item.jsonl, for `nift compare` and the study table alike.

    A value that is not a finite number (NaN, inf) is left out as missing and counted in a warning (NaN in a
    pass/fail column used to count as a pass); a pass/fail value other than 0, 1, true or false (0.7) is an error
    naming file and line, since McNemar's test would treat it as a pass."""
    items: list[Item] = []
    nonfinite: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate_jsonl(path):
        try:
            metric, unit, raw, kind = row["metric"], str(row["unit"]), row["value"], row["kind"]
            value = float(raw)
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{path}:{i}: expected metric, unit, value and kind") from None
        if not math.isfinite(value):
            nonfinite[metric].append(i)
            continue
        if kind == "binary" and (isinstance(raw, str) or value not in (0.0, 1.0)):
            raise InputError(f"{path}:{i}: {metric} is pass/fail but its value is {raw!r}: expected 0, 1, true "
                             "or false")
        items.append(Item(metric, unit, value, kind, row.get("better", "+")))
    warnings = [f"{path}: {len(lines)} value(s) of {metric} are not finite numbers (line {lines[0]}"
                f"{', ...' if len(lines) > 1 else ''}); left out as missing"
                for metric, lines in sorted(nonfinite.items())]
    return items, warnings


def _load(folder: Path) -> tuple[dict[str, dict[str, float]], dict[str, str], dict[str, str], dict[str, Any],
                                 list[str]]:
    """(values by metric and unit, kinds, better, results.json, warnings) of one finished eval folder."""
    path = folder / PER_ITEM
    if not path.is_file():
        hint = " (it is a run directory: give run_dir/eval/<name>)" if (folder / "eval").is_dir() else ""
        raise InputError(f"{folder} is not a finished `nift eval` folder: {PER_ITEM} is missing{hint}")
    if not (folder / MANIFEST).is_file():
        raise InputError(f"{folder} is not a finished `nift eval` folder: it has no {MANIFEST}, so the eval was "
                         f"interrupted (or is still running) and {PER_ITEM} may hold only part of the items; run "
                         "`nift eval` again (it resumes) and compare when it has finished")
    values: dict[str, dict[str, float]] = defaultdict(dict)
    kinds: dict[str, str] = {}
    better: dict[str, str] = {}
    items, warnings = read_per_item(path)
    for item in items:
        values[item.metric][item.unit] = item.value
        kinds[item.metric] = item.kind
        better[item.metric] = item.better
    results = {}
    if (folder / RESULTS).is_file():
        results = read_json(folder / RESULTS)
    return values, kinds, better, results, warnings


def compare(a: str | Path, b: str | Path, out: str | Path | None = None, n_boot: int = 2000, seed: int = 0,
            log=print) -> dict[str, Any]:
    a, b = Path(a), Path(b)
    va, ka, better, ra, wa = _load(a)
    vb, _kb, _, rb, wb = _load(b)
    out = Path(out) if out else a.parent / f"compare-{a.name}-vs-{b.name}"
    warnings = wa + wb + _check_comparable(ra, rb)
    rows = []
    for metric in sorted(set(va) & set(vb)):
        units = sorted(set(va[metric]) & set(vb[metric]))
        if not units:
            continue
        xa = [va[metric][u] for u in units]
        xb = [vb[metric][u] for u in units]
        kind = ka[metric]
        ci = stats.paired_bootstrap_diff_ci(xa, xb, n_boot=n_boot, seed=seed)
        test = stats.mcnemar(xa, xb) if kind == "binary" else stats.wilcoxon(xa, xb)
        rows.append({
            "metric": metric, "kind": kind, "better": better.get(metric, "+"), "n_paired": len(units),
            "unpaired_a": len(va[metric]) - len(units), "unpaired_b": len(vb[metric]) - len(units),
            "mean_a": sum(xa) / len(xa), "mean_b": sum(xb) / len(xb),
            "diff": ci.estimate, "ci95": [ci.low, ci.high], "test": test.as_dict(),
        })
    only = sorted(set(va) ^ set(vb))
    if not rows:
        raise InputError(f"{a} and {b} share no metric with paired units: nothing to compare")
    result = {"a": str(a), "b": str(b), "model_a": ra.get("model"), "model_b": rb.get("model"),
              "n_boot": n_boot, "seed": seed, "metrics": rows, "only_in_one": only, "warnings": warnings}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "compare.json", result)
    table = format_table(rows, a.name, b.name)
    (out / "compare.md").write_text(
        f"# {a.name} vs {b.name}\n\nA = `{a}`\n\nB = `{b}`\n\n{table}\n"
        + "".join(f"\n> warning: {w}\n" for w in warnings), encoding="utf-8")
    plot(rows, out / "compare.png", a.name, b.name)
    for w in warnings:
        log(f"warning: {w}")
    log(table)
    log(f"\nwritten: {out / 'compare.json'}, {out / 'compare.md'}, {out / 'compare.png'}")
    return result


def _check_comparable(ra: dict[str, Any], rb: dict[str, Any]) -> list[str]:
    out = []
    da, db = ra.get("data", {}), rb.get("data", {})
    for bench in sorted(set(da) & set(db)):
        if da[bench] != db[bench]:
            out.append(f"{bench}: the two evaluations used different benchmark files")
    ja, jb = ra.get("judge"), rb.get("judge")
    if ja and jb and ja != jb:
        out.append(f"the judges differ ({ja} vs {jb}): judge scores are not strictly comparable")
    return out


def _fmt(x: float, kind: str) -> str:
    return f"{x:.3f}" if abs(x) < 100 else f"{x:.1f}"


def format_table(rows: list[dict[str, Any]], name_a: str, name_b: str) -> str:
    head = f"| metric | n | {name_a} | {name_b} | diff (B-A) | 95% CI | test | p |"
    lines = [head, "|---|---:|---:|---:|---:|---|---|---:|"]
    for r in rows:
        p = r["test"]["p_value"]
        mark = ""
        if p is not None and p < 0.05 and r["better"] in "+-" and r["better"]:
            good = (r["diff"] > 0) == (r["better"] == "+")
            mark = " ▲" if good else " ▼"
        lines.append(
            f"| {r['metric']} | {r['n_paired']} | {_fmt(r['mean_a'], r['kind'])} | {_fmt(r['mean_b'], r['kind'])} "
            f"| {r['diff']:+.3f}{mark} | [{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}] | {r['test']['test']} "
            f"| {'' if p is None else f'{p:.3g}'} |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path, name_a: str, name_b: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(rows)
    fig, axes = plt.subplots(n, 1, figsize=(8, 0.62 * n + 1.2), squeeze=False)
    for ax, r in zip(axes[:, 0], rows, strict=True):
        lo, hi = r["ci95"]
        p = r["test"]["p_value"]
        significant = p is not None and p < 0.05
        color = "tab:gray"
        if significant and r["better"]:
            color = "tab:green" if (r["diff"] > 0) == (r["better"] == "+") else "tab:red"
        ax.errorbar([r["diff"]], [0], xerr=[[r["diff"] - lo], [hi - r["diff"]]], fmt="o", color=color, capsize=4)
        ax.axvline(0, color="black", lw=0.8)
        span = max(abs(lo), abs(hi), 1e-9) * 1.3
        ax.set_xlim(-span, span)
        ax.set_yticks([])
        ax.set_ylabel(r["metric"], rotation=0, ha="right", va="center", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.text(1.01, 0.5, f"{r['mean_a']:.3g} → {r['mean_b']:.3g}\np={'' if p is None else f'{p:.2g}'}",
                transform=ax.transAxes, fontsize=7, va="center")
    fig.suptitle(f"{name_b} − {name_a}: paired differences with 95% bootstrap CIs", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.9, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)
