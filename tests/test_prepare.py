"""The paper's cut, sampling, and `nift prepare` on real OpenWebText documents."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from nift.errors import InputError
from nift.io import read_jsonl
from nift.prepare import PrepareConfig, cut_bounds, draw_cut, run

words = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12).filter(
    lambda w: w.strip() == w and w and not any(c.isspace() for c in w))
separators = st.sampled_from([" ", "  ", "\n", "\n\n", "\t", " \n ", "\u00a0"])


@st.composite
def documents(draw):
    ws = draw(st.lists(words, min_size=1, max_size=60))
    seps = draw(st.lists(separators, min_size=len(ws) + 1, max_size=len(ws) + 1))
    return seps[0] * draw(st.booleans()) + "".join(w + s for w, s in zip(ws, seps[1:], strict=False))


@settings(max_examples=300, deadline=None)
@given(documents(), st.integers(0, 2**32))
def test_cut_reconstructs_exactly_and_k_within_bounds(text, seed):
    c = draw_cut(text, seed)
    n = len(text.split())
    lo, hi = math.ceil(0.25 * n), math.floor(0.75 * n)
    if c is None:
        assert max(lo, 1) > min(hi, n - 1)
        return
    assert c["prompt"] + c["reference"] == text
    assert c["n_words"] == n
    assert lo <= c["cut_word"] <= hi
    assert len(c["prompt"].split()) == c["cut_word"]
    assert c["prompt"] and not c["prompt"][-1].isspace()  # cut right after a word, whitespace goes to reference
    assert draw_cut(text, seed) == c  # seeded: same seed, same cut


def test_cut_bounds_exact_arithmetic():
    assert cut_bounds(4) == (1, 3)
    assert cut_bounds(100) == (25, 75)
    assert cut_bounds(101) == (26, 75)
    assert cut_bounds(7) == (2, 5)
    lo, hi = cut_bounds(1)
    assert lo > hi  # a one-word document cannot be cut


def test_cut_is_uniform_chi_square():
    text = " ".join(f"w{i}" for i in range(40))  # k in [10, 30]: 21 values
    counts = Counter(draw_cut(text + f" x{s}", seed=0)["cut_word"] for s in range(8400))
    lo, hi = cut_bounds(41)
    assert set(counts) == set(range(lo, hi + 1))
    observed = [counts[k] for k in range(lo, hi + 1)]
    assert chisquare(observed).pvalue > 0.001


def test_prepare_on_openwebtext_writes_contract(tmp_path, owt_corpus):
    cfg = PrepareConfig(input=[str(owt_corpus)], n_docs=300, progress=False)
    res = run(cfg, tmp_path, log=lambda *_: None)
    rows = list(read_jsonl(tmp_path / "prepare" / "data.jsonl"))
    assert len(rows) == 300
    originals = {}
    for i, line in enumerate(owt_corpus.read_text(encoding="utf-8").splitlines(), start=1):
        originals[f"{owt_corpus}:{i}"] = json.loads(line)["text"]
    for r in rows:
        assert set(r) == {"id", "doc_hash", "prompt", "reference", "cut_word", "n_words", "source"}
        assert r["prompt"] + r["reference"] == originals[r["source"]]  # byte for byte
        lo, hi = cut_bounds(r["n_words"])
        assert lo <= r["cut_word"] <= hi
    assert len({r["id"] for r in rows}) == 300
    m = res.manifest
    assert m["rows"] == {"data.jsonl": 300} and m["stats"]["documents_written"] == 300
    assert m["stats"]["rows_read"] == 800 and m["files"]["data.jsonl"]["sha256"]


def test_prepare_all_800_reconstruct(tmp_path, owt_corpus):
    run(PrepareConfig(input=[str(owt_corpus)], n_docs=None, progress=False), tmp_path, log=lambda *_: None)
    rows = list(read_jsonl(tmp_path / "prepare" / "data.jsonl"))
    texts = {json.loads(line)["text"] for line in owt_corpus.read_text(encoding="utf-8").splitlines()}
    assert len(rows) == 800
    assert {r["prompt"] + r["reference"] for r in rows} == texts


def test_sampling_seeded_nested_and_uniform(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"document number {i} has some words in it"}) + "\n"
                              for i in range(200)))
    def ids(n, seed, d):
        run(PrepareConfig(input=[str(corpus)], n_docs=n, seed=seed, progress=False), tmp_path / d,
            log=lambda *_: None)
        return [r["id"] for r in read_jsonl(tmp_path / d / "prepare" / "data.jsonl")]
    a, b, c = ids(50, 1, "a"), ids(50, 1, "b"), ids(20, 1, "c")
    assert a == b and a[:20] == c  # reproducible; the first n of an N-sample is the n-sample
    assert ids(50, 2, "d") != a
    # uniform inclusion: over many seeds each document is picked ~ n/N of the time
    from nift.corpus import Location
    from nift.prepare import sample
    docs = [(f"doc {i} alpha beta gamma delta epsilon zeta", Location("lines", "x", i)) for i in range(40)]
    hits = Counter()
    for s in range(1000):
        for _, _, loc, _, _ in sample(docs, 10, s, 2, True, Counter()):
            hits[loc.line] += 1
    assert chisquare([hits[i] for i in range(40)]).pvalue > 0.001


def test_duplicates_and_short_documents_are_counted(tmp_path):
    corpus = tmp_path / "c.jsonl"
    lines = [{"text": "one two three four five six seven eight nine ten"}] * 3
    lines += [{"text": "too short"}, {"text": "   "}, {"text": "another document with enough words to be cut here"}]
    corpus.write_text("".join(json.dumps(x) + "\n" for x in lines))
    res = run(PrepareConfig(input=[str(corpus)], n_docs=None, progress=False), tmp_path, log=lambda *_: None)
    s = res.manifest["stats"]
    assert s["documents_written"] == 2
    assert s["skipped"] == {"duplicate_of_sampled": 2, "too_short": 1, "empty": 1}


def test_inputs_txt_dir_glob_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tmp_path / "docs"
    d.mkdir()
    (d / "a.txt").write_text("alpha beta gamma delta epsilon zeta eta theta iota\nkappa lambda\n")
    (d / "b.txt").write_text("uno dos tres cuatro cinco seis siete ocho nueve diez")
    pq.write_table(pa.table({"body": ["the quick brown fox jumps over the lazy dog again"] * 1
                             + ["lorem ipsum dolor sit amet consectetur adipiscing elit sed do"]}),
                   tmp_path / "p.parquet")
    res = run(PrepareConfig(input=[str(d), str(tmp_path / "*.parquet")], text_field="body", n_docs=None,
                            progress=False), tmp_path / "out", log=lambda *_: None)
    rows = list(read_jsonl(tmp_path / "out" / "prepare" / "data.jsonl"))
    assert len(rows) == 4 and res.manifest["stats"]["files"] == 3
    by_src = {r["source"]: r["prompt"] + r["reference"] for r in rows}
    assert by_src[str(d / "a.txt")] == (d / "a.txt").read_text()
    assert by_src[f"{tmp_path / 'p.parquet'}#row1"].startswith("lorem")


@pytest.mark.parametrize("content,needle", [
    (b'{"text": "fine words here to cut up"}\n{"text": broken}\n', ":2: malformed JSON"),
    (b'{"text": "fine words here to cut up"}\n{"body": "x"}\n', ":2: no field 'text' (fields: body)"),
    (b'{"text": "caf\xe9 au lait is a drink"}\n', ":1: not valid UTF-8"),
    (b'[1, 2]\n', ":1: expected a JSON object"),
    (b'{"text": 5}\n', ":1: field 'text' is int"),
    (b"", "empty file"),
])
def test_bad_input_names_file_and_line(tmp_path, content, needle):
    f = tmp_path / "bad.jsonl"
    f.write_bytes(content)
    with pytest.raises(InputError) as e:
        run(PrepareConfig(input=[str(f)], progress=False), tmp_path, log=lambda *_: None)
    assert str(f) in str(e.value) and needle in str(e.value)


def test_bad_rows_skipped_and_counted_when_asked(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_bytes(b'{"text": "good document with enough words in it to be cut"}\n'
                  b'{oops\n{"x": 1}\n{"text": "caf\xe9 x"}\n')
    res = run(PrepareConfig(input=[str(f)], on_bad_row="skip", progress=False), tmp_path, log=lambda *_: None)
    assert res.manifest["stats"]["skipped"] == {"malformed_json": 1, "missing_field": 1, "non_utf8": 1}
    assert res.manifest["stats"]["documents_written"] == 1


def test_missing_inputs(tmp_path):
    with pytest.raises(InputError, match="matches no file"):
        run(PrepareConfig(input=[str(tmp_path / "*.jsonl")]), tmp_path)
    with pytest.raises(InputError, match="input not found"):
        run(PrepareConfig(input=[str(tmp_path / "nope.jsonl")]), tmp_path)
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(InputError, match="unsupported file type"):
        run(PrepareConfig(input=[str(tmp_path / "x.csv")]), tmp_path)


def test_hf_dataset_id_offline_is_a_clear_error(tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match=r"hf:someone/corpus: could not open the dataset"):
        run(PrepareConfig(input=["hf:someone/corpus"], progress=False), tmp_path, log=lambda *_: None)
