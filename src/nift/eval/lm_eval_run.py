"""`nift eval --lm-eval TASKS`: lm-evaluation-harness on the evaluated model (the Open LLM Leaderboard tasks).

The model is handed to lm-eval's own `hf` model class (a merged folder for a nift train folder), or to its
`local-completions` client for an OpenAI-compatible endpoint. `--lm-eval-include DIR` adds local task YAMLs (a task
on a local JSON file runs offline). lm-eval's aggregate results go to `lm_eval.json`; its per-document metrics
become paired units for `nift compare`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nift.errors import ConfigError, NiftError, missing_package

# The six tasks of the Open LLM Leaderboard (v1) the paper reports, with their few-shot counts.
OPEN_LLM_LEADERBOARD = {"arc_challenge": 25, "hellaswag": 10, "mmlu": 5, "truthfulqa_mc2": 0, "winogrande": 5,
                        "gsm8k": 5}


def run_lm_eval(load_ref: str, tasks: list[str], *, include_path: str | None = None, num_fewshot: int | None = None,
                limit: int | None = None, batch_size: int = 8, device: str | None = None, dtype: str = "auto",
                base_url: str | None = None, seed: int = 0, log=print) -> dict[str, Any]:
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise missing_package("lm_eval", extra="eval", purpose="--lm-eval") from None
    if include_path and not Path(include_path).exists():
        raise ConfigError(f"--lm-eval-include: {include_path} does not exist")
    expanded: list[str] = []
    for t in tasks:
        if t in ("open_llm_leaderboard", "openllm"):
            expanded.extend(OPEN_LLM_LEADERBOARD)
        else:
            expanded.append(t)
    # Indexing lm-eval's ~15k built-in task YAMLs takes many seconds: skip it when the local tasks are all asked for.
    tm = TaskManager(include_path=include_path, include_defaults=False) if include_path else None
    if tm is None or not set(expanded) <= set(tm.all_tasks):
        tm = TaskManager(include_path=include_path) if include_path else TaskManager()
    known = set(tm.all_tasks)
    unknown = [t for t in expanded if t not in known]
    if unknown:
        raise ConfigError(f"--lm-eval: unknown task {unknown[0]!r}.{_close(unknown[0], known)} (`lm_eval ls tasks` "
                          "lists them; local YAMLs need --lm-eval-include DIR)")
    if base_url:
        model, model_args = "local-completions", {"model": load_ref, "base_url": base_url.rstrip("/") + "/completions"}
    else:
        from nift.models import resolve

        mref = resolve(load_ref, log=log)
        model = "hf"
        model_args = {"pretrained": mref.path, "dtype": "bfloat16" if dtype == "auto" else dtype}
        if mref.gguf_file:
            model_args["gguf_file"] = mref.gguf_file
        from nift.models import default_device

        model_args["device"] = device or default_device()  # lm-eval's hf class assumes CUDA otherwise
    log(f"[eval] lm-eval: {', '.join(expanded)} on {load_ref}")
    results: dict[str, Any] = {}
    for task in expanded:
        # Per task, so each gets its leaderboard few-shot count unless one is given.
        shots = num_fewshot if num_fewshot is not None else OPEN_LLM_LEADERBOARD.get(task)
        try:
            res = lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=[task], num_fewshot=shots,
                                          limit=limit, batch_size=batch_size, task_manager=tm, log_samples=True,
                                          random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                                          fewshot_random_seed=seed)
        except (OSError, ValueError, ConnectionError) as e:
            raise NiftError(f"lm-eval failed on task {task!r}: {e} (hub tasks need the network or the hub cache)"
                            ) from None
        if res is None:
            continue
        results[task] = {"results": _jsonable(res.get("results", {})), "n_shot": res.get("n-shot", {}),
                         "samples": _per_doc(res.get("samples", {}))}
    return results


def _close(name: str, known: set[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.6)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def _per_doc(samples: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Per task: [{doc_id, metric: value}] for the numeric per-document metrics."""
    out = {}
    for task, rows in samples.items():
        out[task] = []
        for r in rows:
            vals = {m: float(r[m]) for m in r.get("metrics", []) if isinstance(r.get(m), (int, float, bool))}
            out[task].append({"doc_id": r["doc_id"], **vals})
    return out
