"""Judge-free signals: how a base model fails before it learns to answer (the paper's Tables 10-14).

Per answer, from how it ended (`ended_by`: eos, stop_string, length; see `generation.ended_by`):
- `stopped`: the model ended the answer with its own end token (EOS) before the token limit — what training with
  EOS teaches a base model. An endpoint that stopped without saying whether at EOS or at a stop string counts here;
- `stop_string`: generation was cut at the conversation template's stop string (FastChat's `###` of `one_shot`,
  say): the model went on to write the next turn itself, and the template's post-processing ended the answer;
- `hit_limit`: the answer ran into the token limit;
- `empty`: nothing but whitespace (Table 12);
- `repeated_ngram_share`: share of the word n-grams (n=4 by default) that repeat an earlier n-gram of the same
  answer — 0 for varied text, close to 1 for a loop (Tables 10, 11, 14);
- `repeated_sentence_share`: share of sentences that are an exact (case- and space-normalised) repeat of an
  earlier sentence of the same answer;
- `echo`: the answer restates the prompt: it contains a run of `echo_words` consecutive words of the prompt (the
  whole prompt when it is shorter) — a base model continuing the question instead of answering it;
- `words`: answer length in words (tokens come from the generator).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import numpy as np

_WORD = re.compile(r"\w+(?:['’]\w+)*")
# Sentence ends: . ! ? or a line break; keeps this dependency-free (NLTK is only needed for IFEval).
_SENT_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def repeated_ngram_share(text: str, n: int = 4) -> float:
    w = words(text)
    if len(w) < n:
        return 0.0
    grams = [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams)


def sentences(text: str) -> list[str]:
    out = []
    for s in _SENT_SPLIT.split(text):
        norm = " ".join(words(s))
        if norm:
            out.append(norm)
    return out


def repeated_sentence_share(text: str) -> float:
    sents = sentences(text)
    if not sents:
        return 0.0
    seen: set[str] = set()
    repeats = 0
    for s in sents:
        if s in seen:
            repeats += 1
        seen.add(s)
    return repeats / len(sents)


def echoes_prompt(answer: str, prompt: str, echo_words: int = 10) -> bool:
    pw, aw = words(prompt), words(answer)
    if not pw or not aw:
        return False
    k = min(echo_words, len(pw))
    if len(aw) < k:
        return False
    prompt_grams = {tuple(pw[i:i + k]) for i in range(len(pw) - k + 1)}
    return any(tuple(aw[i:i + k]) in prompt_grams for i in range(len(aw) - k + 1))


def answer_signals(answer: str, prompt: str, ended_by: str, ngram: int = 4, echo_words: int = 10
                   ) -> dict[str, Any]:
    return {
        "stopped": ended_by in ("eos", "stop"),
        "stop_string": ended_by == "stop_string",
        "hit_limit": ended_by == "length",
        "empty": not answer.strip(),
        "repeated_ngram_share": round(repeated_ngram_share(answer, ngram), 6),
        "repeated_sentence_share": round(repeated_sentence_share(answer), 6),
        "echo": echoes_prompt(answer, prompt, echo_words),
        "words": len(words(answer)),
    }


# Which paired test fits each signal in `nift compare` (pass/fail -> McNemar, scores -> Wilcoxon).
SIGNAL_KINDS = {
    "stopped": "binary", "stop_string": "binary", "hit_limit": "binary", "empty": "binary", "echo": "binary",
    "repeated_ngram_share": "score", "repeated_sentence_share": "score", "words": "score",
    "completion_tokens": "score",
}
# Which direction is better, for the compare table ("+" higher is better, "-" lower is better, "" neutral).
SIGNAL_BETTER = {
    "stopped": "+", "stop_string": "", "hit_limit": "-", "empty": "-", "echo": "-", "repeated_ngram_share": "-",
    "repeated_sentence_share": "-",
    "words": "", "completion_tokens": "",
}


def summarize(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Rates and means over answer rows that carry `signals` (and `completion_tokens`)."""
    rows = list(rows)
    if not rows:
        return {"n": 0}
    sig = [r["signals"] for r in rows]
    toks = [r.get("completion_tokens") for r in rows if r.get("completion_tokens") is not None]

    def mean(key: str) -> float:
        return round(float(np.mean([s[key] for s in sig])), 4)

    return {
        "n": len(rows),
        "stop_rate": mean("stopped"),
        "stop_string_rate": mean("stop_string"),
        "hit_limit_rate": mean("hit_limit"),
        "empty_rate": mean("empty"),
        "repeated_ngram_share": mean("repeated_ngram_share"),
        "repeated_sentence_share": mean("repeated_sentence_share"),
        "repetitive_rate": round(float(np.mean([s["repeated_ngram_share"] >= 0.5 for s in sig])), 4),
        "echo_rate": mean("echo"),
        "words_mean": mean("words"),
        "words_median": float(np.median([s["words"] for s in sig])),
        "tokens_mean": round(float(np.mean(toks)), 2) if toks else None,
    }
