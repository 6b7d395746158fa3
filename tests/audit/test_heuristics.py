"""Each cheap rule on crafted positives and negatives."""

from __future__ import annotations

import pytest

from nift.audit.heuristics import Heuristics, echo, empty, first_letter_upper, truncated, uppercase_start

from .conftest import GERMAN

H = Heuristics(language="en")


@pytest.mark.parametrize(("completion", "reference"), [
    ("The report, published on Monday, found", " the council had overspent"),  # the paper's case
    ("\n\nSure! Here is the rest", " and then"),
    ("Summary: the article", "; however, the"),  # reference starts with punctuation: not upper-case
])
def test_uppercase_start_positive(completion, reference):
    assert uppercase_start(completion, reference) is not None


@pytest.mark.parametrize(("completion", "reference"), [
    (" the council had overspent", " the council had overspent"),
    (" The council met", " The mayor said"),  # the original also starts upper-case: the paper keeps it
    (" and then the rain", " The mayor said"),
    ("", " the council"),
    ("The council", None),  # no reference (alpaca, plain text): the rule does not apply
    ("1995 was the year", " in 1995"),
])
def test_uppercase_start_negative(completion, reference):
    assert uppercase_start(completion, reference) is None


def test_first_letter_upper_skips_whitespace_only():
    assert first_letter_upper("  \n Hello") and not first_letter_upper(" hello") and not first_letter_upper("  ")


PROMPT = ("The committee met on Thursday to discuss the budget for the coming year, and after a long debate the "
          "members agreed to postpone the vote on the new library until the spring")


@pytest.mark.parametrize("completion", [
    " the members agreed to postpone the vote on the new library until the spring, when more money is expected.",
    "The committee met on Thursday to discuss the budget for the coming year, and then everyone went home.",
    # most of the completion copied from the prompt, not at its start
    " Indeed, yes. The committee met on Thursday to discuss the budget for the coming year, and after a long "
    "debate the members agreed to postpone the vote on the new library",
])
def test_echo_positive(completion):
    assert echo(PROMPT, completion) is not None


@pytest.mark.parametrize("completion", [
    ", saying that the roof of the old building needed urgent repairs before anything else could be funded.",
    " the vote",  # too short to tell
    "",
])
def test_echo_negative(completion):
    assert echo(PROMPT, completion) is None
    assert echo(None, completion) is None


@pytest.mark.parametrize("completion", [
    "Sure, here's the continuation of the text:", "Sure! The article goes on", "Certainly! Here is",
    "Here is a possible continuation:", "Here's how the story continues", "As an AI language model, I",
    "**Sure!** Continuing from where", '"Sure," I', "I'd be happy to continue this article.",
    "Of course! Here", "Continuation: the mayor", "This article discusses the budget",
])
def test_preamble_positive(completion):
    assert H.preamble(completion) is not None, completion


@pytest.mark.parametrize("completion", [
    " sure enough, the train was late again", " here is where the trouble began", "Surely nobody expected it",
    " and the mayor said", "The company reported a loss", " certainly not", "Here and there, small shops",
])
def test_preamble_negative(completion):
    assert H.preamble(completion) is None, completion


@pytest.mark.parametrize("completion", [
    "I'm sorry, but I can't help with that request.", "I’m sorry, but I cannot continue this text.",
    "I cannot assist with creating that content.", "As an AI language model, I cannot browse the internet.",
    "Unfortunately, I am unable to complete this passage.", "I apologize, but the text you provided",
    "I must decline to write this.",
])
def test_refusal_positive(completion):
    assert H.refusal(completion) is not None, completion


@pytest.mark.parametrize("completion", [
    " the company cannot provide further details, a spokesman said.", " I can help you move house on Sunday.",
    " sorry state of affairs", "",
])
def test_refusal_negative(completion):
    assert H.refusal(completion) is None, completion


def test_truncated_and_empty():
    assert truncated("length") and truncated("max_tokens")
    assert truncated("stop") is None and truncated(None) is None and truncated("end_turn") is None
    for text in ("", "   ", "\n\n", "...", " — "):
        assert empty(text) is not None, repr(text)
    for text in ("a", " 42", "ok."):
        assert empty(text) is None


@pytest.mark.parametrize("completion", [
    GERMAN,
    "Le conseil municipal a voté mardi pour prolonger la piste cyclable de douze kilomètres le long du fleuve.",
])
def test_language_positive(completion):
    got = H.other_language(completion)
    assert got is not None and got["lang"] in ("de", "fr") and got["expected"] == "en"


@pytest.mark.parametrize("completion", [
    " the council voted on Tuesday to extend the cycle path by twelve kilometres along the river.",
    "Bonjour!",  # too short to tell
    "1. #F7F3F2\n2. #F6EAF7 \n3. #D9D3D9 \n4. #C4BEC5\n5. #A8A2A7",  # no language at all (langid: zxx)
    "",
])
def test_language_negative(completion):
    assert H.other_language(completion) is None
    assert Heuristics(language=None).other_language(GERMAN) is None  # check off


def test_check_collects_every_rule():
    found = H.check(PROMPT, "Sure! " + PROMPT, " the end", "length")
    assert set(found) == {"uppercase_start", "preamble", "truncated", "echo"}
    assert H.check(PROMPT, " and the library opened in May after all.", " and", "stop") == {}


def test_bad_pattern_is_a_config_error():
    from nift.errors import ConfigError

    with pytest.raises(ConfigError, match="preamble_patterns"):
        Heuristics(preambles=["(unclosed"])
