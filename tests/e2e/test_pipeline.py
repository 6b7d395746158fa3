"""`nift run` end to end on a handful of real documents with the smallest real models.

Asserts the exact set of files each stage writes, that the report holds the run's own numbers, that a second run
skips every stage, and that changing one training setting re-runs train and everything after it, nothing before.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from nift.cli import main

EXPECTED = {
    "prepare": {"data.jsonl", "manifest.json"},
    "distill": {"cache.sqlite", "cache.sqlite.nift.lock", "data.jsonl", "manifest.json"},  # the store's writer lock
    "audit": {"data.jsonl", "flags.jsonl", "manifest.json", "summary.md"},
    "train": {"adapter/README.md", "adapter/adapter_config.json", "adapter/adapter_model.safetensors",
              "adapter/chat_template.jinja", "adapter/tokenizer.json", "adapter/tokenizer_config.json",
              "log.jsonl", "loss.png", "manifest.json", "nift_train.json"},
    "merge": {"manifest.json", "model/README.md", "model/chat_template.jinja", "model/config.json",
              "model/generation_config.json", "model/model.safetensors", "model/tokenizer.json",
              "model/tokenizer_config.json"},
    "eval/before": {"answers/ifeval.jsonl", "manifest.json", "per_item.jsonl", "report.md", "results.json"},
    "eval/after": {"answers/ifeval.jsonl", "manifest.json", "per_item.jsonl", "report.md", "results.json"},
    "eval/compare": {"compare.json", "compare.md", "compare.png", "inputs.json"},
}

def _files(d: Path) -> set[str]:
    return {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()}


def _steps(out: str) -> dict[str, str]:
    """The `[run] done:` summary: step -> ran | skipped."""
    rows: dict[str, str] = {}
    in_summary = False
    for line in out.splitlines():
        if line.startswith("[run] done:"):
            in_summary = True
            continue
        parts = line.split()
        if in_summary and len(parts) >= 3 and parts[-1] == "s":
            rows[" ".join(parts[:-3])] = parts[-3]
    return rows


def _config(d: Path, owt_corpus: Path, shared_data: Path, model: str) -> Path:
    cfg = {
        "run_dir": str(d / "run"),
        "pipeline": {"stages": ["prepare", "distill", "audit", "train", "merge", "eval", "report"]},
        "prepare": {"input": [str(owt_corpus)], "n_docs": 6, "progress": False},
        "distill": {"teacher": {"backend": "hf", "model": model, "max_tokens": 16, "batch_size": 8,
                                "context_tokens": 512}, "progress": False},
        "audit": {"drop": ["empty"], "benchmarks": ["ifeval"], "benchmark_dir": str(shared_data),
                  "language": None, "workers": 1, "progress": False},
        "train": {"model": model, "data": "audit", "max_length": 128, "max_steps": 2, "per_device_batch_size": 4,
                  "grad_accum": 1, "eval_fraction": 0.0, "lr": 1e-3, "progress": False},
        "merge": {"method": "lora", "progress": False},
        "eval": {"benchmarks": ["ifeval"], "ifeval_data": str(shared_data / "ifeval" / "input_data.jsonl"),
                 "limit": 3, "max_new_tokens": 16, "batch_size": 4, "n_boot": 200, "progress": False},
    }
    path = d / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_pipeline_files_skip_and_rerun(tmp_path, owt_corpus, shared_data, smollm2, capsys):
    config = _config(tmp_path, owt_corpus, shared_data, smollm2)
    run_dir = tmp_path / "run"
    assert main(["run", str(config)]) == 0
    ran = _steps(capsys.readouterr().out)
    assert set(ran.values()) == {"ran"}, ran
    for stage, files in EXPECTED.items():
        assert _files(run_dir / stage) == files, stage
    # downstream numbers are the run's own
    assert json.loads((run_dir / "prepare" / "manifest.json").read_text())["rows"]["data.jsonl"] == 6
    after = json.loads((run_dir / "eval" / "after" / "results.json").read_text())
    # asked in a conversation (SmolLM2-Instruct's own chat template), as the paper did, not with the training template
    assert after["model"] == str(run_dir / "merge" / "model") and after["template"] == "chat"
    before = json.loads((run_dir / "eval" / "before" / "results.json").read_text())
    assert before["template"] == "chat" and before["template_reason"] == after["template_reason"]
    assert {"manifest.json", "report.html", "report.md"} <= _files(run_dir / "report")
    html = (run_dir / "report" / "report.html").read_text()
    acc = after["benchmarks"]["ifeval"]["inst_level_strict_acc"]
    assert f"{acc:.1%}" in html  # the report shows proportions as percentages

    # a second run skips every stage
    assert main(["run", str(config)]) == 0
    again = _steps(capsys.readouterr().out)
    assert set(again.values()) == {"skipped"}, again

    # one training setting changed: train and everything after it re-run, nothing before
    assert main(["run", str(config), "--set", "train.lr=2e-3"]) == 0
    changed = _steps(capsys.readouterr().out)
    for step in ("prepare", "distill", "audit", "eval before"):
        assert changed[step] == "skipped", (step, changed)
    for step in ("train", "merge", "eval after", "compare", "report"):
        assert changed[step] == "ran", (step, changed)
    assert json.loads((run_dir / "train" / "manifest.json").read_text())["config"]["lr"] == 2e-3
