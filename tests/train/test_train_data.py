"""Where training pairs come from: distill joined to prepare by id, prepare's reference, files in the
prompt/completion, alpaca and sharegpt formats; bad rows are errors naming file and line."""

from __future__ import annotations

import json

import pytest

from nift.artifacts import write_json, write_jsonl
from nift.errors import InputError
from nift.prompts.encoder import Conversation
from nift.train.data import load_examples, resolve_source, split_eval


def _stage(run, name, rows):
    d = run / name
    write_jsonl(d / "data.jsonl", rows)
    write_json(d / "manifest.json", {"stage": name})
    return d


@pytest.fixture
def run_dir(tmp_path):
    _stage(tmp_path, "prepare", [{"id": f"d{i}", "prompt": f"P{i}", "reference": f" R{i}"} for i in range(4)])
    return tmp_path


def test_distill_is_joined_to_prepare_by_id_in_distill_order(run_dir):
    _stage(run_dir, "distill", [{"id": "d2", "completion": " C2"}, {"id": "d0", "completion": " C0"},
                                {"id": "d3", "completion": ""}])
    convs, skipped = load_examples(resolve_source("distill", run_dir), run_dir)
    assert [(c.id, c.turns) for c in convs] == [("d2", (("P2", " C2"),)), ("d0", (("P0", " C0"),))]
    assert skipped == {"empty_completion": 1}


def test_reference_is_the_undistilled_baseline(run_dir):
    convs, _ = load_examples(resolve_source("reference", run_dir), run_dir, limit=2)
    assert [c.turns[0] for c in convs] == [("P0", " R0"), ("P1", " R1")]


def test_missing_upstream_says_what_to_run(tmp_path, run_dir):
    with pytest.raises(InputError, match=r"run `nift distill` first.*--data reference"):
        resolve_source("distill", run_dir)
    with pytest.raises(InputError, match="run `nift prepare` first"):
        resolve_source("reference", tmp_path / "empty")
    with pytest.raises(InputError, match="not one of distill, audit, reference and not a file"):
        resolve_source("nope.jsonl", run_dir)


@pytest.mark.parametrize("rows,needle", [
    ([{"id": "d0"}], r"distill/data.jsonl:1: missing field 'completion'"),
    ([{"id": "zz", "completion": "x"}], r"distill/data.jsonl:1: id 'zz' is not in"),
    ([{"id": "d0", "completion": "x"}, {"id": "d0", "completion": "y"}], r"data.jsonl:2: id 'd0' appears twice"),
    ([{"id": "d0", "completion": 5}], r"data.jsonl:1: field 'completion' must be a string"),
])
def test_bad_distill_rows(run_dir, rows, needle):
    _stage(run_dir, "distill", rows)
    with pytest.raises(InputError, match=needle):
        load_examples(resolve_source("distill", run_dir), run_dir)


def test_prompt_completion_file_errors_name_line_and_hint_format(tmp_path, write_rows):
    f = tmp_path / "d.jsonl"
    f.write_text('{"prompt": "a", "completion": "b"}\n\n{"prompt": "a", "completion": \n')
    with pytest.raises(InputError, match=r"d.jsonl:3: malformed JSON"):
        load_examples(resolve_source(str(f), tmp_path), tmp_path)
    write_rows(f, [{"instruction": "Say hi", "output": "hi"}])
    with pytest.raises(InputError, match=r"d.jsonl:1: missing field 'prompt'.*use --data-format alpaca"):
        load_examples(resolve_source(str(f), tmp_path), tmp_path)
    write_rows(f, [{"q": "a", "a": "b"}])
    convs, _ = load_examples(resolve_source(str(f), tmp_path), tmp_path, prompt_field="q", completion_field="a")
    assert convs[0].turns == (("a", "b"),)


def test_alpaca_json_array_with_input_system_and_history(tmp_path):
    f = tmp_path / "alpaca.json"
    f.write_text(json.dumps([
        {"instruction": "Translate", "input": "bonjour", "output": "hello", "system": "Be exact."},
        {"instruction": "And this?", "input": "", "output": "bye", "history": [["Translate: salut", "hi"]]},
    ]))
    convs, _ = load_examples(resolve_source(str(f), tmp_path), tmp_path, data_format="alpaca")
    assert convs[0].turns == (("Translate\nbonjour", "hello"),) and convs[0].system == "Be exact."
    assert convs[1].turns == (("Translate: salut", "hi"), ("And this?", "bye"))


def test_sharegpt_both_forms_and_bad_order(tmp_path, write_rows):
    f = write_rows(tmp_path / "s.jsonl", [
        {"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "q1"},
                           {"from": "gpt", "value": "a1"}, {"from": "human", "value": "q2"},
                           {"from": "gpt", "value": "a2"}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
    ])
    convs, _ = load_examples(resolve_source(str(f), tmp_path), tmp_path, data_format="sharegpt")
    assert convs[0].turns == (("q1", "a1"), ("q2", "a2")) and convs[0].system == "S"
    assert convs[1].turns == (("q", "a"),)
    write_rows(f, [{"conversations": [{"from": "gpt", "value": "a"}]}])
    with pytest.raises(InputError, match=r"s.jsonl:1: message 0 has role 'gpt' out of turn"):
        load_examples(resolve_source(str(f), tmp_path), tmp_path, data_format="sharegpt")


def test_eval_split_is_seeded_and_independent_of_order():
    convs = [Conversation.single("p", "c", id=f"x{i}") for i in range(200)]
    train, held = split_eval(convs, 0.05, 500, seed=1)
    assert len(held) == 10 and len(train) == 190
    _, held_rev = split_eval(convs[::-1], 0.05, 500, seed=1)
    assert {c.id for c in held} == {c.id for c in held_rev}
    assert {c.id for c in split_eval(convs, 0.05, 500, seed=2)[1]} != {c.id for c in held}
    assert split_eval(convs, 0.5, 3, seed=1)[1].__len__() == 3 and split_eval(convs, 0.0, 9, 1)[1] == []


def test_teacher_output_cut_at_max_tokens_is_trained_without_eos_or_dropped(run_dir):
    _stage(run_dir, "distill", [{"id": "d0", "completion": " ended.", "finish_reason": "stop"},
                                {"id": "d1", "completion": " cut mid-wo", "finish_reason": "length"},
                                {"id": "d2", "completion": " anthropic cut", "finish_reason": "max_tokens"},
                                {"id": "d3", "completion": " no reason recorded"}])
    convs, skipped = load_examples(resolve_source("distill", run_dir), run_dir)
    assert [(c.id, c.ends) for c in convs] == [("d0", True), ("d1", False), ("d2", False), ("d3", True)]
    assert not skipped
    convs, skipped = load_examples(resolve_source("distill", run_dir), run_dir, cut_at_max_tokens="drop")
    assert [c.id for c in convs] == ["d0", "d3"] and skipped == {"cut_at_max_tokens": 2}
    # prepare's reference runs to the end of its document: it always ends
    convs, _ = load_examples(resolve_source("reference", run_dir), run_dir)
    assert all(c.ends for c in convs)
