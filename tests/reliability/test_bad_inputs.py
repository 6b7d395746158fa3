"""Inputs that crashed before `--on-bad-row` applied (issue 13, item 4): each is an error naming file and line, or a
counted skip under `--on-bad-row skip`; never a traceback, never a retry of a request that cannot be sent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.chat_server import chat_server

from nift.audit.config import AuditConfig
from nift.cli import main
from nift.llm.config import BackendConfig
from nift.prepare import PrepareConfig

GOOD = b'{"text": "a good document with more than enough words in it to be cut somewhere in the middle"}\n'
BAD = {  # reason counted under --on-bad-row skip: the line
    "not_unicode": b'{"text": "scraped text cut inside an emoji \\ud800 and more words after it here"}\n',
    "bad_number": b'{"text": "a row with a huge count", "n": ' + b"7" * 5000 + b"}\n",
    "too_deep": b'{"text": "a row with deep json", "d": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n",
    "non_utf8": b'{"text": "caf\xe9 au lait"}\n',
}
NEEDLE = {"not_unicode": "lone surrogate '\\ud800'", "bad_number": "a number longer than",
          "too_deep": "nested too deeply", "non_utf8": "not valid UTF-8"}


def _file(tmp_path: Path, reason: str) -> Path:
    f = tmp_path / f"{reason}.jsonl"
    f.write_bytes(GOOD + BAD[reason] + GOOD.replace(b"good", b"second"))
    return f


@pytest.mark.parametrize("reason", sorted(BAD))
def test_prepare_and_audit_name_file_and_line(tmp_path: Path, reason: str, capsys):
    f = _file(tmp_path, reason)
    conf = tmp_path / "c.yaml"
    conf.write_text("audit:\n  format: text\n  benchmarks: []\n  language: null\n")
    for stage in ("prepare", "audit"):
        rc = main([stage, "--config", str(conf), "--input", str(f), "--run-dir", str(tmp_path / stage),
                   "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 2, (stage, err)
        assert f"{f}:2: " in err and NEEDLE[reason] in err and "Traceback" not in err, (stage, err)


@pytest.mark.parametrize("reason", sorted(BAD))
def test_prepare_and_audit_skip_and_count_under_on_bad_row_skip(tmp_path: Path, reason: str):
    from nift.audit.stage import run as audit
    from nift.prepare import run as prepare

    f = _file(tmp_path, reason)
    res = prepare(PrepareConfig(input=[str(f)], on_bad_row="skip", progress=False), tmp_path / "p", log=lambda *_: 0)
    assert res.manifest["stats"]["skipped"] == {reason: 1} and res.manifest["stats"]["documents_written"] == 2
    res = audit(AuditConfig(input=[str(f)], format="text", benchmarks=[], language=None, on_bad_row="skip",
                            progress=False), tmp_path / "a", log=lambda *_: 0)
    assert res.manifest["stats"]["skipped"] == {reason: 1}


def test_distill_names_the_line_of_a_bad_byte_in_prepare_output(prepared: Path, capsys):
    data = prepared / "prepare" / "data.jsonl"
    lines = data.read_bytes().splitlines(keepends=True)
    data.write_bytes(lines[0] + lines[1].replace(b'"prompt": "', b'"prompt": "\xff', 1) + b"".join(lines[2:]))
    rc = main(["distill", "--run-dir", str(prepared), "--teacher.backend", "openai", "--teacher.model", "fake-1",
               "--teacher.base-url", "http://127.0.0.1:9/v1", "--dry-run", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and f"{data}:2: not valid UTF-8" in err and "Traceback" not in err, err


def test_a_surrogate_prompt_fails_once_and_is_never_sent(tmp_path: Path, monkeypatch):
    """It was sent, failed to encode inside the SDK, and was retried as a 'malformed response' (and counted as lost
    in transit)."""
    from nift.llm import run_requests, text_request

    monkeypatch.setenv("NIFT_TEST_KEY", "sk-test")
    with chat_server(lambda mode, body: "fine") as (root, seen):
        cfg = BackendConfig(backend="openai", model="fake-1", base_url=f"{root}/t/v1", api_key_env="NIFT_TEST_KEY",
                            max_tokens=8, prices={"fake-1": {"input": 1.0, "output": 2.0}})
        res = run_requests(cfg, [text_request("bad", "cut \ud800 here", cfg), text_request("ok", "fine", cfg)],
                           tmp_path / "store.sqlite", progress=False, log=lambda *_: 0)
    s = res.summary
    assert [(f.id, f.attempts) for f in s.failed] == [("bad", 0)] and "lone surrogate" in s.failed[0].error
    assert len(seen) == 1 and s.sent == 1 and s.lost == 0 and s.retries == 0 and "ok" in res
    assert json.dumps(seen[0]).find("\\ud800") == -1
