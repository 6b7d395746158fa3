"""AlpacaEval 2: 805 instructions, each answer judged pairwise against a reference output; the win rate and the
length-controlled win rate, as the `alpaca_eval` package (0.6.6) computes them.

The judge: alpaca_eval's `weighted_alpaca_eval_gpt4_turbo` annotator — its system and user prompt, one token
(`m` = the first output, `M` = the second), 5 top log-probabilities at temperature 1, the preference
2 - P(m) / (P(m) + P(M)) in [1, 2] (2: the model's answer is better). The two outputs are shown in the order
alpaca_eval draws from the instruction (`random.Random("is_switched_outputs" + instruction + "0")`), so a
position bias does not favour either side. A judge that gives no log-probabilities (Anthropic, an in-process
model, a server without them) is asked greedily and its token read as 1 or 2 — alpaca_eval's
`alpaca_eval_clf_gpt4_turbo` rule. An answer that is neither is unparseable: not scored, not re-asked (alpaca_eval
asks once).

Win rate: the mean preference - 1 (draws at 1.5 count one half), with alpaca_eval's standard error and a
bootstrap 95% CI over instructions. Length-controlled win rate (`length_controlled_v1`): a logistic GLM of the
preference on tanh(standardised length difference), the instruction's difficulty and the model, fitted with the
two length-gamed baselines of alpaca_eval's calibration file (`df_gamed.csv`, weight 0.1 each), L1-regularised with
the strength chosen by 5-fold group cross-validation on the continuous log loss; the LC win rate is the mean
predicted preference with no length difference. Its interval resamples instructions and refits with the chosen
strength.
"""

from __future__ import annotations

import math
import random
import warnings
from typing import Any

import numpy as np

from nift.errors import InputError

MAX_NEW_TOKENS = 2048
# alpaca_eval `evaluators_configs/alpaca_eval_clf_gpt4_turbo/alpaca_eval_clf.txt`, as its `prompt_to_chatml` splits
# it into messages.
SYSTEM_PROMPT = ("You are a highly efficient assistant, who evaluates and selects the best large language model (LLMs) "
                 "based on the quality of their responses to a given instruction. This process will be used to create "
                 "a leaderboard reflecting the most accurate and human-preferred answers.")
USER_TEMPLATE = '''I require a leaderboard for various large language models. I'll provide you with prompts given to these models and their corresponding outputs. Your task is to assess these responses, and select the model that produces the best output from a human perspective.

## Instruction

{
    "instruction": """{instruction}""",
}

## Model Outputs

Here are the unordered outputs from the models. Each output is associated with a specific model, identified by a unique model identifier.

{
    {
        "model_identifier": "m",
        "output": """{output_1}"""
    },
    {
        "model_identifier": "M",
        "output": """{output_2}"""
    }
}

## Task

Evaluate the models based on the quality and relevance of their outputs, and select the model that generated the best output. Answer by providing the model identifier of the best model. We will use your output as the name of the best model, so make sure your output only contains one of the following model identifiers and nothing else (no quotes, no spaces, no new lines, ...): m or M.

## Best Model Identifier'''  # noqa: E501
JUDGE_MAX_TOKENS = 1
TOP_LOGPROBS = 5
GLM_FEATURES = ("np.tanh(std_delta_len)", "instruction_difficulty", "not_gamed_baseline.astype(float)")
GAMED_WEIGHT = 0.2 / 2  # alpaca_eval's regularize_to_baseline_lambda, shared by its two gamed baselines


def is_switched(instruction: str, seed: int = 0) -> bool:
    """Whether the model's answer is shown first: alpaca_eval's RandomSwitchTwoColumnsProcessor draw."""
    return random.Random("is_switched_outputs" + instruction + str(seed)).choices([False, True], k=1)[0]


def judge_messages(instruction: str, model_output: str, reference_output: str) -> tuple[bool, list[dict[str, str]]]:
    """(switched, chat messages) as alpaca_eval builds them: output_1 is the reference unless switched."""
    switched = is_switched(instruction)
    first, second = (model_output, reference_output) if switched else (reference_output, model_output)
    # alpaca_eval fills each placeholder's first occurrence in turn, so text that contains "{output_1}" is filled too.
    user = USER_TEMPLATE
    for key, value in (("instruction", instruction), ("output_1", first), ("output_2", second)):
        user = user.replace("{" + key + "}", value, 1)
    return switched, [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user.strip()}]


def parse_preference(result: Any) -> tuple[float | None, str]:
    """Preference in [1, 2] in the shown order (1: `m`, the first output) from the first token's top
    log-probabilities, else from the text."""
    top = (getattr(result, "top_logprobs", None) or [[]])[0]
    lps = {t["token"]: t["logprob"] for t in top if t.get("token") in ("m", "M")}
    if lps:
        lm, l_cap = lps.get("m", -math.inf), lps.get("M", -math.inf)
        return 2 - math.exp(lm - np.logaddexp(lm, l_cap)), "ok"
    text = (result.text or "").strip()
    if text in ("m", "M"):
        return (1.0 if text == "m" else 2.0), "ok"
    return None, "missing"


def unswitch(preference: float | None, switched: bool) -> float | None:
    return None if preference is None else (3 - preference if switched else preference)


# -------------------------------------------------------------------------------------------- win rate


def win_rate(preferences: list[float | None]) -> dict[str, Any]:
    """alpaca_eval's `get_winrate`: preferences 1 (reference better) .. 2 (model better); None not counted."""
    p = np.array([x for x in preferences if x is not None and not math.isnan(x)], dtype=float)
    if p.size == 0:
        return {"win_rate": None, "standard_error": None, "n_wins": 0, "n_wins_base": 0, "n_draws": 0,
                "n_total": 0, "discrete_win_rate": None}
    v = p - 1
    d = np.where(p == 1.5, 1.5, np.round(p)) - 1  # ZeroOneScoringRule: rounded, 1.5 stays a draw
    return {"win_rate": float(v.mean() * 100), "standard_error": float(v.std(ddof=1) / math.sqrt(v.size) * 100)
            if v.size > 1 else None, "n_wins": int((v > 0.5).sum()), "n_wins_base": int((v < 0.5).sum()),
            "n_draws": int((p == 1.5).sum()), "n_total": int(v.size), "discrete_win_rate": float(d.mean() * 100)}


# ------------------------------------------------------------------------------- length-controlled GLM


def read_gamed(path: str) -> dict[str, np.ndarray]:
    """alpaca_eval's calibration file `df_gamed.csv`: the gamed baselines' rows and every instruction's difficulty."""
    import csv

    need = ("index", "preference", "std_delta_len", "instruction_difficulty")
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in need if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"{path}: not alpaca_eval's df_gamed.csv: missing column(s) {missing}")
        rows = []
        for i, r in enumerate(reader, start=2):
            try:
                rows.append([float(r[c]) for c in need])
            except ValueError:
                bad = next(c for c in need if not _is_float(r[c]))
                raise InputError(f"{path}:{i}: field {bad!r} is not a number ({r[bad]!r})") from None
    a = np.array(rows)
    # alpaca_eval keeps each index's first row (drop_duplicates) and then looks instruction i up by row label i: in
    # its file, row i of the first gamed model is instruction i.
    seen: set[int] = set()
    difficulty: dict[int, float] = {}
    for n, (idx, _, _, diff) in enumerate(a):
        if int(idx) not in seen:
            seen.add(int(idx))
            difficulty[n] = float(diff)
    return {"index": a[:, 0].astype(int), "preference": a[:, 1], "std_delta_len": a[:, 2],
            "difficulty_by_row": a[:, 3], "difficulty": difficulty}


def _is_float(x: str) -> bool:
    try:
        float(x)
        return True
    except ValueError:
        return False


def _features(delta_len: np.ndarray, difficulty: np.ndarray, not_gamed: np.ndarray) -> np.ndarray:
    return np.column_stack([np.tanh(delta_len), difficulty, not_gamed.astype(float)])


def _design(rows: list[dict[str, Any]], gamed: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    """(train X, train y in [0, 1], train weights, test X) as alpaca_eval's `_get_featurized_data` builds them."""
    idx = np.array([r["index"] for r in rows])
    try:
        diff = np.array([gamed["difficulty"][i] for i in idx], dtype=float)
    except KeyError as e:
        raise InputError(f"the calibration file has no instruction difficulty for instruction {e.args[0]}") from None
    delta = np.array([r["reference_len"] - r["model_len"] for r in rows], dtype=float)
    sd = delta.std(ddof=1) if delta.size > 1 else 0.0
    std_delta = delta / sd if sd > 0 else np.zeros_like(delta)
    pref = np.array([np.nan if r["preference"] is None else r["preference"] - 1 for r in rows], dtype=float)
    x_model = _features(std_delta, diff, np.ones(len(rows), dtype=bool))
    x_gamed = _features(gamed["std_delta_len"], gamed["difficulty_by_row"], np.zeros(len(gamed["index"]), bool))
    x = np.vstack([x_gamed, x_model])
    y = np.concatenate([gamed["preference"], pref])
    w = np.concatenate([np.full(len(gamed["index"]), GAMED_WEIGHT), np.ones(len(rows))])
    keep = ~np.isnan(y)
    x_test = _features(np.zeros(len(rows)), diff, np.ones(len(rows), dtype=bool))
    return x[keep], y[keep], w[keep], x_test


def _continuous_log_loss(y_true, y_pred, true_prob, true_sample_weight=None) -> float:
    # Each row is in the data twice (as class 1 and class 0); true_prob and the weight give back the soft target.
    y = np.where(y_true == 1, true_prob, 1 - true_prob)
    p = np.clip(y_pred, 1e-15, 1 - 1e-15)
    ll = y * np.log(p) + (1 - y) * np.log(1 - p)
    return float(-np.mean(ll * true_sample_weight if true_sample_weight is not None else ll))


def _doubled(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, ...]:
    """Soft labels as sklearn takes them: each row once as class 1 (weight p w), once as class 0 ((1 - p) w)."""
    prob = np.concatenate([y, 1 - y])
    return np.vstack([x, x]), np.r_[np.ones(len(y)), np.zeros(len(y))], prob * np.r_[w, w], prob, np.r_[w, w], \
        np.r_[np.arange(len(y)), np.arange(len(y))]


def fit_glm(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> Any:
    """alpaca_eval's `fit_LogisticRegressionCV` for soft labels: L1, liblinear, no intercept, C chosen by GroupKFold(5)
    on the continuous log loss."""
    import sklearn
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import make_scorer
    from sklearn.model_selection import GroupKFold

    xx, yy, sw, prob, tw, groups = _doubled(x, y, w)
    with sklearn.config_context(enable_metadata_routing=True), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # scikit-learn 1.8+ renames `penalty`; same model

        scorer = make_scorer(_continuous_log_loss, response_method="predict_proba", greater_is_better=False)
        scorer = scorer.set_score_request(true_sample_weight=True, true_prob=True)
        model = LogisticRegressionCV(cv=GroupKFold(n_splits=5), scoring=scorer, random_state=123, dual=False,
                                     penalty="l1", solver="liblinear", n_jobs=None, fit_intercept=False)
        model.set_fit_request(sample_weight=True)
        model.fit(xx, yy, sample_weight=sw, groups=groups, true_sample_weight=tw, true_prob=prob)
    return model


def _refit(x: np.ndarray, y: np.ndarray, w: np.ndarray, c: float) -> Any:
    from sklearn.linear_model import LogisticRegression

    xx, yy, sw, *_ = _doubled(x, y, w)
    with warnings.catch_warnings():
        # scikit-learn 1.8+ deprecates `penalty` (and calls penalty="l1" beside the default l1_ratio inconsistent);
        # it still fits the L1 model asked for.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        return LogisticRegression(C=c, penalty="l1", solver="liblinear", fit_intercept=False,
                                  random_state=123).fit(xx, yy, sample_weight=sw)


def length_controlled(rows: list[dict[str, Any]], gamed: dict[str, np.ndarray], n_boot: int = 1000,
                      seed: int = 0) -> dict[str, Any]:
    """LC win rate (%) with alpaca_eval's standard error, the GLM weights and a bootstrap 95% CI.

    `rows`: one per judged instruction, in any order: {index (the instruction's row in the AlpacaEval set),
    preference (1..2 or None), reference_len, model_len (characters)}."""
    if not any(r["preference"] is not None for r in rows):
        return {"length_controlled_winrate": None, "lc_standard_error": None, "lc_ci95": None, "glm_weights": None}
    x, y, w, x_test = _design(rows, gamed)
    model = fit_glm(x, y, w)
    pred = model.predict_proba(x_test)[:, 1]
    c = float(model.C_[0])
    rng = np.random.default_rng(seed)
    boot = []
    for idx in rng.integers(0, len(rows), size=(n_boot, len(rows))):
        sample = [rows[i] for i in idx]
        if any(r["preference"] is not None for r in sample):
            bx, by, bw, bt = _design(sample, gamed)
            boot.append(_refit(bx, by, bw, c).predict_proba(bt)[:, 1].mean() * 100)
    lo, hi = np.quantile(boot, [0.025, 0.975]) if boot else (math.nan, math.nan)
    return {"length_controlled_winrate": float(pred.mean() * 100),
            "lc_standard_error": float(pred.std(ddof=1) / math.sqrt(pred.size) * 100) if pred.size > 1 else None,
            "lc_ci95": [float(lo), float(hi)] if boot else None, "glm_C": c,
            "glm_weights": dict(zip(GLM_FEATURES, map(float, model.coef_[0]), strict=True))}


# ------------------------------------------------------------------------------------------------ judging


def judge_settings(backend: str) -> dict[str, Any]:
    """Judge overrides: the weighted annotator's where the backend returns log-probabilities, else greedy."""
    if backend in ("openai", "openai-batch"):
        return {"top_logprobs": TOP_LOGPROBS, "temperature": 1.0}
    return {"temperature": 0.0}


def judge_answers(items: list[dict[str, Any]], answers: list[dict[str, Any]], judge: Any, n_boot: int = 1000,
                  seed: int = 0, gamed: dict[str, Any] | None = None) -> tuple[dict, list[dict], list[dict]]:
    """(results, per-item rows, judgment rows) for the model's answers against the reference outputs."""
    from nift.eval.judge import JudgeTask
    from nift.eval.stats import bootstrap_mean_ci

    by_id = {it["id"]: it for it in items}
    tasks, shown = [], {}
    for a in answers:
        if a["status"] != "ok":
            continue
        it = by_id[a["id"]]
        switched, msgs = judge_messages(it["turns"][0], a["answer"], it["reference"])
        tid = f"alpaca_eval:{it['id']}"
        tasks.append(JudgeTask(tid, msgs, parse=lambda text: parse_preference(_Text(text)), retry_on=(),
                               parse_result=parse_preference))
        shown[tid] = (it, a["answer"], switched)
    outcomes = judge.judge(tasks, JUDGE_MAX_TOKENS, "judge alpaca_eval", overrides=judge_settings(judge.cfg.backend))
    judgments, glm_rows, rows = [], [], []
    for tid, o in outcomes.items():
        it, answer, switched = shown[tid]
        pref = unswitch(o["value"], switched)
        judgments.append({"id": it["id"], "switched": switched, "preference": pref,
                          **{k: v for k, v in o.items() if k != "value"}})
        glm_rows.append({"index": it["index"], "preference": pref, "reference_len": len(it["reference"]),
                         "model_len": len(answer)})
        if pref is not None:
            rows.append({"metric": "alpaca_eval/preference", "unit": it["id"], "value": pref - 1, "kind": "score",
                         "better": "+"})
    prefs = [r["preference"] for r in glm_rows]
    res: dict[str, Any] = win_rate(prefs)
    ok = [100 * (p - 1) for p in prefs if p is not None]
    ci = bootstrap_mean_ci(ok, n_boot=n_boot, seed=seed) if ok else None
    res["ci95"] = [round(ci.low, 4), round(ci.high, 4)] if ci else None
    if gamed is not None:
        res.update(length_controlled(glm_rows, gamed, n_boot=n_boot, seed=seed))
    for k in ("win_rate", "standard_error", "discrete_win_rate", "length_controlled_winrate", "lc_standard_error"):
        if isinstance(res.get(k), float):
            res[k] = round(res[k], 4)
    if res.get("lc_ci95"):
        res["lc_ci95"] = [round(x, 4) for x in res["lc_ci95"]]
    res.update(reference_generators=sorted({shown[t][0]["reference_generator"] for t in shown}),
               n_judgments=len(outcomes), n_unparseable=sum(1 for r in glm_rows if r["preference"] is None),
               weighted=judge_settings(judge.cfg.backend).get("top_logprobs") is not None)
    return res, rows, judgments


class _Text:
    """A judgment seen as text only (the retry path of `Judge.judge` parses text)."""

    def __init__(self, text: str):
        self.text, self.top_logprobs = text, None
