"""No credential on disk: a base URL's userinfo and secret query parameters, and the values of the environment
variables named by `api_key_env`, never reach a manifest, results.json, a log line or the report — whatever key
they sit under. Checked by reading every file a run wrote."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.chat_server import chat_server

from nift.config import REDACTED, redact, scrub
from nift.distill.config import DistillConfig
from nift.eval.config import EvalConfig
from nift.llm.config import BackendConfig
from nift.report.config import ReportConfig

USER_SECRET = "pw-USERINFO-4f1c9a"
QUERY_SECRET = "qs-QUERYKEY-77b2e0"
ENV_SECRET = "sk-ENVKEY-9d3a51c2"
SECRETS = (USER_SECRET, QUERY_SECRET, ENV_SECRET)


def _url(root: str, mode: str) -> str:
    host = root.removeprefix("http://")
    return f"http://alice:{USER_SECRET}@{host}/{mode}/v1?api_key={QUERY_SECRET}&region=eu"


def _reply(mode: str, body: dict) -> str:
    return "Rating: [[7]]" if mode == "judge" else "the river kept rising"


def test_a_whole_run_writes_no_secret_anywhere(prepared: Path, shared_data: Path, monkeypatch):
    monkeypatch.setenv("NIFT_TEST_SECRET_KEY", ENV_SECRET)
    logs: list[str] = []
    with chat_server(_reply) as (root, seen):
        teacher = BackendConfig(backend="openai", model="fake-1", base_url=_url(root, "teacher"),
                                api_key_env="NIFT_TEST_SECRET_KEY", max_tokens=8,
                                prices={"fake-1": {"input": 1.0, "output": 2.0}})
        from nift.distill import run as distill
        from nift.eval.stage import run as evaluate
        from nift.report.stage import run as report

        distill(DistillConfig(teacher=teacher, progress=False), prepared, log=logs.append)
        evaluate(EvalConfig(
            model="answer-model", name="after", backend="openai", base_url=_url(root, "answer"),
            api_key_env="NIFT_TEST_SECRET_KEY", benchmarks=["mt_bench"], limit=1, max_new_tokens=8, progress=False,
            mt_bench_data=str(shared_data / "mt_bench"),
            judge={"backend": "openai", "model": "fake-1", "base_url": _url(root, "judge"),
                   "api_key_env": "NIFT_TEST_SECRET_KEY", "prices": {"fake-1": {"input": 1.0, "output": 2.0}}},
        ), prepared, log=logs.append)
        report(ReportConfig(), prepared, log=logs.append)
    assert {s["mode"] for s in seen} == {"teacher", "answer", "judge"}  # the run really went through those URLs
    files = [p for p in prepared.rglob("*") if p.is_file()]
    assert any(p.name == "results.json" for p in files) and any(p.name == "report.html" for p in files)
    leaks = [(p.relative_to(prepared), s) for p in files for s in SECRETS if s.encode() in p.read_bytes()]
    assert leaks == []
    assert not [line for line in logs for s in SECRETS if s in line]
    manifest = (prepared / "distill" / "manifest.json").read_text()
    assert f"://{REDACTED}@127.0.0.1:" in manifest and "region=eu" in manifest  # what is not secret stays


@pytest.mark.parametrize(("url", "kept", "cut"), [
    ("http://user:KEY123@host:8000/v1", "http://<redacted>@host:8000/v1", "KEY123"),
    ("https://gw.example/v1?key=abc&model=x", "?key=<redacted>&model=x", "abc"),
    ("https://gw.example/v1?access_token=abc#sig=def", "access_token=<redacted>#sig=<redacted>", "def"),
    ("s3://bucket/x.parquet?X-Amz-Signature=f00&X-Amz-Credential=b4r", "X-Amz-Signature=<redacted>", "b4r"),
    ("see https://h/v1?Password=hunter2, then", "Password=<redacted>, then", "hunter2"),
])
def test_scrub_cuts_userinfo_and_secret_parameters(url, kept, cut):
    out = scrub(url)
    assert kept in out and cut not in out


def test_redact_cuts_env_named_values_under_any_key(monkeypatch):
    monkeypatch.setenv("MY_GATEWAY_KEY", ENV_SECRET)
    cfg = {"judge": {"api_key_env": "MY_GATEWAY_KEY", "system_prompt": f"key is {ENV_SECRET}"},
           "notes": [f"Bearer {ENV_SECRET}"], "max_tokens": 5}
    out = redact(cfg)
    assert ENV_SECRET not in str(out) and out["judge"]["api_key_env"] == "MY_GATEWAY_KEY" and out["max_tokens"] == 5
