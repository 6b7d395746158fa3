"""Config loading (YAML < CLI, errors naming key/file/line) and the stage contract (skip / re-run / resume)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nift.artifacts import read_manifest, run_stage, write_jsonl
from nift.cli import main
from nift.config import load_config, redact, stage_configs
from nift.errors import ConfigError
from nift.prepare import PrepareConfig


def test_yaml_then_cli_precedence(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("run_dir: r\nprepare:\n  n_docs: 10\n  seed: 3\n")
    cfg = load_config(f, overrides={"prepare": {"seed": 7}})
    assert cfg.prepare.n_docs == 10 and cfg.prepare.seed == 7 and cfg.run_dir == "r"
    assert load_config().prepare.n_docs == 80_000  # the paper's default


@pytest.mark.parametrize("yaml_text,needle", [
    ("prepare:\n  n_doc: 5\n", "c.yaml:2: prepare.n_doc: unknown key. Did you mean 'n_docs'"),
    ("prepare:\n  seed: 1\n  n_docs: lots\n", "c.yaml:3: prepare.n_docs: Input should be a valid integer"),
    ("prepare:\n  cut_low: 1.5\n", "c.yaml:2: prepare.cut_low: Input should be less than 1"),
    ("prepar:\n  seed: 1\n", "c.yaml:1: prepar: unknown key. Did you mean 'prepare'"),
    ("prepare: [1, 2\n", "c.yaml:2: not valid YAML"),
    ("- a\n- b\n", "must be a mapping"),
])
def test_config_errors_name_key_file_line(tmp_path, yaml_text, needle):
    f = tmp_path / "c.yaml"
    f.write_text(yaml_text)
    with pytest.raises(ConfigError) as e:
        load_config(f)
    assert needle in str(e.value)


def test_cli_error_names_flag(capsys):
    assert main(["prepare", "--n-docs", "zero", "--run-dir", "/nonexistent/x"]) == 2
    err = capsys.readouterr().err
    assert "--n-docs: Input should be a valid integer" in err and "Traceback" not in err


def test_secrets_are_redacted():
    assert redact({"api_key": "sk-123", "api_key_env": "OPENAI_API_KEY", "max_new_tokens": 5,
                   "nested": [{"password": "x"}]}) == {
        "api_key": "<redacted>", "api_key_env": "OPENAI_API_KEY", "max_new_tokens": 5,
        "nested": [{"password": "<redacted>"}]}


def test_volatile_fields_do_not_change_hash():
    assert PrepareConfig(progress=True).config_hash() == PrepareConfig(progress=False).config_hash()
    assert PrepareConfig(seed=1).config_hash() != PrepareConfig(seed=2).config_hash()


def test_every_cli_option_has_help_with_default(capsys):
    from nift.stages import STAGES

    for stage in STAGES:
        with pytest.raises(SystemExit):
            main([stage, "--help"])
        out = capsys.readouterr().out
        for name, info in stage_configs()[stage].model_fields.items():
            flag = "--" + name.replace("_", "-")
            assert flag in out, flag
            assert info.description, f"{stage}.{name} has no description"
        assert out.count("(default:") >= len(stage_configs()[stage].model_fields)


def test_version_and_help_via_console_script():
    # the `nift` entry point pyproject.toml declares, as installed beside this interpreter (not `python -m`)
    script = Path(sys.executable).parent / "nift"
    assert script.is_file(), f"no console script at {script}: is nift installed in this environment?"
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("nift "), out.stderr
    help_ = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    commands = {line.split()[0] for line in help_.stdout.splitlines() if line.startswith("    ") and line.split()}
    assert help_.returncode == 0 and {"prepare", "distill", "audit", "train", "merge", "eval", "report"} <= commands


class _Cfg(PrepareConfig):
    pass


def test_stage_skip_rerun_resume(tmp_path):
    calls = []

    def body(ctx):
        calls.append(ctx.resumed)
        if (ctx.dir / "partial.txt").exists():
            (ctx.dir / "partial.txt").unlink()
        write_jsonl(ctx.path("data.jsonl"), [{"id": "a"}, {"id": "b"}])
        ctx.stats["n"] = 2

    up = tmp_path / "up"
    run_stage("prepare", up, PrepareConfig(), lambda c: write_jsonl(c.path("x.jsonl"), [{"id": 1}]), log=print)
    d = tmp_path / "s"
    cfg = PrepareConfig(seed=1)
    r1 = run_stage("s", d, cfg, body, inputs={"up": up})
    assert not r1.skipped and r1.manifest["rows"] == {"data.jsonl": 2}
    assert r1.manifest["inputs"]["up"] and r1.manifest["config"]["seed"] == 1
    assert run_stage("s", d, cfg, body, inputs={"up": up}).skipped  # same config and inputs: skipped
    assert calls == [False]
    run_stage("s", d, PrepareConfig(seed=2), body, inputs={"up": up})  # config changed: re-run
    assert calls == [False, False]
    # upstream changed: re-run
    run_stage("prepare", up, PrepareConfig(seed=9), lambda c: write_jsonl(c.path("x.jsonl"), [{"id": 2}]))
    assert not run_stage("s", d, PrepareConfig(seed=2), body, inputs={"up": up}).skipped
    # interrupted run (no manifest, marker matches): resumed with files kept
    def crash(ctx):
        (ctx.dir / "partial.txt").write_text("work done before the crash")
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        run_stage("s", d, PrepareConfig(seed=3), crash, inputs={"up": up})
    assert read_manifest(d) is None and (d / "partial.txt").exists()
    seen = {}
    def resume(ctx):
        seen["resumed"], seen["partial"] = ctx.resumed, (ctx.dir / "partial.txt").exists()
        body(ctx)
    run_stage("s", d, PrepareConfig(seed=3), resume, inputs={"up": up})
    assert seen == {"resumed": True, "partial": True}
    # a deleted output file invalidates the skip
    (d / "data.jsonl").unlink()
    assert not run_stage("s", d, PrepareConfig(seed=3), body, inputs={"up": up}).skipped


def test_manifest_written_last_and_atomic(tmp_path):
    def body(ctx):
        assert not (ctx.dir / "manifest.json").exists()
        write_jsonl(ctx.path("d.jsonl"), [{"id": 1}])
    run_stage("s", tmp_path / "s", PrepareConfig(), body)
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert m["stage"] == "s" and m["nift_version"] and "seconds" in m["timings"]
    assert not list((tmp_path / "s").glob("*.tmp*"))


def test_cli_prepare_end_to_end(tmp_path, owt_corpus, capsys):
    cfgf = tmp_path / "c.yaml"
    cfgf.write_text(f"run_dir: {tmp_path / 'run'}\nprepare:\n  input: [{owt_corpus}]\n  n_docs: 20\n")
    assert main(["prepare", "-c", str(cfgf), "--no-progress", "--seed", "5"]) == 0
    m = read_manifest(tmp_path / "run" / "prepare")
    assert m["config"]["seed"] == 5 and m["rows"]["data.jsonl"] == 20
    assert main(["prepare", "-c", str(cfgf), "--no-progress", "--seed", "5"]) == 0
    assert "up to date, skipped" in capsys.readouterr().out
