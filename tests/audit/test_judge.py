"""The Appendix-B judge: prompts verbatim, Yes/No parsing, sampling, and the protocol against a real small model
behind a real OpenAI-compatible server (SmolLM2-135M answers poorly: this tests the plumbing, not the verdicts)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from nift.audit import run
from nift.audit.config import AuditConfig
from nift.audit.judge import CONVERSATIONAL, DEFAULT_EXAMPLES, INSTRUCTIONAL, Sampler, parse_yes_no, render
from nift.audit.rows import Dataset, iter_rows
from nift.io import read_jsonl
from nift.llm.config import BackendConfig

from .conftest import RecordingProxy

PAPER_INSTRUCTIONAL = (
    "Is the following text potentially synthesized for the purpose of instruction fine-tuning for Large Language "
    "Models (LLMs) (retaining content but not structure, e.g., removing dialogue speakers, etc., typically starting "
    "with a verb in command form followed by a series of responses to the command)? Or is it merely an article?"
)


def test_prompts_are_the_papers_wording():
    assert INSTRUCTIONAL.startswith(PAPER_INSTRUCTIONAL + "\n")
    assert ("please present it in the format of User: {prompt} Assistant: {answer}, where\nboth the prompt and the "
            "answer must be extracted directly from the text, without any external generation.") in INSTRUCTIONAL
    assert CONVERSATIONAL.startswith("Does the following text contain any form of dialogue?\n")
    for t in (INSTRUCTIONAL, CONVERSATIONAL):
        assert ("-----\nExample of a match:\n{positive_example}\n-----\nExample of a non-match:\n{negative_example}"
                "\n-----\nDocument:\n{doc[j]}\n\n") in t
        assert t.endswith('Please directly answer with "Yes" or "No" before providing the reasoning.')


def test_render_replaces_placeholders_only():
    doc = "A {weird} document with {doc[j]}-like braces and {positive_example}."
    out = render("conversational", doc, "POS", "NEG")
    assert out == CONVERSATIONAL.replace("{positive_example}", "POS").replace("{negative_example}", "NEG").replace(
        "{doc[j]}", doc)
    assert "{prompt} Assistant: {answer}" in render("instructional", "d", "p", "n")


@pytest.mark.parametrize(("answer", "label", "how"), [
    ("Yes", True, "strict"), ("No", False, "strict"), ("yes, the text is a dialogue", True, "strict"),
    ("**No**. This is an article.", False, "strict"), ('"Yes" - it contains', True, "strict"),
    ("Answer: No", False, "strict"), ("  \n- YES\n", True, "strict"), ("No.\nReasoning: ...", False, "strict"),
    ("The answer is yes.", True, "loose"), ("I think no dialogue is present, so: No", False, "loose"),
    ("Yesterday I went", None, "unparseable"), ("Nobody knows", None, "unparseable"),
    ("Yes and no.", True, "strict"), ("It is hard to say; yes or no?", None, "unparseable"),
    ("", None, "unparseable"), (None, None, "unparseable"),
])
def test_parse_yes_no(answer, label, how):
    assert parse_yes_no(answer) == (label, how)


def test_sampler_is_uniform_bounded_and_seeded():
    ids = [f"doc{i}" for i in range(5000)]
    a, b, c = Sampler(200, 0), Sampler(200, 0), Sampler(200, 1)
    for i in ids:
        a.offer(i)
        c.offer(i)
    for i in reversed(ids):
        b.offer(i)
    assert len(a.chosen()) == 200 and a.chosen() == b.chosen()  # order of the input does not matter
    assert a.chosen() != c.chosen()
    first_half = sum(int(i[3:]) < 2500 for i in a.chosen())
    assert 70 < first_half < 130  # uniform: about half from each half
    assert Sampler(None, 0).chosen() is None  # every row


@pytest.fixture(scope="module")
def judged(audit_run, shared_data, openai_server):
    """The audit run judged by SmolLM2 behind `transformers serve` (through a recording proxy): 6 sampled rows x 2
    prompts."""
    run_dir, *_ = audit_run
    proxy = RecordingProxy(openai_server.root)
    judge = BackendConfig(backend="openai", model=openai_server.model, base_url=proxy.base_url,
                          api_key_env=openai_server.api_key_env, concurrency=1, max_retries=1, timeout_s=120)
    cfg = AuditConfig(benchmark_dir=str(shared_data), progress=False, judge=judge, judge_sample=6,
                      judge_max_tokens=4, judge_max_chars=400, drop=["instructional", "conversational"])
    try:
        res = run(cfg, run_dir, force=True, log=lambda m: None)
        yield run_dir, cfg, res, proxy, openai_server
    finally:
        proxy.close()


def test_judge_protocol_against_a_real_server(judged):
    run_dir, _, res, _, server = judged
    recs = list(read_jsonl(run_dir / "audit" / "judge.jsonl"))
    assert len(recs) == 12 and {r["prompt"] for r in recs} == {"instructional", "conversational"}
    assert len({r["id"] for r in recs}) == 6
    assert all(r["answer"] is not None and r["completion_tokens"] <= 4 for r in recs)
    for r in recs:  # every reply parsed exactly as the parser says, none guessed
        assert (r["label"], r["parse"]) == parse_yes_no(r["answer"])
    stats = res.manifest["stats"]
    d = stats["datasets"]["test-teacher continuous"]["judge"]
    for kind in ("instructional", "conversational"):
        j = d[kind]
        assert j["judged"] == 6 and j["parsed"] + j["unparseable"] == 6
        assert sum(j["parse"].values()) == 6
        mine = [r for r in recs if r["prompt"] == kind]
        parsed = [r for r in mine if r["label"] is not None]
        assert j["parsed"] == len(parsed) and j["yes"] == sum(bool(r["label"]) for r in parsed)
        assert j["percent"] == (round(100 * j["yes"] / len(parsed), 2) if parsed else None)
    assert res.manifest["cost"]["judge"]["requests"] == 12
    assert stats["judge"]["model"] == server.model
    # the drop policy on judged flags: a row is dropped iff the judge said yes to one of the prompts
    flags = {f["id"]: f for f in read_jsonl(run_dir / "audit" / "flags.jsonl")}
    yes = {r["id"] for r in recs if r["label"]}
    assert {i for i, f in flags.items() if not f["kept"]} == yes
    assert sum(1 for f in flags.values() if "judge" in f) == 6
    assert res.manifest["stats"]["kept"] + res.manifest["stats"]["dropped"] == 40
    summary = (run_dir / "audit" / "summary.md").read_text()
    assert "the paper's Table 8" in summary and "| test-teacher continuous | 6 |" in summary


def test_judge_requests_are_the_rendered_prompts_and_cached(judged):
    """What reached the server is the paper's prompt, filled in; a re-run sends nothing (the engine's store)."""
    run_dir, cfg, _, proxy, _ = judged
    recs = list(read_jsonl(run_dir / "audit" / "judge.jsonl"))
    sent = [b for b in proxy.bodies if b["path"].endswith("/chat/completions")]
    assert len(sent) == 12
    ds = Dataset("x", str(run_dir / "distill" / "data.jsonl"), "distill", str(run_dir / "prepare" / "data.jsonl"))
    rows = {r.id: r for r in iter_rows(ds, "text", "error", Counter())}
    expected = set()
    for rec in recs:
        tpl = INSTRUCTIONAL if rec["prompt"] == "instructional" else CONVERSATIONAL
        ex = DEFAULT_EXAMPLES[rec["prompt"]]
        expected.add(tpl.replace("{positive_example}", ex["positive"]).replace("{negative_example}", ex["negative"])
                     .replace("{doc[j]}", rows[rec["id"]].judge_doc[:400]))
    got = set()
    for body in sent:
        assert body["temperature"] == 0 and body["max_tokens"] == 4
        [msg] = body["messages"]
        assert msg["role"] == "user"
        got.add(msg["content"])
    assert got == expected
    # a second run: every reply from the store, the server is not asked again
    proxy.bodies.clear()
    res2 = run(cfg, run_dir, force=True, log=lambda m: None)
    assert proxy.bodies == []
    assert res2.manifest["cost"]["judge"]["cached"] == 12 and res2.manifest["cost"]["judge"]["new"] == 0
    recs2 = list(read_jsonl(run_dir / "audit" / "judge.jsonl"))
    assert [r["answer"] for r in recs2] == [r["answer"] for r in recs] and all(r["cached"] for r in recs2)


def test_examples_are_configurable(audit_run, shared_data, tmp_path):
    cfg = AuditConfig(examples={"conversational": {"positive": "A: hi\nB: hello"}}, judge=BackendConfig())
    from nift.audit.judging import Judge

    j = Judge(cfg, tmp_path, log=lambda m: None)
    assert j.examples["conversational"] == ("A: hi\nB: hello", DEFAULT_EXAMPLES["conversational"]["negative"])
    assert j.examples["instructional"] == (DEFAULT_EXAMPLES["instructional"]["positive"],
                                           DEFAULT_EXAMPLES["instructional"]["negative"])
    with pytest.raises(ValueError, match="unknown judge prompt"):
        AuditConfig(examples={"dialog": {"positive": "x"}})
    assert json.loads(json.dumps(cfg.model_dump(mode="json")))["examples"]
