"""Scoring without models: statistics against scipy, judge-verdict parsing on the official formats, templates
against FastChat, judge-free signals, IFEval against lm-eval's own task, benchmark data loading."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats as sps

from nift.errors import ConfigError, InputError
from nift.eval import arena_hard, data, ifeval, mt_bench, signals, stats, templates

# ------------------------------------------------------------------------------------------------ statistics


def test_bootstrap_matches_scipy_percentile_interval():
    rng = np.random.default_rng(1)
    a = rng.normal(5.0, 1.0, 200)
    b = a + rng.normal(0.3, 0.5, 200)
    ours = stats.paired_bootstrap_diff_ci(a, b, n_boot=4000, seed=3)
    ref = sps.bootstrap((a, b), lambda x, y, axis=-1: np.mean(y - x, axis=axis), paired=True, n_resamples=4000,
                        method="percentile", random_state=7).confidence_interval
    assert ours.estimate == pytest.approx(np.mean(b - a))
    # Two Monte Carlo runs of the same interval agree to a few percent of its width.
    width = ref.high - ref.low
    assert abs(ours.low - ref.low) < 0.1 * width and abs(ours.high - ref.high) < 0.1 * width
    assert ours.low < np.mean(b - a) < ours.high


def test_grouped_bootstrap_resamples_whole_groups():
    # Three groups, each of mean 0.5 but with 0/1 observations inside: resampling whole groups can only give 0.5,
    # while resampling observations (the ungrouped bootstrap below) gives a wide interval.
    values, groups = [0, 1, 1, 0, 0, 1] * 4, [g for g in "abcdefghijkl" for _ in range(2)]
    ci = stats.bootstrap_grouped_mean_ci(values, groups, n_boot=500)
    assert ci.estimate == pytest.approx(0.5)
    assert ci.low == ci.high == pytest.approx(0.5)
    ungrouped = stats.bootstrap_mean_ci(values, n_boot=500)
    assert ungrouped.low < 0.4 and ungrouped.high > 0.6
    # Groups of different sizes: the statistic is the mean over observations, not over group means.
    sized = stats.bootstrap_grouped_mean_ci([1, 1, 1, 0], ["a", "a", "a", "b"], n_boot=200)
    assert sized.estimate == pytest.approx(0.75)
    assert {sized.low, sized.high} <= {0.0, 0.75, 1.0}
    one = stats.bootstrap_grouped_mean_ci([1, 0], ["q", "q"], n_boot=100)
    assert one.low == one.high == pytest.approx(0.5)  # one group: nothing to resample


def test_mcnemar_exact_and_chi2_match_scipy():
    # 10 pairs pass only under b, 2 only under a, 20 concordant.
    a = [0] * 10 + [1] * 2 + [1] * 10 + [0] * 10
    b = [1] * 10 + [0] * 2 + [1] * 10 + [0] * 10
    ex = stats.mcnemar(a, b)
    assert ex.test == "mcnemar-exact"
    assert ex.p_value == pytest.approx(sps.binomtest(10, 12, 0.5).pvalue)
    assert ex.p_value == pytest.approx(2 * (1 + 12 + 66) / 2**12)  # 2 * P(X <= 2), X ~ Bin(12, 1/2)
    ch = stats.mcnemar(a, b, exact=False)
    assert ch.statistic == pytest.approx((abs(10 - 2) - 1) ** 2 / 12)
    assert ch.p_value == pytest.approx(sps.chi2.sf((8 - 1) ** 2 / 12, 1))
    assert stats.mcnemar([1, 0], [1, 0]).p_value == 1.0


def test_wilcoxon_matches_scipy_and_known_value():
    a = [7, 5, 6, 4, 8, 6, 5, 7, 6, 5]
    b = [8, 7, 6, 6, 9, 8, 5, 9, 7, 7]
    res = stats.wilcoxon(a, b)
    ref = sps.wilcoxon(a, b)
    assert res.p_value == pytest.approx(ref.pvalue) and res.statistic == pytest.approx(ref.statistic)
    assert res.statistic == 0.0 and res.p_value < 0.02  # every non-zero difference favours b
    assert stats.wilcoxon([1, 2], [1, 2]).p_value == 1.0
    with pytest.raises(ValueError):
        stats.wilcoxon([1, 2], [1])


# --------------------------------------------------------------------------------------- verdict parsing


@pytest.mark.parametrize("text,expected", [
    ("The answer is fine.\n\nRating: [[8]]", (8.0, "ok")),
    ("Rating: [[7.5]]", (7.5, "ok")),
    ("I'd say [9] overall.", (9.0, "ok")),  # FastChat's backup pattern
    ("[[3]] ... later [[9]]", (3.0, "ok")),  # FastChat takes the first match
    ("Rating: [[rating]]", (None, "missing")),
    ("no rating at all", (None, "missing")),
    ("Rating: [[11]]", (None, "out_of_range")),
])
def test_mt_bench_rating_parse(text, expected):
    assert mt_bench.parse_rating(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("My final verdict is tie: [[A=B]]", ("A=B", "ok")),
    ("... Assistant B is significantly better: [[B>>A]]", ("B>>A", "ok")),
    ("[[A>B]] and again [[A>B]]", ("A>B", "ok")),
    ("First [[A>B]], on reflection [[B>A]]", (None, "conflicting")),
    ("My final verdict: A is better", (None, "missing")),
    ("[[AB]]", (None, "invalid")),
])
def test_arena_hard_verdict_parse(text, expected):
    assert arena_hard.parse_verdict(text) == expected


def test_arena_hard_official_prompt_matches_judge_config(shared_data: Path):
    cfg = yaml.safe_load((shared_data / "arena_hard" / "judge_config.yaml").read_text())
    assert cfg["system_prompt"] == arena_hard.SYSTEM_PROMPT
    assert cfg["prompt_template"] == [arena_hard.PROMPT_TEMPLATE]
    assert cfg["regex_pattern"] == arena_hard.VERDICT_PATTERN
    s = arena_hard.judge_settings(cfg)
    m1 = arena_hard.judge_messages("Q?", "MODEL", "BASE", 1, s)
    m2 = arena_hard.judge_messages("Q?", "MODEL", "BASE", 2, s)
    assert m1[1]["content"].index("BASE") < m1[1]["content"].index("MODEL")  # game 1: baseline is A
    assert m2[1]["content"].index("MODEL") < m2[1]["content"].index("BASE")


def test_arena_hard_win_rate_weights_and_orders():
    rows = [
        {"id": "q1", "game": 1, "verdict": "B>>A"},  # model much better (model is B): 3 wins
        {"id": "q1", "game": 2, "verdict": "A>B"},  # model better (model is A): 1 win
        {"id": "q2", "game": 1, "verdict": "A>B"},  # baseline better: 1 loss
        {"id": "q2", "game": 2, "verdict": "A=B"},  # tie
        {"id": "q3", "game": 1, "verdict": None},
    ]
    agg = arena_hard.aggregate(rows, n_boot=200)
    assert agg["win_rate"] == pytest.approx(100 * (4 + 0.5) / 6, abs=0.01)
    assert agg["n_unparseable"] == 1 and agg["verdicts"]["model_much_better"] == 1
    assert agg["ci95"][0] <= agg["win_rate"] <= agg["ci95"][1]
    assert arena_hard.question_scores(rows) == {"q1": 1.0, "q2": pytest.approx(0.5 / 2)}


def test_mt_bench_judge_prompts_follow_fastchat(shared_data: Path):
    d = data.load_mt_bench(str(shared_data / "mt_bench"))
    q_math = next(q for q in d.questions if q["category"] == "math")
    name, msgs = mt_bench.judge_messages(q_math, ["A1", "A2"], 1, d.judge_prompts, d.references)
    assert name == "single-math-v1-multi-turn"
    assert d.references[q_math["id"]][1] in msgs[1]["content"] and "A2" in msgs[1]["content"]
    q_w = next(q for q in d.questions if q["category"] == "writing")
    name, msgs = mt_bench.judge_messages(q_w, ["A1", "A2"], 0, d.judge_prompts, d.references)
    assert name == "single-v1" and msgs[0]["content"] == "You are a helpful assistant."
    assert msgs[1]["content"].endswith("[The Start of Assistant's Answer]\nA1\n[The End of Assistant's Answer]")
    agg = mt_bench.aggregate([{"id": "1", "turn": 0, "category": "math", "score": 8.0},
                              {"id": "1", "turn": 1, "category": "math", "score": 6.0},
                              {"id": "2", "turn": 0, "category": "writing", "score": None}], n_boot=100)
    assert agg["score"] == 7.0 and agg["per_turn"] == {"turn_1": 8.0, "turn_2": 6.0}
    assert agg["n_unparseable"] == 1


# ------------------------------------------------------------------------------------------------ templates


def test_fastchat_templates_render_like_fastchat():
    from fastchat.conversation import get_conv_template

    turns = [("Hi there", "Hello!"), ("What is 2+2?", None)]
    for name in ("one_shot", "zephyr", "llama-2"):
        conv = get_conv_template(name)
        for u, a in turns:
            conv.append_message(conv.roles[0], u)
            conv.append_message(conv.roles[1], a)
        r = templates.render(name, turns)
        assert r.prompt == conv.get_prompt()
    assert templates.render("one_shot", turns).stop == ("###",)
    assert templates.render("zephyr", turns).stop == ("</s>",)


def test_llama3_template_is_metas_format():
    r = templates.render("llama-3", [("Hi", "Hello"), ("Next?", None)])
    assert r.prompt == ("<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                        "<|start_header_id|>assistant<|end_header_id|>\n\nHello<|eot_id|>"
                        "<|start_header_id|>user<|end_header_id|>\n\nNext?<|eot_id|>"
                        "<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert r.stop == ("<|eot_id|>",)
    r = templates.render("llama-3", [("Hi", None)], system="Be brief.")
    assert r.prompt.startswith("<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>")


def test_vanilla_and_chat_templates():
    class Tok:
        eos_token = "</s>"
        chat_template = None

    r = templates.render("vanilla", [("Q1", "A1"), ("Q2", None)], tokenizer=Tok())
    assert r.prompt == "Q1A1</s>Q2" and r.stop == ()
    assert templates.render("chat", [("Q", None)], as_messages=True).messages == [{"role": "user", "content": "Q"}]
    with pytest.raises(ConfigError, match="chat template"):
        templates.render("chat", [("Q", None)], tokenizer=Tok())
    with pytest.raises(ConfigError, match="Did you mean 'llama-2'"):
        templates.check_template("llama2")


def test_clean_answer_cuts_at_stop_string():
    assert templates.clean_answer(" Sure.\n### Human: more", ("###",)) == ("Sure.", True)
    assert templates.clean_answer("###x", ("###",)) == ("###x", False)  # FastChat: only after position 0
    assert templates.clean_answer("ok</s>", (), ["</s>"]) == ("ok", False)


# ---------------------------------------------------------------------------------------------------- signals


def test_signals_flag_the_papers_failure_modes():
    loop = "I have a server. " + "I have tried to ssh into the server and it works fine. " * 8
    s = signals.answer_signals(loop, "Find root cause for this error", "length")
    assert not s["stopped"] and s["repeated_ngram_share"] > 0.7 and s["repeated_sentence_share"] > 0.7
    good = "This error means the remote host closed the connection during key exchange. Check the firewall."
    g = signals.answer_signals(good, "Find root cause for this error", "eos")
    assert g["stopped"] and g["repeated_ngram_share"] == 0 and g["repeated_sentence_share"] == 0
    assert signals.answer_signals("  \n", "q", "stop")["empty"]
    prompt = "Write a short poem about the sea and the wind in the style of an old sailor song please"
    echo = "Write a short poem about the sea and the wind in the style of an old sailor song. The sea..."
    assert signals.answer_signals(echo, prompt, "stop")["echo"]
    assert not signals.answer_signals("Waves roll in, the wind sings.", prompt, "stop")["echo"]
    summ = signals.summarize([{"signals": s, "completion_tokens": 100}, {"signals": g, "completion_tokens": 20}])
    assert summ["stop_rate"] == 0.5 and summ["tokens_mean"] == 60 and summ["repetitive_rate"] == 0.5


def test_an_answer_ending_at_eos_the_stop_string_or_the_limit_is_told_apart():
    from nift.eval.generation import ended_by
    from nift.llm.types import Result

    def res(finish, why=None):
        return Result("x", "text", finish, 1, 1, 0.0, "m", stop_reason=why)

    assert ended_by(res("stop", "eos"), False) == "eos"
    assert ended_by(res("stop", "stop_string"), False) == "stop_string"  # the backend stopped at "###"
    assert ended_by(res("stop", "eos"), True) == "stop_string"  # FastChat's post-processing found "###"
    assert ended_by(res("length"), False) == "length" and ended_by(res("max_tokens"), False) == "length"
    assert ended_by(res("stop"), False) == "stop"  # an endpoint that did not say which
    rows = [signals.answer_signals("a b", "q", e) for e in ("eos", "stop_string", "length", "stop_string")]
    assert [r["stopped"] for r in rows] == [True, False, False, False]
    summ = signals.summarize([{"signals": r} for r in rows])
    assert (summ["stop_rate"], summ["stop_string_rate"], summ["hit_limit_rate"]) == (0.25, 0.5, 0.25)


# ----------------------------------------------------------------------------------------------------- IFEval


def test_ifeval_scores_equal_lm_evals_own_task(shared_data: Path):
    """Our per-prompt results and the four metrics equal what lm-eval's `ifeval` task computes with its own
    process_results and aggregation functions (loaded from its YAML) on the same responses."""
    items = data.load_ifeval(str(shared_data / "ifeval"))[:60]
    # Responses built to pass some checks and fail others: the prompt itself, an upper-cased copy, an empty
    # answer, a JSON-wrapped one, a short one with a postscript.
    variants = [
        lambda it: it["prompt"],
        lambda it: it["prompt"].upper(),
        lambda it: "",
        lambda it: json.dumps({"answer": it["prompt"][:80]}),
        lambda it: "Sure.\n*Yes* this is it, done, no question.\nP.S. bye",
    ]
    responses = [variants[i % len(variants)](it) for i, it in enumerate(items)]
    ours = [ifeval.score_answer(it, r) for it, r in zip(items, responses, strict=True)]
    agg = ifeval.aggregate(ours)

    from lm_eval.api.metrics import mean
    from lm_eval.tasks._yaml_loader import load_yaml
    from lm_eval.tasks.ifeval import utils as ifeval_utils

    cfg = load_yaml(Path(ifeval_utils.__file__).with_name("ifeval.yaml"))
    per_doc = []
    for it, r in zip(items, responses, strict=True):
        # The same random state as ours: a checker with unusable kwargs (prompt 1122) draws its own.
        random.seed(ifeval.seed_for(it["key"]))
        per_doc.append(cfg["process_results"]({k: it[k] for k in ("key", "instruction_id_list", "prompt", "kwargs")},
                                              [r]))
    aggs = {m["metric"]: (m["aggregation"] if callable(m["aggregation"]) else mean) for m in cfg["metric_list"]}
    for metric in ifeval.METRICS:
        theirs = aggs[metric]([d[metric] for d in per_doc])
        assert agg[metric] == pytest.approx(theirs), metric
    for o, d in zip(ours, per_doc, strict=True):
        assert o["strict"] == d["inst_level_strict_acc"] and o["prompt_loose"] == d["prompt_level_loose_acc"]
    assert 0 < agg["prompt_level_loose_acc"] < 1 and agg["n_instructions"] > 60


def test_punkt_tab_is_built_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("NIFT_CACHE", str(tmp_path))
    from nift.eval.nltk_setup import ensure_punkt_tab

    root = ensure_punkt_tab()
    english = root / "tokenizers" / "punkt_tab" / "english"
    assert {p.name for p in english.iterdir()} >= {"collocations.tab", "sent_starters.txt", "abbrev_types.txt",
                                                    "ortho_context.tab"}
    import nltk
    from nltk.tokenize.punkt import PunktTokenizer, load_punkt_params

    params = load_punkt_params(nltk.data.find("tokenizers/punkt_tab/english/"))
    assert "dr" in params.abbrev_types and len(params.ortho_context) > 1000
    tok = PunktTokenizer("english")
    assert tok.tokenize("Dr. Smith arrived at 5 p.m. on Monday. He left.") == [
        "Dr. Smith arrived at 5 p.m. on Monday.", "He left."]


# ------------------------------------------------------------------------------------------------------- data


def test_benchmark_data_from_path_and_packages(shared_data: Path):
    ife = data.load_ifeval(str(shared_data / "ifeval"))
    assert len(ife) == 541 and ife[0]["id"] == "1000"
    assert [r["prompt"] for r in data.load_ifeval("package")] == [r["prompt"] for r in ife]
    mt = data.load_mt_bench(str(shared_data / "mt_bench"))
    assert len(mt.questions) == 80 and len(mt.references) == 30
    mt_pkg = data.load_mt_bench("package")
    assert [q["turns"] for q in mt_pkg.questions] == [q["turns"] for q in mt.questions]
    ah = data.load_arena_hard("package")  # v2.0 with per-category baselines
    assert len(ah.questions) == 750 and len(ah.baselines) == 750
    cats = {ah.baselines[q["id"]]["model"] for q in ah.questions if q["category"] == "creative_writing"}
    assert cats == {"gemini-2.0-flash-001"}


def test_benchmark_data_errors_name_file_and_line(tmp_path: Path, shared_data: Path):
    bad = tmp_path / "input_data.jsonl"
    bad.write_text('{"key": 1, "prompt": "x", "instruction_id_list": [], "kwargs": []}\n{"key": 2, "prompt": "y"}\n')
    with pytest.raises(InputError, match=r"input_data.jsonl:2: missing field 'instruction_id_list'"):
        data.load_ifeval(str(bad))
    bad.write_text("{not json\n")
    with pytest.raises(InputError, match=r"input_data.jsonl:1: malformed JSON"):
        data.load_ifeval(str(tmp_path))
    with pytest.raises(InputError, match="not found"):
        data.load_ifeval(str(tmp_path / "nope"))
    with pytest.raises(InputError, match="--arena-baseline"):
        data.load_arena_hard(str(shared_data / "arena_hard"))
    base = tmp_path / "base.jsonl"
    base.write_text('{"question_id": "q", "choices": [{"turns": [{"content": 5}]}]}\n')
    with pytest.raises(InputError, match=r"base.jsonl:1: no answer text"):
        data.load_arena_hard(str(shared_data / "arena_hard"), baseline=str(base))
    assert math.isnan(stats.bootstrap_mean_ci([]).estimate)


def test_models_are_asked_in_the_papers_conversation_template(smollm2, gemma_base, tmp_path: Path):
    """Table 1 "Template": one_shot for Llama-2, zephyr for Mistral, llama-3 for Llama-3 base models; an instruct
    model through its own chat template; any other base model one_shot. Never the training template."""
    import json

    def folder(name, **config):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text(json.dumps(config))
        return str(d)

    assert templates.conversation_template(folder("m", model_type="mistral", vocab_size=32000))[0] == "zephyr"
    assert templates.conversation_template(folder("l2", model_type="llama", vocab_size=32000))[0] == "one_shot"
    assert templates.conversation_template(folder("l3", model_type="llama", vocab_size=128256))[0] == "llama-3"
    assert templates.conversation_template("meta-llama/Meta-Llama-3-8B")[0] == "llama-3"  # not cached: by name
    assert templates.conversation_template(gemma_base)[0] == "one_shot"  # a base model of no listed family
    assert templates.conversation_template(smollm2)[0] == "chat"  # an instruct model: its own chat template


@pytest.mark.parametrize("text, expected", [
    ("My final verdict: [[b>a]]", ("B>A", "ok")),  # upper-cased first
    ("[[A>B]] on reflection [[B>>A]]", ("B>>A", "ok")),  # the last match, not a conflict
    ("Verdict [A<<B]", ("A<<B", "ok")),  # the second pattern, and a label only v2.0 knows
    ("[[A>B]] then [B>A]", ("A>B", "ok")),  # the first pattern with a match wins
    ("[[A>>>B]]", (None, "invalid")),
    ("no verdict", (None, "missing")),
])
def test_arena_hard_v20_verdict_rules(text, expected):
    assert arena_hard.parse_verdict_v2(text) == expected


def test_arena_hard_v20_scoring_and_config():
    assert arena_hard.model_outcome("B<<A", 1) == (0.0, 3) and arena_hard.model_outcome("B<<A", 2) == (1.0, 3)
    assert arena_hard.model_outcome("B=A", 1) == (0.5, 1)
    rows = [{"id": "q1", "game": 1, "verdict": "A>B"}, {"id": "q1", "game": 2, "verdict": None},
            {"id": "q2", "game": 1, "verdict": "B>A"}, {"id": "q2", "game": 2, "verdict": "A=B"}]
    kept = arena_hard.complete_questions(rows)
    assert [r["verdict"] for r in kept] == [None, None, "B>A", "A=B"]  # q1 lost a game: dropped whole
    s = arena_hard.judge_settings({"prompt_template": "<|User Prompt|>\n{QUESTION}\nA: {ANSWER_A}\nB: {ANSWER_B}",
                                   "regex_patterns": [r"\[\[([AB<>=]+)\]\]"]}, "v2.0")
    assert arena_hard.judge_messages("Q", "M", "BASE", 1, s)[1]["content"] == "<|User Prompt|>\nQ\nA: BASE\nB: M"
    assert arena_hard.judge_settings(None, "v2.0")["regex_patterns"] == list(arena_hard.V2_PATTERNS)
