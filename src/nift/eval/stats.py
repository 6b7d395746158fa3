"""Statistics for evaluations and comparisons: bootstrap CIs, McNemar and Wilcoxon paired tests.

The bootstrap is vectorised numpy (one (B, n) index matrix per call) with a fixed seed, so reports are
reproducible; the tests come from scipy (binomial / chi-square tails, the Wilcoxon signed-rank test).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

DEFAULT_B = 1000


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    level: float = 0.95

    def as_dict(self) -> dict[str, float]:
        return {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in asdict(self).items()}


def _percentile_ci(samples: np.ndarray, level: float) -> tuple[float, float]:
    alpha = (1 - level) / 2
    lo, hi = np.quantile(samples, [alpha, 1 - alpha])
    return float(lo), float(hi)


def bootstrap_mean_ci(values: Any, n_boot: int = DEFAULT_B, level: float = 0.95, seed: int = 0) -> Interval:
    """Percentile bootstrap CI of the mean of `values` (resampling items with replacement)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"), level)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    lo, hi = _percentile_ci(x[idx].mean(axis=1), level)
    return Interval(float(x.mean()), lo, hi, level)


def paired_bootstrap_diff_ci(
    a: Any, b: Any, n_boot: int = DEFAULT_B, level: float = 0.95, seed: int = 0,
) -> Interval:
    """CI of mean(b) - mean(a) for paired observations: the same resampled items for both."""
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if xa.shape != xb.shape:
        raise ValueError(f"paired samples need the same length ({xa.size} vs {xb.size})")
    return bootstrap_mean_ci(xb - xa, n_boot=n_boot, level=level, seed=seed)


def bootstrap_grouped_mean_ci(
    values: Any, groups: Any, n_boot: int = DEFAULT_B, level: float = 0.95, seed: int = 0,
) -> Interval:
    """CI of a weighted mean where whole groups are resampled (Arena-Hard: both games of a question together).

    `values` holds per-observation scores and `groups` the group id of each; the statistic is the plain mean over
    all observations of the resampled groups.
    """
    v = np.asarray(values, dtype=float)
    g = np.asarray(groups)
    if v.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"), level)
    uniq, inv = np.unique(g, return_inverse=True)
    sums = np.bincount(inv, weights=v, minlength=uniq.size)
    counts = np.bincount(inv, minlength=uniq.size).astype(float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, uniq.size, size=(n_boot, uniq.size))
    boot = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    lo, hi = _percentile_ci(boot, level)
    return Interval(float(v.mean()), lo, hi, level)


@dataclass(frozen=True)
class TestResult:
    test: str
    statistic: float | None
    p_value: float | None
    n: int
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("statistic", "p_value"):
            if isinstance(d[k], float):
                d[k] = float(f"{d[k]:.6g}") if math.isfinite(d[k]) else None
        return d


def mcnemar(a: Any, b: Any, exact: bool | None = None) -> TestResult:
    """McNemar's test on paired pass/fail outcomes.

    Only discordant pairs matter: n01 (a failed, b passed) and n10. The exact test is a two-sided binomial test of
    n01 against Binomial(n01 + n10, 1/2); the asymptotic one is the chi-square statistic with continuity correction
    (|n01 - n10| - 1)^2 / (n01 + n10). By default the exact test is used when there are fewer than 25 discordant
    pairs, as statsmodels and most textbooks recommend.
    """
    from scipy import stats

    xa, xb = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if xa.shape != xb.shape:
        raise ValueError(f"paired samples need the same length ({xa.size} vs {xb.size})")
    n01 = int(np.sum(~xa & xb))
    n10 = int(np.sum(xa & ~xb))
    n = n01 + n10
    if n == 0:
        return TestResult("mcnemar", 0.0, 1.0, int(xa.size), "no discordant pairs")
    if exact is None:
        exact = n < 25
    if exact:
        p = stats.binomtest(n01, n, 0.5, alternative="two-sided").pvalue
        return TestResult("mcnemar-exact", float(min(n01, n10)), float(min(p, 1.0)), int(xa.size),
                          f"discordant pairs: {n10} a-only, {n01} b-only")
    chi2 = (abs(n01 - n10) - 1) ** 2 / n
    p = stats.chi2.sf(chi2, df=1)
    return TestResult("mcnemar-chi2", float(chi2), float(p), int(xa.size),
                      f"discordant pairs: {n10} a-only, {n01} b-only")


def wilcoxon(a: Any, b: Any) -> TestResult:
    """Wilcoxon signed-rank test on paired scores (zero differences dropped, Pratt would keep them)."""
    from scipy import stats

    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if xa.shape != xb.shape:
        raise ValueError(f"paired samples need the same length ({xa.size} vs {xb.size})")
    d = xb - xa
    nz = int(np.count_nonzero(d))
    if nz == 0:
        return TestResult("wilcoxon", None, 1.0, int(xa.size), "all paired differences are zero")
    res = stats.wilcoxon(xa, xb, zero_method="wilcox", alternative="two-sided")
    return TestResult("wilcoxon", float(res.statistic), float(res.pvalue), int(xa.size),
                      f"{nz} non-zero differences")
