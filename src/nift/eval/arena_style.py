"""Arena-Hard with style control (`--arena-style-control`): answer length and markdown as covariates of the
Bradley-Terry fit, as arena-hard-auto does it since 2024-08, so a model is not rewarded for being long or for
formatting alone.

Two versions, picked by the data (`ArenaHardData.version`):

- v0.1 (arena-hard-auto `show_result.py --style-control`, 2024-08): every game is a battle (a decisive verdict
  three times), every battle twice (a tie is one win for each side); features per battle: answer tokens (the
  tokenizer of gpt-3.5-turbo, cl100k_base), markdown headers, list items and bold spans (code blocks removed), each
  as (baseline - model) / (baseline + model + 1), standardised; logistic regression with scikit-learn's defaults
  (L2, C = 1, no intercept); the score is the model's win rate against the baseline from the fitted ratings.
- v2.0 (arena-hard-auto `show_result.py --control-features length markdown`, 2025): the verdict's scores per
  battle (1, 0.5, 0; decisive x3); features: (model - baseline) / (model + baseline) for tokens (gpt-4o's
  tokenizer, o200k_base) and, for markdown, counts per token, d = (model - baseline) / (model + baseline + 1);
  standardised with the sample standard deviation; an unregularised Bradley-Terry fit. arena-hard-auto reports
  the median of 100 unseeded bootstrap fits; nift reports the fit on all battles (the value those medians scatter
  around) and a seeded question-level bootstrap interval.

Token counts come from `bpe-openai`, which ships the OpenAI encodings (tiktoken downloads them at first use, which
an offline machine cannot); it gives tiktoken's token ids exactly.
"""

from __future__ import annotations

import math
import re
from functools import cache
from typing import Any

import numpy as np

from nift.errors import missing_package

_CODE_BLOCK = re.compile("```([^`]*)```")
_HEADERS = [re.compile(rf"^#{{{n}}}\s", re.MULTILINE) for n in range(1, 7)]
_LISTS = [re.compile(r"^\s*\d+\.\s", re.MULTILINE), re.compile(r"^\s*[-*+]\s", re.MULTILINE)]
_BOLD = [re.compile(r"\*\*[^*\n]+\*\*"), re.compile(r"__[^_\n]+__")]
ENCODING = {"v0.1": "cl100k_base", "v2.0": "o200k_base"}
FEATURES = ("token_len", "header_count", "list_count", "bold_count")


@cache
def _encoding(name: str) -> Any:
    try:
        import bpe_openai
    except ImportError:
        raise missing_package("bpe-openai", "eval", "Arena-Hard style control (OpenAI token counts)") from None
    return bpe_openai.get_encoding(name)


def style_metadata(text: str, version: str = "v0.1") -> dict[str, int]:
    """arena-hard's `conv_metadata` of one answer: tokens, then markdown counts outside code blocks."""
    body = text
    for block in _CODE_BLOCK.findall(text):
        body = body.replace(block, "")
    return {
        "token_len": len(_encoding(ENCODING[version]).encode(text, disallowed_special=())),
        "header_count": sum(len(p.findall(body)) for p in _HEADERS),
        "list_count": sum(len(p.findall(body)) for p in _LISTS),
        "bold_count": sum(len(p.findall(body)) for p in _BOLD),
    }


def _standardise(f: np.ndarray, ddof: int) -> np.ndarray:
    # A feature constant over all battles standardises to 0/0; its coefficient can only be 0, so it is dropped.
    sd = f.std(axis=0, ddof=ddof)
    keep = sd > 0
    return (f[:, keep] - f[:, keep].mean(axis=0)) / sd[keep]


def _v01_design(battles: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """arena-hard v0.1's battles x2 design: columns baseline, model (+-ln 10), then the standardised style."""
    n = len(battles)
    base = np.array([[b["baseline_meta"][k] for k in FEATURES] for b in battles], dtype=float)
    model = np.array([[b["model_meta"][k] for k in FEATURES] for b in battles], dtype=float)
    style = np.vstack([(base - model) / (base + model + 1)] * 2)
    x = np.zeros((2 * n, 2))
    x[:, 0], x[:, 1] = math.log(10), -math.log(10)
    win = np.array([b["outcome"] for b in battles] * 2)  # from the model's side: 1, 0.5, 0
    y = np.where(win == 0.0, 1.0, 0.0)  # y = 1: the baseline (first column) wins
    y[:n][win[:n] == 0.5] = 1.0
    return np.hstack([x, _standardise(style, ddof=0)]), y


def _v01_fit(x: np.ndarray, y: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression

    if len(set(y)) < 2:  # one class only: the model won (or lost) every battle
        return 100.0 if y.max() == 0 else 0.0
    coef = LogisticRegression(fit_intercept=False).fit(x, y).coef_[0]
    # Ratings 400 * coef + 1000 (anchored so the baseline is 1114); the model's predicted win rate against it.
    diff = 400 * (coef[1] - coef[0])
    return 100 / (1 + 10 ** (-diff / 400))


def _v20_design(battles: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    m = np.array([[b["model_meta"][k] for k in FEATURES] for b in battles], dtype=float)
    b = np.array([[b["baseline_meta"][k] for k in FEATURES] for b in battles], dtype=float)
    f = np.zeros_like(m)
    f[:, 0] = (m[:, 0] - b[:, 0]) / (m[:, 0] + b[:, 0])
    md_m, md_b = m[:, 1:] / (m[:, :1] + 1), b[:, 1:] / (b[:, :1] + 1)
    f[:, 1:] = (md_m - md_b) / (md_m + md_b + 1)
    # The one-hot model column minus the baseline's is 1 in every battle: the model's rating over the baseline.
    return np.hstack([np.ones((len(battles), 1)), _standardise(f, ddof=1)]), np.array([x["outcome"] for x in battles])


def _v20_fit(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.optimize import minimize
    from scipy.special import expit, log_expit

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = x @ w
        return float(-(y * log_expit(z) + (1 - y) * log_expit(-z)).sum()), x.T @ (expit(z) - y)

    if y.min() == y.max() and y[0] in (0.0, 1.0):
        return 100.0 * y[0]
    w = minimize(loss, np.zeros(x.shape[1]), jac=True, method="L-BFGS-B", options={"gtol": 1e-10, "ftol": 1e-15}).x
    return 100 * float(expit(w[0]))


def style_controlled_score(battles: list[dict[str, Any]], version: str = "v0.1") -> float | None:
    """The style-controlled win rate (%) of the model against the baseline.

    `battles`: one per counted battle (a decisive verdict appears three times), each {outcome: 1 / 0.5 / 0 for the
    model, model_meta, baseline_meta} with the `style_metadata` of both answers."""
    if not battles:
        return None
    if version == "v2.0":
        return _v20_fit(*_v20_design(battles))
    return _v01_fit(*_v01_design(battles))


def bootstrap_ci(battles: list[dict[str, Any]], version: str, n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float] | None:
    """Percentile CI of the style-controlled score, resampling questions (both games of a question together)."""
    by_q: dict[str, list[dict[str, Any]]] = {}
    for b in battles:
        by_q.setdefault(b["id"], []).append(b)
    qs = sorted(by_q)
    if len(qs) < 2:
        return None
    rng = np.random.default_rng(seed)
    scores = []
    for idx in rng.integers(0, len(qs), size=(n_boot, len(qs))):
        sample = [b for i in idx for b in by_q[qs[i]]]
        s = style_controlled_score(sample, version)
        if s is not None:
            scores.append(s)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(scores, [alpha, 1 - alpha])
    return float(lo), float(hi)
