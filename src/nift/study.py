"""Arms of a study and how they compare: every arm's metrics with 95% CIs, and paired differences with tests.

An arm is a model evaluated on the same prompts: `base` (the student before training, `eval/before`) and one per
sweep value (e.g. `train.data: audit` = distilled, `reference` = undistilled, the paper's control of Table 1 IDs 3
and 12), trained once per seed. Each arm's per-unit values (an IFEval instruction or prompt, an answer's judge-free
signal) are averaged over its seeds, so a unit is one paired observation whatever the number of seeds:

- an arm's value: the mean over units, with a percentile bootstrap 95% CI over units;
- a pair (B vs A): mean(B) - mean(A) over the units both have, with a paired bootstrap 95% CI, and McNemar's test
  when both arms are single pass/fail outcomes per unit, else the Wilcoxon signed-rank test on the seed means;
- each seed's own value is kept too, so seed-to-seed spread can be read beside the intervals.

`headline` puts the result against the paper's claim in one sentence (used by `nift report` and the study table).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from nift.eval import stats
from nift.eval.compare import read_per_item as read_per_item_file

# Metrics of the study table: (per_item metric, label, better). IFEval first (the paper's instruction-following
# claim), then the judge-free signals of the paper's Tables 10-14.
METRICS = [
    ("ifeval/inst_loose", "IFEval instruction-level loose", "+"),
    ("ifeval/inst_strict", "IFEval instruction-level strict", "+"),
    ("ifeval/prompt_loose", "IFEval prompt-level loose", "+"),
    ("ifeval/prompt_strict", "IFEval prompt-level strict", "+"),
    ("mt_bench/score", "MT-Bench score (1-10)", "+"),
    ("arena_hard/score", "Arena-Hard score", "+"),
    ("signals/stopped", "stopped by itself (EOS)", "+"),
    ("signals/stop_string", "cut at the template's stop string", ""),
    ("signals/hit_limit", "hit the token limit", "-"),
    ("signals/empty", "empty answer", "-"),
    ("signals/repeated_ngram_share", "repeated 4-grams (share)", "-"),
    ("signals/echo", "echoes the prompt", "-"),
    ("signals/words", "mean words", ""),
]
PROPORTIONS = {m for m, _, _ in METRICS if not m.endswith(("/score", "/words"))}
# The metric the headline judges the paper's instruction-following claim by, and the one for learning to stop.
CLAIM_METRIC = "ifeval/inst_loose"
STOP_METRIC = "signals/stopped"


def read_per_item(eval_dir: Path, warnings: list[str] | None = None) -> dict[str, dict[str, tuple[float, str]]]:
    """metric -> unit -> (value, kind) from one evaluation's per_item.jsonl; values that are not finite numbers are
    left out as missing and counted in `warnings`."""
    out: dict[str, dict[str, tuple[float, str]]] = defaultdict(dict)
    items, found = read_per_item_file(eval_dir / "per_item.jsonl")
    for item in items:
        out[item.metric][item.unit] = (item.value, item.kind)
    if warnings is not None:
        warnings.extend(found)
    return out


class Arm:
    """One model condition: its seeds' per-item values, pooled per unit."""

    def __init__(self, name: str, evals: dict[str, Path]):
        self.name = name
        self.warnings: list[str] = []  # values left out as missing (NaN, inf)
        self.seeds = {seed: read_per_item(d, self.warnings) for seed, d in evals.items()}

    def units(self, metric: str) -> dict[str, float]:
        """unit -> the mean over seeds (units every seed answered)."""
        per_seed = [s.get(metric, {}) for s in self.seeds.values()]
        if not per_seed or not all(per_seed):
            return {}
        shared = set.intersection(*(set(p) for p in per_seed))
        return {u: sum(p[u][0] for p in per_seed) / len(per_seed) for u in shared}

    def binary(self, metric: str) -> bool:
        kinds = {k for s in self.seeds.values() for _, k in s.get(metric, {}).values()}
        return len(self.seeds) == 1 and kinds == {"binary"}

    def seed_values(self, metric: str) -> dict[str, float]:
        return {seed: sum(v for v, _ in s[metric].values()) / len(s[metric])
                for seed, s in self.seeds.items() if s.get(metric)}


def arm_table(arms: list[Arm], n_boot: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    rows = []
    for arm in arms:
        for metric, label, _ in METRICS:
            units = arm.units(metric)
            if not units:
                continue
            iv = stats.bootstrap_mean_ci(list(units.values()), n_boot=n_boot, seed=seed)
            rows.append({"arm": arm.name, "metric": metric, "label": label, "n": len(units),
                         "value": iv.estimate, "ci95": [iv.low, iv.high], "seeds": arm.seed_values(metric)})
    return rows


def pair(a: Arm, b: Arm, n_boot: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """B vs A on every metric both have, paired over shared units."""
    rows = []
    for metric, label, better in METRICS:
        ua, ub = a.units(metric), b.units(metric)
        shared = sorted(set(ua) & set(ub))
        if not shared:
            continue
        xa, xb = [ua[u] for u in shared], [ub[u] for u in shared]
        ci = stats.paired_bootstrap_diff_ci(xa, xb, n_boot=n_boot, seed=seed)
        test = stats.mcnemar(xa, xb) if a.binary(metric) and b.binary(metric) else stats.wilcoxon(xa, xb)
        rows.append({"a": a.name, "b": b.name, "metric": metric, "label": label, "better": better,
                     "n": len(shared), "mean_a": sum(xa) / len(xa), "mean_b": sum(xb) / len(xb),
                     "diff": ci.estimate, "ci95": [ci.low, ci.high], "test": test.as_dict()})
    return rows


def _fmt(metric: str, v: float, signed: bool = False) -> str:
    if metric in PROPORTIONS:
        return f"{100 * v:+.1f} pt" if signed else f"{100 * v:.1f}%"
    return f"{v:+.3g}" if signed else f"{v:.3g}"


def describe_pair(row: dict[str, Any]) -> str:
    """'X → Y (+d pt, 95% CI [lo, hi], test p = ...)'."""
    lo, hi = row["ci95"]
    p = row["test"]["p_value"]
    return (f"{_fmt(row['metric'], row['mean_a'])} → {_fmt(row['metric'], row['mean_b'])} "
            f"({_fmt(row['metric'], row['diff'], True)}, 95% CI [{_fmt(row['metric'], lo, True)}, "
            f"{_fmt(row['metric'], hi, True)}], {row['test']['test']} p = {'n/a' if p is None else f'{p:.2g}'})")


def significant(row: dict[str, Any]) -> int:
    """+1 significantly better, -1 significantly worse, 0 neither (p >= 0.05 or no direction)."""
    p = row["test"]["p_value"]
    if p is None or p >= 0.05 or not row["better"] or row["diff"] == 0:
        return 0
    return 1 if (row["diff"] > 0) == (row["better"] == "+") else -1


def headline(vs_base: Iterable[dict[str, Any]], vs_control: Iterable[dict[str, Any]] | None = None,
             template: str | None = None, trained_with: str | None = None) -> str:
    """The result against the paper's claim, in one sentence: non-instructional fine-tuning makes a base model
    follow instructions (here: IFEval instruction-level loose accuracy) and end its answers (EOS), and the gain
    comes from the teacher's continuations, not from the original text (the undistilled control)."""
    base = {r["metric"]: r for r in vs_base}
    ctrl = {r["metric"]: r for r in (vs_control or [])}
    claim = base.get(CLAIM_METRIC)
    if claim is None:
        return "The paper claims non-instructional fine-tuning improves instruction following; this run has no " \
               "IFEval comparison to test it."
    verdict = {1: "reproduces", 0: "does not reproduce", -1: "contradicts"}[significant(claim)]
    out = (f"Against the paper's claim that non-instructional fine-tuning improves instruction following, this run "
           f"{verdict} it: IFEval instruction-level loose accuracy {describe_pair(claim)}")
    stop = base.get(STOP_METRIC)
    if stop is not None:
        out += f"; answers ending by EOS {describe_pair(stop)}"
    c = ctrl.get(CLAIM_METRIC)
    if c is not None:
        which = {1: "better than", 0: "no different from", -1: "worse than"}[significant(c)]
        out += (f"; against the undistilled control (the original text, the paper's Table 1 IDs 3 and 12) the "
                f"distilled model is {which} it ({describe_pair(c)})")
    if template:
        out += f"; asked with the {template!r} template" + (f", trained with {trained_with!r}" if trained_with else "")
    return out + "."


def markdown(arms: list[Arm], table: list[dict[str, Any]], pairs: list[list[dict[str, Any]]],
             sentence: str) -> str:
    names = [a.name for a in arms]
    by = {(r["arm"], r["metric"]): r for r in table}
    lines = [sentence, "", "| metric | " + " | ".join(f"{n} [95% CI]" for n in names) + " |",
             "|---|" + "---:|" * len(names)]
    for metric, label, _ in METRICS:
        cells = []
        for n in names:
            r = by.get((n, metric))
            if r is None:
                cells.append("")
                continue
            seeds = r["seeds"]
            spread = (" (seeds " + ", ".join(_fmt(metric, v) for v in seeds.values()) + ")") if len(seeds) > 1 \
                else ""
            cells.append(f"{_fmt(metric, r['value'])} [{_fmt(metric, r['ci95'][0])}, {_fmt(metric, r['ci95'][1])}]"
                         + spread)
        if any(cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for rows in pairs:
        if not rows:
            continue
        a, b = rows[0]["a"], rows[0]["b"]
        lines += ["", f"**{b} vs {a}** (paired over the same units; seeds averaged per unit)", "",
                  f"| metric | n | {a} | {b} | {b} − {a} [95% CI] | test | p |", "|---|---:|---:|---:|---:|---|---:|"]
        for r in rows:
            mark = {1: " ▲", -1: " ▼", 0: ""}[significant(r)]
            p = r["test"]["p_value"]
            lines.append(f"| {r['label']} | {r['n']} | {_fmt(r['metric'], r['mean_a'])} | "
                         f"{_fmt(r['metric'], r['mean_b'])} | {_fmt(r['metric'], r['diff'], True)}{mark} "
                         f"[{_fmt(r['metric'], r['ci95'][0], True)}, {_fmt(r['metric'], r['ci95'][1], True)}] | "
                         f"{r['test']['test']} | {'' if p is None else f'{p:.3g}'} |")
    return "\n".join(lines) + "\n"
