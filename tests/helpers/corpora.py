"""Small real-text corpora for tests that need prepared prompts a CPU model answers quickly."""

from __future__ import annotations

import json
from pathlib import Path

from nift.prepare import PrepareConfig

SENTENCES = [
    "The river rose steadily through the night and by morning the low fields were under water",
    "She opened the old notebook and found her grandfather's careful drawings of birds",
    "Engineers tested the bridge with trucks full of sand before it opened to traffic",
    "The market was crowded with farmers selling apples pears and fresh bread",
    "After the storm the village spent a week repairing roofs and clearing roads",
    "A small telescope on the roof let the students watch the moons of Jupiter",
    "The orchestra rehearsed the symphony three times before the evening concert",
    "He learned to cook by watching his mother prepare soup every Sunday afternoon",
    "The library extended its hours so that students could study for their exams",
    "Volunteers planted two hundred trees along the edge of the new park",
    "The team trained in the cold every morning before the championship game",
    "A letter arrived from the city council about the new recycling rules",
]


def short_corpus(path: Path, n: int = 12) -> Path:
    """n short real-sentence documents (prompts of 7-15 words: a CPU model server answers them quickly)."""
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            a, b = SENTENCES[i % len(SENTENCES)], SENTENCES[(i + 5) % len(SENTENCES)]
            f.write(json.dumps({"text": f"{a}. {b}. Document {i}."}) + "\n")
    return path


def prepared_run(tmp_path: Path, n: int = 12) -> Path:
    """A run directory whose prepare stage holds n short prompts."""
    from nift.prepare import run as prepare

    run_dir = tmp_path / "run"
    corpus = short_corpus(tmp_path / "corpus.jsonl", n)
    prepare(PrepareConfig(input=[str(corpus)], n_docs=None, progress=False), run_dir, log=lambda *_: None)
    return run_dir
