"""The paper's judge (Appendix B): is a row instructional, is it conversational? Prompts, sampling, parsing.

The two prompts are the paper's wording, kept verbatim. Two readings of the typeset listing: `{{ prompt}}` and
`{{answer}}` are Python format-string escapes, so the judge saw `{prompt}` and `{answer}`; and the closing
`"No "` carries a stray typesetting space. The listing's line breaks are kept. The paper does not print its
examples; the defaults below are ours and can be replaced per prompt (`examples` in the config).

The judge is asked to answer Yes or No first. A reply is parsed strictly (Yes/No as its first word, after any
markup or an "Answer:" label), else loosely (exactly one of the two words appears as a word in its first 200
characters), else it is unparseable: counted and reported per dataset, never guessed.
"""

from __future__ import annotations

import hashlib
import heapq
import re
from dataclasses import dataclass, field

# Lines 4-15 of the instructional listing and 2-13 of the conversational one are the same.
_EXAMPLES_AND_DOCUMENT = (
    "\n"
    "-----\n"
    "Example of a match:\n"
    "{positive_example}\n"
    "-----\n"
    "Example of a non-match:\n"
    "{negative_example}\n"
    "-----\n"
    "Document:\n"
    "{doc[j]}\n"
    "\n"
    'Please directly answer with "Yes" or "No" before providing the reasoning.'
)

INSTRUCTIONAL = (
    "Is the following text potentially synthesized for the purpose of instruction fine-tuning for Large Language "
    "Models (LLMs) (retaining content but not structure, e.g., removing dialogue speakers, etc., typically starting "
    "with a verb in command form followed by a series of responses to the command)? Or is it merely an article?\n"
    "If it can be considered as data for instruction fine-tuning, please present it in the format of User: "
    "{prompt} Assistant: {answer}, where\n"
    "both the prompt and the answer must be extracted directly from the text, without any external generation.\n"
    + _EXAMPLES_AND_DOCUMENT
)

CONVERSATIONAL = "Does the following text contain any form of dialogue?\n" + _EXAMPLES_AND_DOCUMENT

TEMPLATES = {"instructional": INSTRUCTIONAL, "conversational": CONVERSATIONAL}

_ARTICLE = (
    "The city council voted on Tuesday to extend the riverside cycle path by twelve kilometres, a project that "
    "officials expect to finish by the end of next year. The extension will connect three residential districts "
    "to the business park, and the council estimates that it will take about 2,000 car trips off the roads each "
    "day. Funding comes from a regional transport grant awarded in the spring."
)
DEFAULT_EXAMPLES = {
    "instructional": {
        "positive": (
            "Give three tips for staying productive when working from home. First, keep a fixed schedule and "
            "start work at the same time every day. Second, set up a dedicated workspace that you use only for "
            "work. Third, take short breaks away from the screen to rest your eyes and reset your focus."
        ),
        "negative": _ARTICLE,
    },
    "conversational": {
        "positive": (
            '"Did you finish the report?" Anna asked as she took off her coat.\n'
            '"Almost," said Mark. "I still need the sales figures from last quarter."\n'
            '"I\'ll send them over after lunch."'
        ),
        "negative": _ARTICLE,
    },
}


def examples_for(kind: str, overrides: dict[str, dict[str, str]]) -> tuple[str, str]:
    ex = {**DEFAULT_EXAMPLES[kind], **overrides.get(kind, {})}
    return ex["positive"], ex["negative"]


def render(kind: str, doc: str, positive: str, negative: str) -> str:
    """The prompt for one document; plain replacement, so braces in the document are left alone."""
    text = TEMPLATES[kind]
    text = text.replace("{positive_example}", positive).replace("{negative_example}", negative)
    head, tail = text.split("{doc[j]}")
    return head + doc + tail


_STRICT = re.compile(r"^[\W_]*(?:(?:final\s+)?answer\s*[:\-]\s*)?[\W_]*(yes|no)\b", re.IGNORECASE)
_ANY = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def parse_yes_no(answer: str | None) -> tuple[bool | None, str]:
    """(True for Yes / False for No / None, how: strict | loose | unparseable)."""
    if not answer:
        return None, "unparseable"
    m = _STRICT.match(answer)
    if m:
        return m.group(1).lower() == "yes", "strict"
    words = {w.lower() for w in _ANY.findall(answer[:200])}
    if len(words) == 1:
        return words.pop() == "yes", "loose"
    return None, "unparseable"


# ------------------------------------------------------------------------------------------------- sampling


def sample_key(seed: int, row_id: str) -> int:
    """Keyed by id only: auditing a run's prepare and distill data with one seed judges the same documents."""
    return int.from_bytes(hashlib.sha256(f"{seed}:judge:{row_id}".encode()).digest()[:8], "big")


@dataclass
class Sampler:
    """Streaming uniform sample without replacement of k rows per dataset (the k smallest keys); ids only, so
    memory is bounded by k whatever the dataset's size. k = None chooses every row."""

    k: int | None
    seed: int
    _heap: list[tuple[int, str]] = field(default_factory=list)

    def offer(self, row_id: str) -> None:
        if self.k is None:
            return
        item = (-sample_key(self.seed, row_id), row_id)
        if len(self._heap) < self.k:
            heapq.heappush(self._heap, item)
        elif item > self._heap[0]:
            heapq.heapreplace(self._heap, item)

    def chosen(self) -> set[str] | None:
        """The sampled ids, or None for every row."""
        return None if self.k is None else {rid for _, rid in self._heap}
