"""Benchmark decontamination: word n-gram overlap between training rows and evaluation prompts.

Text is lower-cased and split into `\\w+` words (punctuation and spacing do not hide a copy). A row is contaminated
when one of its word n-grams (13 by default, as in GPT-3's decontamination) equals an n-gram of a benchmark prompt;
a benchmark prompt shorter than n words is matched whole when it has at least `short_min` words.

Speed: the scan is a filter plus an exact check. Words become ids through the benchmarks' vocabulary (0 for any
word no benchmark uses: no matching n-gram can contain it); a batch of rows becomes one id array, and the polynomial
hash of every window comes from prefix sums in numpy (two vector operations per n-gram length, with modular
arithmetic mod 2^64 and P's inverse, so windows of every needed length cost the same). Windows holding a 0 are
dropped, the rest are looked up in the sorted benchmark hashes. Only a row with a candidate is re-tokenised with
character offsets and checked word by word, so every reported hit is exact and carries the matched text.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np

from nift.audit.benchmarks import BenchmarkPrompt

_WORD = re.compile(r"\w+")
_P = 0x9E3779B97F4A7C15  # odd, so invertible mod 2^64
_PINV = pow(_P, -1, 1 << 64)
_MASK = (1 << 64) - 1


@dataclass(frozen=True)
class Hit:
    benchmark: str
    prompt_id: str
    field: str  # prompt | completion
    matched_text: str
    n_words: int
    start_char: int
    benchmark_prompt: str

    def as_dict(self) -> dict[str, Any]:
        return {"benchmark": self.benchmark, "prompt_id": self.prompt_id, "field": self.field,
                "matched_text": self.matched_text, "n_words": self.n_words, "start_char": self.start_char,
                "benchmark_prompt": self.benchmark_prompt[:300]}


def _hash(ids: Sequence[int]) -> int:
    h = 0
    for x in ids:
        h = (h * _P + x) & _MASK
    return h


class NgramIndex:
    """The benchmarks' n-grams, ready for batched lookup."""

    def __init__(self, prompts: list[BenchmarkPrompt], n: int = 13, short_min: int = 8):
        self.n = n
        self.prompts = prompts
        self.vocab: dict[str, int] = {}
        self.prompt_ids: list[list[int]] = []
        by_len: dict[int, dict[int, list[tuple[int, int]]]] = defaultdict(lambda: defaultdict(list))
        self.unmatchable = 0  # prompts too short to match
        for pi, p in enumerate(prompts):
            ids = [self.vocab.setdefault(w, len(self.vocab) + 1) for w in _WORD.findall(p.text.lower())]
            self.prompt_ids.append(ids)
            if len(ids) >= n:
                for s in range(len(ids) - n + 1):
                    by_len[n][_hash(ids[s:s + n])].append((pi, s))
            elif len(ids) >= short_min:
                by_len[len(ids)][_hash(ids)].append((pi, 0))
            else:
                self.unmatchable += 1
        self.table: dict[int, dict[int, list[tuple[int, int]]]] = {k: dict(v) for k, v in by_len.items()}
        self.sorted: dict[int, np.ndarray] = {
            k: np.array(sorted(v), dtype=np.uint64) for k, v in self.table.items()
        }
        self.lengths = sorted(self.table)

    def stats(self) -> dict[str, Any]:
        return {"prompts": len(self.prompts), "vocabulary": len(self.vocab), "ngram": self.n,
                "ngrams": sum(len(v) for v in self.table.values()),
                "short_prompt_lengths": [k for k in self.lengths if k != self.n],
                "unmatchable_short_prompts": self.unmatchable}

    # -------------------------------------------------------------------------------------------- scanning

    def _ids(self, text: str) -> list[int]:
        words = _WORD.findall(text.lower())
        return list(map(self.vocab.get, words, repeat(0, len(words))))

    def candidates(self, texts: Sequence[str | None]) -> list[int]:
        """Indices of the texts that may share an n-gram with a benchmark (no false negatives)."""
        if not self.lengths:
            return []
        flat: list[int] = [0]
        starts: list[int] = []
        for t in texts:
            starts.append(len(flat))
            if t:
                flat += self._ids(t)
            flat.append(0)  # separator: no window spans two texts
        ids = np.array(flat, dtype=np.uint64)
        m = len(ids)
        # G[k] = sum_{j<k} ids[j] * Pinv^j ; hash(i, L) = P^(i+L-1) * (G[i+L] - G[i])   (all mod 2^64)
        pinv_pow = np.empty(m, dtype=np.uint64)
        pinv_pow[0] = 1
        pinv_pow[1:] = _PINV
        pinv_pow = np.cumprod(pinv_pow, dtype=np.uint64)
        p_pow = np.empty(m, dtype=np.uint64)
        p_pow[0] = 1
        p_pow[1:] = _P
        p_pow = np.cumprod(p_pow, dtype=np.uint64)
        g = np.zeros(m + 1, dtype=np.uint64)
        np.cumsum(ids * pinv_pow, dtype=np.uint64, out=g[1:])
        zeros = np.zeros(m + 1, dtype=np.int64)
        np.cumsum(ids == 0, out=zeros[1:])
        found: set[int] = set()
        starts_arr = np.array(starts)
        for L in self.lengths:
            if m < L:
                continue
            ok = np.nonzero(zeros[L:] - zeros[:-L] == 0)[0]
            if not len(ok):
                continue
            h = p_pow[ok + L - 1] * (g[ok + L] - g[ok])
            table = self.sorted[L]
            pos = np.minimum(np.searchsorted(table, h), len(table) - 1)
            hits = ok[table[pos] == h]
            if len(hits):
                found.update((np.searchsorted(starts_arr, hits, side="right") - 1).tolist())
        return sorted(found)

    def exact(self, text: str, field: str) -> list[Hit]:
        """Every maximal overlap of `text` with a benchmark prompt, with the matched text as written."""
        spans = [(m.start(), m.end()) for m in _WORD.finditer(text)]
        get = self.vocab.get
        ids = [get(text[s:e].lower(), 0) for s, e in spans]
        covered: dict[int, list[tuple[int, int]]] = defaultdict(list)  # prompt -> [(first word, end word)]
        for L in self.lengths:
            table = self.table[L]
            for i in range(len(ids) - L + 1):
                window = ids[i:i + L]
                if 0 in window:
                    continue
                for pi, s in table.get(_hash(window), ()):
                    if self.prompt_ids[pi][s:s + L] == window:
                        covered[pi].append((i, i + L))
        hits: list[Hit] = []
        for pi, ranges in covered.items():
            ranges.sort()
            merged = [list(ranges[0])]
            for a, b in ranges[1:]:
                if a <= merged[-1][1]:
                    merged[-1][1] = max(merged[-1][1], b)
                else:
                    merged.append([a, b])
            p = self.prompts[pi]
            for a, b in merged:
                c0, c1 = spans[a][0], spans[b - 1][1]
                hits.append(Hit(p.benchmark, p.id, field, text[c0:c1], b - a, c0, p.text))
        hits.sort(key=lambda h: (h.field, h.start_char, h.benchmark, h.prompt_id))
        return hits

    def scan(self, rows: Sequence[tuple[str | None, str | None]]) -> dict[int, list[Hit]]:
        """(prompt, completion) pairs -> {row index: hits} for the rows that overlap a benchmark."""
        texts: list[str | None] = []
        for prompt, completion in rows:
            texts += [prompt, completion]
        out: dict[int, list[Hit]] = {}
        for k in self.candidates(texts):
            row, which = divmod(k, 2)
            field = "completion" if which else "prompt"
            hits = self.exact(texts[k] or "", field)
            if hits:
                out.setdefault(row, []).extend(hits)
        return out
