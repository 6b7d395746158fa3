"""The report's plots (matplotlib, Agg), each returned as PNG bytes: length histograms, loss curve, before/after
bars with CI error bars, stage timings. One look for all of them; colours: before grey, after blue."""

from __future__ import annotations

import io
from collections.abc import Sequence

from nift.report.formatting import seconds

BEFORE, AFTER, OTHER = "#8795a1", "#2b6cb0", ["#dd6b20", "#38a169", "#805ad5", "#d53f8c"]
GRID = {"color": "#d9e2ec", "linewidth": 0.8}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
                         "axes.edgecolor": "#9fb3c8", "axes.titlesize": 10, "axes.titleweight": "bold"})
    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    _plt().close(fig)
    return buf.getvalue()


def histograms(panels: Sequence[tuple[str, str, Sequence[float]]], bins: int) -> bytes:
    """One histogram per (title, x label, values), side by side, with the median marked."""
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 0.4, 2.9), squeeze=False)
    for ax, (title, xlabel, values) in zip(axes[0], panels, strict=True):
        v = np.asarray(values, dtype=float)
        ax.hist(v, bins=min(bins, max(1, len(np.unique(v)))), color=AFTER, alpha=0.85, edgecolor="white",
                linewidth=0.5)
        med = float(np.median(v))
        ax.axvline(med, color="#c05621", linestyle="--", linewidth=1.2, label=f"median {med:,.0f}")
        ax.set_title(f"{title} (n = {len(v):,})")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("rows")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(axis="y", **GRID)
        ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return _png(fig)


def loss_curve(train: Sequence[tuple[float, float]], evals: Sequence[tuple[float, float]],
               lrs: Sequence[tuple[float, float]], title: str) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8.2, 3.6))
    if train:
        ax.plot(*zip(*train, strict=True), color=AFTER, linewidth=1.6, marker="o" if len(train) < 30 else None,
                markersize=3, label="train loss (continuation tokens)")
    if evals:
        ax.plot(*zip(*evals, strict=True), "s-", color="#dd6b20", linewidth=1.6, markersize=4,
                label="held-out eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.grid(**GRID)
    if lrs:
        ax2 = ax.twinx()
        ax2.plot(*zip(*lrs, strict=True), color="#9fb3c8", linewidth=1, linestyle=":", label="learning rate")
        ax2.set_ylabel("learning rate", color="#829ab1")
        ax2.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        ax2.spines["right"].set_visible(True)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, frameon=False, loc="upper right")
    else:
        ax.legend(frameon=False, loc="upper right")
    ax.set_title(title, fontweight="normal")
    fig.tight_layout()
    return _png(fig)


Bar = tuple[float | None, float | None, float | None]  # value, CI low, CI high


def before_after(groups: Sequence[tuple[str, str, Sequence[tuple[str, dict[str, Bar]]]]], names: Sequence[str],
                 fmt=lambda v: f"{v:.3g}") -> bytes:
    """Grouped bars with 95% CI error bars. groups: (panel title, y label, [(metric label, {eval name: bar})]);
    one panel per group (metrics of one scale), one bar per evaluation, its value written above it."""
    import numpy as np

    plt = _plt()
    widths = [max(2.4, 1.0 + 0.95 * len(metrics)) for _, _, metrics in groups]
    fig, axes = plt.subplots(1, len(groups), figsize=(min(sum(widths) + 0.6, 13), 3.7), squeeze=False,
                             gridspec_kw={"width_ratios": widths})
    colors = {n: c for n, c in zip(names, [BEFORE, AFTER, *OTHER], strict=False)}
    k = len(names)
    w = 0.8 / k
    for ax, (title, ylabel, metrics) in zip(axes[0], groups, strict=True):
        x = np.arange(len(metrics))
        top = 0.0
        for j, name in enumerate(names):
            vals, err_lo, err_hi = [], [], []
            for _, bars in metrics:
                v, lo, hi = bars.get(name, (None, None, None))
                vals.append(np.nan if v is None else v)
                err_lo.append(0 if v is None or lo is None else max(0.0, v - lo))
                err_hi.append(0 if v is None or hi is None else max(0.0, hi - v))
                top = max(top, *(t for t in (v, hi) if t is not None))
            pos = x + (j - (k - 1) / 2) * w
            ax.bar(pos, vals, w * 0.92, color=colors.get(name, "#718096"), label=name, zorder=2)
            ax.errorbar(pos, vals, yerr=[err_lo, err_hi], fmt="none", ecolor="#243b53", elinewidth=1, capsize=3,
                        zorder=3)
            for p, v, eh in zip(pos, vals, err_hi, strict=True):
                if not np.isnan(v):
                    ax.annotate(fmt(v), (p, v + eh), ha="center", va="bottom", fontsize=7, color="#334e68",
                                xytext=(0, 2), textcoords="offset points")
        ax.set_xticks(x)
        ax.set_xticklabels([m for m, _ in metrics], rotation=20 if len(metrics) > 3 else 0, ha="right"
                           if len(metrics) > 3 else "center", fontsize=8)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        # percentages on their whole scale, so that 2% does not look like 100%
        ax.set_ylim(0, 108 if ylabel == "%" and top <= 100 else (top * 1.18 if top > 0 else 1))
        ax.grid(axis="y", zorder=0, **GRID)
    axes[0][0].legend(frameon=False, fontsize=8, loc="upper left")
    fig.tight_layout()
    return _png(fig)


def timings(rows: Sequence[tuple[str, float]]) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8.2, 0.34 * len(rows) + 0.9))
    labels = [r[0] for r in rows][::-1]
    secs = [r[1] for r in rows][::-1]
    ax.barh(labels, secs, color=AFTER, alpha=0.85, zorder=2)
    top = max(secs) if secs else 1
    for y, s in enumerate(secs):
        ax.text(s + top * 0.01, y, seconds(s), va="center", fontsize=8, color="#334e68")
    ax.set_xlim(0, top * 1.15)
    ax.set_xlabel("wall-clock seconds")
    ax.grid(axis="x", zorder=0, **GRID)
    fig.tight_layout()
    return _png(fig)

