"""`nift audit` end to end on a real prepare run with planted teacher failures: flags, drop policy, outputs."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from pydantic import ValidationError

from nift.audit import run
from nift.audit.config import AuditConfig
from nift.cli import main
from nift.errors import InputError
from nift.io import read_jsonl


def audit(run_dir, shared_data, **kw):
    cfg = AuditConfig(benchmark_dir=str(shared_data), progress=False, **kw)
    return run(cfg, run_dir, log=lambda m: None)


def test_every_planted_failure_is_flagged(audit_run, shared_data):
    run_dir, _, rows, expect = audit_run
    res = audit(run_dir, shared_data, drop=["none"])
    flags = {f["id"]: f for f in read_jsonl(run_dir / "audit" / "flags.jsonl")}
    assert list(flags) == [r["id"] for r in rows]  # every row, input order
    for flag, ids in expect.items():
        hit = {i for i, f in flags.items() if flag in f["flags"]}
        if flag in ("uppercase_start", "contaminated", "refusal", "empty", "truncated", "language"):
            assert hit == ids, flag  # exact: no false positive on the real OpenWebText continuations
        else:
            assert ids <= hit, flag
    contaminated = next(f for f in flags.values() if "contaminated" in f["flags"])
    [h] = contaminated["details"]["contaminated"]
    assert h["benchmark"] == "ifeval" and h["field"] == "completion" and h["n_words"] >= 13
    assert h["matched_text"] in rows[6]["completion"]
    stats = res.manifest["stats"]
    assert stats["language"] == "en" and stats["rows"] == 40 and stats["kept"] == 40
    assert stats["datasets"]["test-teacher continuous"]["contaminated_by_benchmark"] == {"ifeval": 1}
    # prepare's reference of the planted rows is in the flags' details for the upper-case rule
    up = [f for f in flags.values() if "uppercase_start" in f["flags"]]
    assert all(not f["details"]["uppercase_start"]["reference_start"][0].isupper() for f in up)


def test_drop_policy_counts_add_up_and_output_is_distill_schema(audit_run, shared_data):
    run_dir, _, rows, expect = audit_run
    drop = ["uppercase_start", "contaminated", "empty", "refusal", "truncated"]
    res = audit(run_dir, shared_data, drop=drop)
    s = res.manifest["stats"]
    flags = list(read_jsonl(run_dir / "audit" / "flags.jsonl"))
    kept = list(read_jsonl(run_dir / "audit" / "data.jsonl"))
    should_drop = set().union(*(expect[f] for f in drop))
    assert {f["id"] for f in flags if not f["kept"]} == should_drop
    assert s["kept"] + s["dropped"] == s["rows"] == len(rows)
    assert s["kept"] == len(kept) == len(rows) - len(should_drop)
    d = s["datasets"]["test-teacher continuous"]
    assert sum(d["dropped_attributed"].values()) == s["dropped"]
    assert d["dropped_by_flag"] == {f: len(expect[f]) for f in drop}
    # attributed to the first flag of the policy: the refusal row starts upper-case, so it counts there
    assert d["dropped_attributed"]["uppercase_start"] == len(expect["uppercase_start"])
    # kept rows are the distill rows, byte-identical in content and in order
    by_id = {r["id"]: r for r in rows}
    assert kept == [by_id[f["id"]] for f in flags if f["kept"]]
    assert res.manifest["rows"] == {"data.jsonl": len(kept), "flags.jsonl": len(rows)}
    summary = (run_dir / "audit" / "summary.md").read_text()
    assert "| test-teacher continuous | 40 |" in summary and "Filtered training set" in summary
    # Counter of dropped_by over flags equals the manifest's
    assert Counter(f["dropped_by"][0] for f in flags if not f["kept"]) == Counter(d["dropped_attributed"])


def test_rerun_is_skipped_and_changes_rerun(audit_run, shared_data):
    run_dir, *_ = audit_run
    logs: list[str] = []
    cfg = AuditConfig(benchmark_dir=str(shared_data), progress=False, drop=["empty"])
    run(cfg, run_dir, log=logs.append)
    assert run(cfg, run_dir, log=logs.append).skipped
    cfg2 = AuditConfig(benchmark_dir=str(shared_data), progress=False, drop=["empty", "echo"])
    assert not run(cfg2, run_dir, log=logs.append).skipped


def test_alpaca_and_text_formats(tmp_path, shared_data):
    alpaca = tmp_path / "alpaca_data.json"
    data = [
        {"instruction": "Give three tips for staying healthy.", "input": "", "output": "1. Eat a balanced diet."},
        {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
        {"instruction": "Write a poem.", "input": "", "output": "I'm sorry, but I can't write poems."},
        {"instruction": "Repeat this.", "input": "", "output": ""},
    ]
    alpaca.write_text(json.dumps(data))
    articles = tmp_path / "articles.jsonl"
    articles.write_text("\n".join(json.dumps({"body": t}) for t in [
        "The harbour was quiet that morning, and the fishing boats had not yet gone out to sea.",
        "Sure! Here is a random article about gardening and the joys of growing tomatoes at home.",
    ]) + "\n")
    logs: list[str] = []
    cfg = AuditConfig(input=[str(alpaca), str(articles)], text_field="body", benchmark_dir=str(shared_data),
                      progress=False, drop=["refusal", "empty", "preamble"], language="en")
    res = run(cfg, tmp_path / "run", log=logs.append)
    assert any("alpaca_data.json: format alpaca" in m for m in logs)
    assert any("articles.jsonl: format text" in m for m in logs)
    d = res.manifest["stats"]["datasets"]
    assert d["alpaca_data"]["format"] == "alpaca" and d["alpaca_data"]["rows"] == 4
    assert d["alpaca_data"]["dropped"] == 2 and d["articles"]["dropped"] == 1
    kept = list(read_jsonl(tmp_path / "run" / "audit" / "data.jsonl"))
    assert kept[:2] == data[:2] and kept[2] == {"body": "The harbour was quiet that morning, and the fishing "
                                                         "boats had not yet gone out to sea."}
    flags = list(read_jsonl(tmp_path / "run" / "audit" / "flags.jsonl"))
    assert [f["id"] for f in flags][:2] == [f"{alpaca}[0]", f"{alpaca}[1]"]  # no id field: file and position


def test_bad_input_names_file_and_line(tmp_path, shared_data):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "a", "output": 3}\nnot json\n')
    cfg = AuditConfig(input=[str(bad)], benchmark_dir=str(shared_data), progress=False, language=None)
    with pytest.raises(InputError, match=r"bad\.jsonl:2: field 'output' is int"):
        run(cfg, tmp_path / "r1", log=lambda m: None)
    cfg = AuditConfig(input=[str(bad)], benchmark_dir=str(shared_data), progress=False, language=None,
                      on_bad_row="skip")
    res = run(cfg, tmp_path / "r2", log=lambda m: None)
    assert res.manifest["stats"]["skipped"] == {"not_a_string": 1, "malformed_json": 1}
    unknown = tmp_path / "x.jsonl"
    unknown.write_text('{"foo": 1}\n')
    with pytest.raises(InputError, match="cannot tell the format"):
        run(AuditConfig(input=[str(unknown)], progress=False), tmp_path / "r3", log=lambda m: None)
    with pytest.raises(InputError, match="run `nift prepare` first"):
        run(AuditConfig(progress=False), tmp_path / "empty-run", log=lambda m: None)


def test_config_errors_name_the_flag(tmp_path, capsys):
    with pytest.raises(ValidationError, match="Did you mean 'uppercase_start'"):
        AuditConfig(drop=["uppercase"])
    assert main(["audit", "--run-dir", str(tmp_path), "--drop", "uppercase"]) == 2
    err = capsys.readouterr().err
    assert "--drop" in err and "Did you mean 'uppercase_start'" in err


def test_cli_runs_the_stage(audit_run, shared_data, capsys):
    run_dir, *_ = audit_run
    rc = main(["audit", "--run-dir", str(run_dir), "--benchmark-dir", str(shared_data), "--no-progress",
               "--drop", "none", "--force"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "# nift audit" in out and "40 rows: 40 kept" in out


def test_chat_format_targets_the_last_assistant_turn(tmp_path):
    from nift.audit.rows import normalise

    msgs = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
                         {"role": "assistant", "content": "Sure! Hello."}]}
    r = normalise(msgs, "chat", "f:1", "d", "text", None)
    assert r.prompt == "System: Be brief.\nUser: Hi there" and r.completion == "Sure! Hello."
    assert r.judge_doc == "System: Be brief.\nUser: Hi there\nAssistant: Sure! Hello."
    share = {"id": 7, "conversations": [{"from": "human", "value": "Q?"}, {"from": "gpt", "value": "A."}]}
    r = normalise(share, "chat", "f:2", "d", "text", None)
    assert (r.id, r.prompt, r.completion) == ("7", "User: Q?", "A.")
    from nift.errors import BadRow

    with pytest.raises(BadRow, match="turn 0 needs string role"):
        normalise({"messages": [{"role": "user"}]}, "chat", "f:3", "d", "text", None)


def test_cli_builds_the_judge_from_dotted_flags():
    from nift.cli import build_parser
    from nift.cli_options import collect_overrides
    from nift.config import load_config

    args = build_parser().parse_args(["audit", "--judge.backend", "openai", "--judge.model", "gpt-4o",
                                      "--judge-sample", "null", "--drop", "none"])
    vals, names = collect_overrides(args, AuditConfig)
    cfg = load_config(None, overrides={"audit": vals}, cli_names=names).audit
    assert (cfg.judge.backend, cfg.judge.model, cfg.judge_sample, cfg.drop) == ("openai", "gpt-4o", None, [])
    assert load_config(None).audit.judge is None  # no judge unless asked for
