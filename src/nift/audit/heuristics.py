"""Cheap per-row flags: the paper's upper-case rule and the failure modes of a teacher asked to continue a text.

Each rule is a small function of the row's strings, returning `None` (not flagged) or a dict of details that goes
into `audit/flags.jsonl`. `Heuristics` holds the compiled patterns and the language detector and applies every rule
to a row; it streams (no state between rows).

- `uppercase_start` (the paper, §6): the continuation starts with an upper-case letter where the original remainder
  does not — the teacher summarised or answered instead of continuing. Only for rows with a reference.
- `echo`: the completion repeats the prompt (a run of `echo_words` prompt words at its start, or most of its
  word runs taken from the prompt).
- `preamble`: an assistant opening ("Sure", "Here is", "As an AI", "Certainly", ...).
- `refusal`: "I'm sorry, but I can't ...", "I cannot assist ...", ...
- `truncated`: the backend stopped at max tokens (finish_reason `length`, or `max_tokens`).
- `empty`: no letter or digit at all.
- `language`: the completion is, with confidence, in another language than the corpus (py3langid: langid.py's
  97-language model, numpy only; the first 256 characters, about 2,000 completions/s on one core here).
"""

from __future__ import annotations

import re
from typing import Any

_WORD = re.compile(r"\w+")


def _straight_quotes(s: str) -> str:
    # str.replace is several times faster than str.translate with a mapping
    return s.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')


# Openings of a chat assistant answering instead of continuing. Anchored at the start (after quotes/markup).
DEFAULT_PREAMBLES = (
    r"sure\b", r"certainly\b", r"of course\b", r"absolutely\b", r"okay[,!.]", r"great question\b",
    r"here(?:'s| is| are)\b", r"as an ai\b", r"as a (?:large )?language model\b",
    r"i(?:'d| would) be (?:happy|glad) to\b", r"i(?:'m| am) (?:happy|glad) to\b",
    r"i can (?:help|continue)\b", r"let me (?:continue|help)\b", r"continuing (?:from|the|where)\b",
    r"(?:the )?continuation(?: of the (?:text|article|sentence|passage))?\s*:",
    r"it (?:seems|looks) like (?:you|the text)\b", r"this (?:text|article|passage) (?:is|appears|seems|discusses)\b",
)
# Refusals, searched near the start.
DEFAULT_REFUSALS = (
    r"\bi(?:'m| am) sorry,? but\b", r"\bi apologi[sz]e,? but\b",
    r"\bi (?:can't|cannot|can not|won't|am unable to|'m unable to|am not able to|'m not able to) "
    r"(?:help|assist|comply|provide|continue|complete|fulfil|fulfill|do that|create|generate|write|engage)",
    r"\bas an ai(?: language model)?,? i (?:can't|cannot|don't|do not|am not able)",
    r"\b(?:this|that|your) request (?:violates|goes against|is against)\b",
    r"\bi must (?:decline|refuse)\b",
)
_LEAD = r"^[\s\"'`*#>_\-\[(]*"


def first_letter_upper(text: str | None) -> bool:
    """Is the first non-space character an upper-case letter (the paper's test)?"""
    if not text:
        return False
    s = text.lstrip()
    return bool(s) and s[0].isupper()


def uppercase_start(completion: str, reference: str | None) -> dict[str, Any] | None:
    """The paper's rule: flagged when the continuation starts upper-case and the original remainder does not."""
    if reference is None or not first_letter_upper(completion) or first_letter_upper(reference):
        return None
    return {"completion_start": completion.lstrip()[:40], "reference_start": reference.lstrip()[:40]}


def empty(completion: str) -> dict[str, Any] | None:
    return None if any(ch.isalnum() for ch in completion) else {"chars": len(completion)}


def truncated(finish_reason: str | None) -> dict[str, Any] | None:
    return {"finish_reason": finish_reason} if finish_reason in ("length", "max_tokens") else None


def _norm_words(text: str) -> list[str]:
    return _WORD.findall(text.lower())  # quotes are not word characters: curly or straight, same words


def echo(prompt: str | None, completion: str, n: int = 8) -> dict[str, Any] | None:
    """The completion repeats the prompt: its first n words are a run of the prompt, or most n-word windows are.

    Substring search on normalised word strings keeps this linear and in C (no n-gram sets per row).
    """
    if not prompt:
        return None
    cw = _norm_words(completion)
    if len(cw) < n:
        return None
    hay = " " + " ".join(_norm_words(prompt)) + " "
    first = " " + " ".join(cw[:n]) + " "
    if first in hay:
        return {"where": "start", "text": " ".join(cw[:n])}
    starts = range(0, len(cw) - n + 1, n)  # non-overlapping windows: a sample that bounds the cost
    hits = sum(1 for i in starts if " " + " ".join(cw[i:i + n]) + " " in hay)
    if len(starts) >= 2 and hits / len(starts) >= 0.5:
        return {"where": "body", "share": round(hits / len(starts), 3)}
    return None


class LanguageDetector:
    """py3langid, loaded once on first use (1 s); restricted to nothing, so any of its 97 languages can be seen."""

    def __init__(self, sample_chars: int = 256):
        self.sample_chars = sample_chars
        self._ident = None

    def detect(self, text: str) -> tuple[str, float]:
        if self._ident is None:
            try:
                from py3langid.langid import MODEL_FILE, LanguageIdentifier
            except ImportError:
                from nift.errors import missing_package

                raise missing_package("py3langid", purpose="the language check (or set language: null)") from None
            self._ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        lang, conf = self._ident.classify(text[: self.sample_chars])
        return lang, float(conf)


def majority_language(texts: list[str], detector: LanguageDetector, min_chars: int = 40) -> str | None:
    """The corpus's language: the most common confident detection over a sample of prompts."""
    from collections import Counter

    votes = Counter()
    for t in texts:
        if len(t.strip()) >= min_chars:
            lang, conf = detector.detect(t)
            if conf >= 0.5:
                votes[lang] += 1
    return votes.most_common(1)[0][0] if votes else None


class Heuristics:
    """Every cheap rule, compiled once; `check(row)` returns {flag: details} for the flags that fire."""

    def __init__(self, preambles: list[str] | None = None, refusals: list[str] | None = None, echo_words: int = 8,
                 language: str | None = None, language_min_confidence: float = 0.9, language_min_chars: int = 40,
                 detector: LanguageDetector | None = None):
        self.preamble_re = _compile_all(preambles or DEFAULT_PREAMBLES, "preamble_patterns", anchored=True)
        self.refusal_re = _compile_all(refusals or DEFAULT_REFUSALS, "refusal_patterns")
        self.echo_words = echo_words
        self.language = language
        self.language_min_confidence = language_min_confidence
        self.language_min_chars = language_min_chars
        self.detector = detector or LanguageDetector()

    def preamble(self, completion: str) -> dict[str, Any] | None:
        m = self.preamble_re.search(_straight_quotes(completion[:200]))
        # an assistant opens with a capital ("Sure, ..."); "sure enough" mid-sentence is a continuation
        if m and next((c for c in m.group(0) if c.isalpha()), "a").isupper():
            return {"match": m.group(0).strip()}
        return None

    def refusal(self, completion: str) -> dict[str, Any] | None:
        m = self.refusal_re.search(_straight_quotes(completion[:300]))
        return {"match": m.group(0).strip()} if m else None

    def other_language(self, completion: str) -> dict[str, Any] | None:
        if not self.language or len(completion.strip()) < self.language_min_chars:
            return None
        lang, conf = self.detector.detect(completion)
        # zxx is langid's "no linguistic content" (code, numbers, tables): not another language
        if lang not in (self.language, "zxx") and conf >= self.language_min_confidence:
            return {"lang": lang, "confidence": round(conf, 3), "expected": self.language}
        return None

    def check(self, prompt: str | None, completion: str, reference: str | None,
              finish_reason: str | None) -> dict[str, dict[str, Any]]:
        found = {
            "uppercase_start": uppercase_start(completion, reference),
            "echo": echo(prompt, completion, self.echo_words),
            "preamble": self.preamble(completion),
            "refusal": self.refusal(completion),
            "truncated": truncated(finish_reason),
            "empty": empty(completion),
            "language": self.other_language(completion),
        }
        return {k: v for k, v in found.items() if v is not None}


def _compile_all(patterns: list[str] | tuple[str, ...], field: str, anchored: bool = False) -> re.Pattern[str]:
    """One alternation (one scan per row instead of one per pattern); each pattern checked alone for the error."""
    from nift.errors import ConfigError

    for p in patterns:
        try:
            re.compile(p)
        except re.error as e:
            raise ConfigError(f"{field}: {p!r} is not a valid regular expression: {e}") from None
    body = "|".join(f"(?:{p})" for p in patterns)
    return re.compile(_LEAD + "(?:" + body + ")" if anchored else body, re.IGNORECASE)
