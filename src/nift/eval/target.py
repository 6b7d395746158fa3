"""What `nift eval --model X` evaluates: a model reference, a `run_dir/train` folder or a `run_dir/merge/model`
folder (or the name of a model behind an OpenAI-compatible endpoint).

A train folder holds a PEFT adapter and `nift_train.json` (base model, template, EOS, tokenizer hash); the adapter is
merged into its base model once by `nift merge` itself (streamed tensor by tensor, checked before writing, logits
verified after) into nift's cache, keyed by the adapter's and the base model's fingerprints, so every backend
(transformers, vLLM) loads a plain model folder and a retrained adapter never reuses a stale merge. Every target has a
fingerprint of its weights, which keys the answer cache: the same path with new weights gets new answers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nift.assets import cache_dir
from nift.errors import InputError

TRAIN_META = "nift_train.json"


@dataclass(frozen=True)
class Target:
    ref: str  # what the user gave
    kind: str  # "model", "train", "merge" or "endpoint"
    load_ref: str  # what a backend loads (a model reference, a merged folder, or the endpoint's model name)
    fingerprint: str  # identity of the weights
    template: str | None = None  # from nift_train.json, when trained by nift
    system_prompt: str | None = None
    stage_dir: Path | None = None  # upstream stage folder with a manifest (train/ or merge/)
    meta: dict[str, Any] = field(default_factory=dict)


def _sha_files(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        with open(p, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    return h.hexdigest()


def _folder_fingerprint(folder: Path) -> str:
    """Config + tokenizer contents, and (name, size, mtime) of weight files: cheap even for 100 GB of weights."""
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        if not p.is_file():
            continue
        if p.suffix in (".json", ".model", ".txt", ".jinja") and p.stat().st_size < 50 << 20:
            h.update(p.name.encode() + p.read_bytes())
        else:
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def model_fingerprint(ref: str) -> str:
    from nift.models import resolve

    mref = resolve(ref)
    if mref.kind == "demo":
        meta = json.loads((Path(mref.path) / "nift_model.json").read_text())
        return "demo:" + meta["gguf_sha256"]
    if mref.kind == "gguf":
        p = Path(mref.path) / (mref.gguf_file or "")
        st = p.stat()
        return hashlib.sha256(f"gguf:{p}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()
    if mref.kind == "folder":
        return _folder_fingerprint(Path(mref.path))
    return "hub:" + ref  # the hub cache resolves a revision; the id is the best identity we have offline


def _template_name(meta: dict[str, Any], path: Path) -> tuple[str | None, str | None]:
    t = meta.get("template")
    if isinstance(t, dict):
        name = t.get("name")
        if name == "custom":
            name = t.get("text")
        return name, t.get("system_prompt")
    if t is not None and not isinstance(t, str):
        raise InputError(f"{path}: field 'template' must be a string or an object with 'name'")
    return t, meta.get("system_prompt")


def resolve_target(ref: str, endpoint: bool = False, log=print) -> Target:
    """Turn `--model` into a Target; merges a train folder's adapter into its base model (cached)."""
    if endpoint:
        return Target(ref, "endpoint", ref, "endpoint:" + ref)
    p = Path(ref).expanduser()
    if p.is_dir() and (p / TRAIN_META).is_file():
        return _train_target(ref, p, log)
    if p.is_dir() and p.name == "train" and not (p / "config.json").is_file():
        raise InputError(f"{p} has no {TRAIN_META}: it is not a finished `nift train` folder (run nift train first)")
    if p.is_dir() and (p / "config.json").is_file():
        stage_dir = p.parent if (p.parent / "manifest.json").is_file() and p.parent.name == "merge" else None
        return Target(ref, "merge" if stage_dir else "model", str(p.resolve()), _folder_fingerprint(p),
                      stage_dir=stage_dir)
    return Target(ref, "model", ref, model_fingerprint(ref))


def _train_target(ref: str, folder: Path, log) -> Target:
    meta_path = folder / TRAIN_META
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"{meta_path}:{e.lineno}: not valid JSON ({e.msg})") from None
    for key in ("base_model",):
        if not isinstance(meta.get(key), str):
            raise InputError(f"{meta_path}: missing field {key!r}")
    template, system = _template_name(meta, meta_path)
    adapter = folder / "adapter"
    method = meta.get("method", "lora")
    stage_dir = folder if (folder / "manifest.json").is_file() else None
    if method == "full" or not adapter.is_dir():
        full = folder / "model"
        if full.is_dir() and (full / "config.json").is_file():
            return Target(ref, "train", str(full.resolve()), _folder_fingerprint(full), template, system, stage_dir,
                          meta)
        raise InputError(f"{folder}: no adapter/ (PEFT) and no model/ folder: not a finished `nift train` output")
    adapter_files = [p for p in adapter.iterdir() if p.is_file()]
    if not (adapter / "adapter_config.json").is_file():
        raise InputError(f"{adapter}: adapter_config.json is missing: not a PEFT adapter folder")
    base_ref = meta.get("base_model_path") or meta["base_model"]
    if not Path(str(base_ref)).exists():
        base_ref = meta["base_model"]
    base_fp = model_fingerprint(base_ref)
    fp = hashlib.sha256(f"{base_fp}:{_sha_files(adapter_files)}".encode()).hexdigest()
    merged = _merge_adapter(base_ref, adapter, cache_dir() / "eval_merges" / fp[:24], log)
    return Target(ref, "train", str(merged), fp, template, system, stage_dir, meta)


def _merge_adapter(base_ref: str, adapter: Path, root: Path, log) -> Path:
    """The adapter merged into `base_ref` by the merge stage, run in `root` (skipped when its manifest matches)."""
    from nift.merge import run as merge
    from nift.merge.config import MergeConfig
    from nift.merge.stage import MODEL_DIR
    from nift.models import resolve

    if resolve(base_ref, log=log).kind == "gguf":
        raise InputError(f"the adapter {adapter} was trained on {base_ref}, a .gguf file; the merge streams "
                         "safetensors checkpoints: convert the base into a model folder (transformers "
                         "from_pretrained(dir, gguf_file=...) then save_pretrained) and give it as base_model_path "
                         f"in {adapter.parent / TRAIN_META}, or evaluate a merged model folder")
    model = root / "merge" / MODEL_DIR
    if not (root / "merge" / "manifest.json").is_file():
        log(f"[eval] merging the adapter {adapter} into {base_ref} for evaluation (once; cached in {root})")
    merge(MergeConfig(method="lora", adapter=str(adapter.resolve()), target=base_ref, progress=False), root,
          log=log)
    return model
