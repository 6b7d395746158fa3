"""How numbers are written in the report (one place, so the HTML, the Markdown and the tests agree)."""

from __future__ import annotations

import math
from typing import Any

DASH = "–"


def missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and not math.isfinite(x))


def count(n: Any) -> str:
    """An integer with thousands separators: 6930 -> 6,930."""
    return DASH if missing(n) else f"{int(n):,}"


def usd(x: Any) -> str:
    """Dollars: cents for sums from a cent up, four significant digits below (a 135M-token run is not $0.00)."""
    if missing(x):
        return DASH
    x = float(x)
    if x == 0:
        return "$0.00"
    if abs(x) >= 0.01:
        return f"${x:,.2f}"
    return f"${x:.4g}"


def num(x: Any, digits: int = 4) -> str:
    """A measured value with `digits` significant digits (losses, means, errors)."""
    if missing(x):
        return DASH
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return count(x)
    x = float(x)
    if x != 0 and (abs(x) >= 1e6 or abs(x) < 1e-3):
        return f"{x:.{max(1, digits - 1)}e}"
    return f"{x:.{digits}g}"


def measure(x: Any) -> str:
    """A length or count statistic: whole numbers with separators from 1,000 up, else 4 significant digits."""
    if missing(x):
        return DASH
    x = float(x)
    return f"{x:,.0f}" if abs(x) >= 1000 else num(x, 4)


def pct(x: Any, digits: int = 1) -> str:
    """A proportion in [0, 1] as a percentage: 0.1429 -> 14.3%."""
    return DASH if missing(x) else f"{100 * float(x):.{digits}f}%"


def interval(lo: Any, hi: Any, as_pct: bool = False) -> str:
    if missing(lo) or missing(hi):
        return ""
    f = (lambda v: f"{100 * float(v):.1f}") if as_pct else (lambda v: num(v, 3))
    return f"[{f(lo)}, {f(hi)}]"


def signed(x: Any, as_pct: bool = False) -> str:
    """A difference with its sign; percentage points for proportions."""
    if missing(x):
        return DASH
    return f"{100 * float(x):+.1f} pt" if as_pct else f"{float(x):+.3g}"


def p_value(p: Any) -> str:
    if missing(p):
        return DASH
    p = float(p)
    return "< 0.001" if p < 0.001 else f"{p:.3g}"


def seconds(s: Any) -> str:
    if missing(s):
        return DASH
    s = float(s)
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {s % 60:02.0f} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def nbytes(n: Any) -> str:
    if missing(n):
        return DASH
    n = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} TB"
