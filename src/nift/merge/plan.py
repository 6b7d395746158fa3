"""What a merge will do: every input resolved to a local folder and its checkpoint headers read."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nift.checkpoint import TORCH_NAMES, Checkpoint, TensorInfo, fingerprint
from nift.errors import ConfigError, InputError, NiftError
from nift.merge.adapter import TRAIN_META, Adapter, read_train_meta
from nift.merge.config import MergeConfig


def model_folder(ref: str, role: str, log: Callable[[str], None] = print) -> Path:
    """A local folder holding the model's safetensors, config and tokenizer."""
    from nift.models import resolve

    try:
        mref = resolve(ref, log=log)
    except NiftError as e:
        raise InputError(f"--{role}: {e}") from None
    if mref.kind == "gguf":
        raise InputError(
            f"--{role} {ref}: a .gguf file. Merging streams safetensors checkpoints: convert it into a folder first "
            "(transformers from_pretrained(dir, gguf_file=...) then save_pretrained; demo models are converted by "
            "`nift models pull NAME`)."
        )
    if mref.kind == "hub":
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(mref.path, allow_patterns=[
                "*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "tokenizer*"]))
        except Exception as e:  # noqa: BLE001 - any hub failure becomes one clear message
            raise InputError(f"--{role} {ref}: could not get it from the Hugging Face hub: {e}") from None
    return Path(mref.path)


@dataclass
class MergePlan:
    """Everything the merge needs: inputs resolved and checkpoint headers read by `build_plan`; the adapter's
    tensors, the target's tokenizer and the EOS id filled in by `check_plan`."""

    method: str
    target: Checkpoint
    target_ref: str
    base: Checkpoint | None  # compared with the target (lora-base, lora into another model) or subtracted
    base_ref: str | None
    instruct: Checkpoint | None
    instruct_ref: str | None
    adapter_dir: Path | None
    meta: dict[str, Any] | None
    meta_path: Path | None
    adapter_scale: float
    chat_scale: float
    dtype: str
    full_tensors: str
    adapter: Adapter | None = None
    warnings: list[str] = field(default_factory=list)
    eos_id: int | None = None  # the EOS the adapter learned to emit, as an id of the target's tokenizer
    tokenizer: Any = None  # the target's, once loaded

    @property
    def chat(self) -> bool:
        return self.method == "chat-vector"

    def out_dtype(self, t: TensorInfo) -> str:
        """The safetensors dtype tensor `t` is written in: its own unless --dtype casts floating-point weights."""
        if not t.is_float or self.dtype == "auto":
            return t.dtype
        return TORCH_NAMES[self.dtype]

    def main_out_dtype(self) -> str:
        """The dtype most of the written weights are in (config.json's `dtype`)."""
        return self.target.main_dtype() if self.dtype == "auto" else TORCH_NAMES[self.dtype]


def _adapter_base_ref(meta: dict[str, Any] | None, adapter_cfg: dict[str, Any]) -> str | None:
    """Where the adapter says its base model is: nift_train.json's path if it still exists, else its reference,
    else PEFT's base_model_name_or_path."""
    if meta:
        path = meta.get("base_model_path")
        if path and (Path(path) / "config.json").is_file():
            return str(path)
        return str(meta["base_model"])
    return adapter_cfg.get("base_model_name_or_path") or None


def build_plan(cfg: MergeConfig, run_dir: Path, log: Callable[[str], None] = print) -> tuple[MergePlan, dict, dict]:
    """Resolve every input and read checkpoint headers (cheap). Returns (plan, upstream inputs, fingerprints)."""
    method = cfg.method
    if cfg.instruct and method != "chat-vector":
        raise ConfigError(f"--instruct is only used by --method chat-vector (method is {method})")
    default_adapter = run_dir / "train" / "adapter"
    adapter_dir: Path | None = None
    if cfg.adapter:
        adapter_dir = Path(cfg.adapter).expanduser()
        if not adapter_dir.is_dir():
            raise InputError(f"--adapter {cfg.adapter}: folder not found")
        adapter_dir = adapter_dir.resolve()
    elif method != "chat-vector":
        adapter_dir = default_adapter
        if not adapter_dir.is_dir():
            raise InputError(f"no adapter at {adapter_dir}: run `nift train` first, or pass --adapter FOLDER")

    inputs: dict[str, Path] = {}
    fingerprints: dict[str, str] = {}
    meta = meta_path = None
    adapter_cfg: dict[str, Any] = {}
    if adapter_dir is not None:
        adapter_cfg = Adapter.config_of(adapter_dir)
        found = read_train_meta(adapter_dir)
        if found:
            meta_path, meta = found
            if meta.get("method") == "full":
                raise InputError(f"{meta_path}: method is 'full': training wrote a whole model, not an adapter, so "
                                 "there is nothing to merge; use that model directly (or as --target of "
                                 "chat-vector)")
            fingerprints["train_meta"] = fingerprint(meta_path)
        train_dir = run_dir / "train"
        if adapter_dir.resolve() == default_adapter.resolve():
            if not (train_dir / "manifest.json").is_file():
                raise InputError(f"{train_dir}/manifest.json is missing: the training run did not finish; run "
                                 "`nift train` again (it resumes)")
            inputs["train"] = train_dir
        fingerprints["adapter"] = fingerprint(adapter_dir)

    adapter_base = _adapter_base_ref(meta, adapter_cfg) if adapter_dir is not None else None
    base_ref = cfg.base
    if method == "lora":
        target_ref = cfg.target or adapter_base
        if not target_ref:
            raise InputError(f"{adapter_dir}: neither {TRAIN_META} nor adapter_config.json names the base model; "
                             "pass --target")
        if cfg.target and not base_ref:
            base_ref = adapter_base
    elif method == "lora-base":
        if not cfg.target:
            raise ConfigError("--method lora-base merges into another model: give it with --target (e.g. the "
                              f"instruct sibling of {adapter_base or 'the base model'})")
        target_ref = cfg.target
        base_ref = base_ref or adapter_base
    else:
        base_ref = base_ref or adapter_base
        if not base_ref or not cfg.instruct:
            raise ConfigError("--method chat-vector computes target + λ·(instruct − base): give --instruct and "
                              "--base (the base defaults to the adapter's base model when --adapter is given)")
        target_ref = cfg.target or base_ref

    target = Checkpoint.open(model_folder(target_ref, "target", log), f"target {target_ref}")
    instruct = (Checkpoint.open(model_folder(cfg.instruct, "instruct", log), f"instruct {cfg.instruct}")
                if cfg.instruct else None)
    warnings: list[str] = []
    base = None
    if base_ref:
        try:
            base = Checkpoint.open(model_folder(base_ref, "base", log), f"base {base_ref}")
        except InputError:
            if cfg.base or method == "chat-vector":
                raise
            # the adapter's metadata may name a base on another machine: the checks then use the adapter alone
            warnings.append(f"the adapter's base model {base_ref} is not available here: the adapter is checked "
                            "against the target only (pass --base to compare the two models)")
    if base is not None and method != "chat-vector" and base.folder.resolve() == target.folder.resolve():
        if method == "lora-base":
            warnings.append("the target is the adapter's own base model: this is a plain lora merge")
        base = None  # nothing to compare
    fingerprints["target"] = fingerprint(target.folder)
    if method == "chat-vector":
        fingerprints["base"] = fingerprint(base.folder)  # type: ignore[union-attr]
        fingerprints["instruct"] = fingerprint(instruct.folder)  # type: ignore[union-attr]
    plan = MergePlan(
        method=method, target=target, target_ref=target_ref, base=base, base_ref=base_ref, instruct=instruct,
        instruct_ref=cfg.instruct, adapter_dir=adapter_dir, meta=meta, meta_path=meta_path,
        adapter_scale=cfg.adapter_scale, chat_scale=cfg.chat_vector_scale, dtype=cfg.dtype,
        full_tensors=cfg.full_tensors, warnings=warnings,
    )
    return plan, inputs, fingerprints


def dtype_name(st: str) -> str:
    return {v: k for k, v in TORCH_NAMES.items()}.get(st, "float32")


