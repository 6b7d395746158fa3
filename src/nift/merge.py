"""`nift merge`: fold a LoRA adapter (and optionally a chat vector) into a model, tensor by tensor.

Run as: nift merge --run-dir runs/x                                     # lora: into the adapter's own base
        nift merge --run-dir runs/x --method lora-base --target INSTRUCT  # the paper's lora-base
        nift merge --method chat-vector --base BASE --instruct INSTRUCT --target T --chat-vector-scale 0.5

Methods (the paper, Table 1): `lora` merges the adapter into the model it was trained on; `lora-base` merges an
adapter trained on a base model into that model's instruct sibling, which acts like a chat vector (Huang et al.
2024). `chat-vector` is the arithmetic itself, target + λ·(instruct − base), optionally plus the adapter; and
`--adapter-scale` puts a λ on the LoRA delta, so users can explore what `lora-base` does.

How: the target's safetensors files are read one tensor at a time (`safe_open`) and written one tensor at a time
(`nift.checkpoint.ShardWriter`), each output shard mirroring an input shard, so peak memory stays near one shard
plus the adapter. Deltas are computed in float32 and cast to the tensor's own dtype (bf16 stays bf16). Before
anything is written, architecture, every tensor and targeted module's shape, and the vocabulary are compared; any
difference is listed and the merge refused. After writing, the merged folder is loaded and its logits compared with
the unmerged reference (PEFT on the target, or the arithmetic in memory).

Why not mergekit: it installs cleanly here, but its LoRA path loads the whole model and runs PEFT's
merge_and_unload (whole model in memory, plus a full merged copy in its cache), it cannot check a base/sibling
pair before writing, and the arithmetic it would add is one line per tensor in the streaming loop below.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nift import __version__
from nift.artifacts import StageContext, StageResult, run_stage, sha256_file, stage_identity, up_to_date, write_json
from nift.checkpoint import (
    DTYPE_SIZES,
    INDEX,
    TORCH_NAMES,
    Checkpoint,
    ShardWriter,
    TensorInfo,
    TensorReader,
    fingerprint,
    load_json,
    read_header,
    torch_dtype,
    write_index,
)
from nift.config import MergeConfig
from nift.errors import ConfigError, InputError, NiftError

TRAIN_META = "nift_train.json"
META_FIELDS = ("base_model", "base_model_path", "template", "eos_token", "tokenizer_hash", "data_manifest_hash",
               "method", "hyperparameters", "lora")
MODEL_DIR = "model"
PARTIAL_DIR = "model.partial"

# Config keys that change the computation without changing any tensor's shape: two models that differ here are not
# siblings even when every tensor lines up.
STRUCTURAL_KEYS = (
    "architectures", "model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "vocab_size", "tie_word_embeddings", "hidden_act", "hidden_activation",
    "layer_types", "num_local_experts", "num_experts", "num_experts_per_tok", "moe_intermediate_size",
    "query_pre_attn_scalar", "attention_bias", "mlp_bias",
)
# Keys that are bookkeeping, not model: never reported.
IGNORED_KEYS = {"_name_or_path", "_model_name_or_path", "transformers_version", "dtype", "torch_dtype"}


class MergeRefused(InputError):
    """The models or the adapter do not fit together; the message lists every difference."""


# ------------------------------------------------------------------------------------------------ inputs


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


def read_train_meta(adapter_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """`nift_train.json` beside the adapter (train writes it to train/, the adapter to train/adapter/)."""
    for cand in (adapter_dir / TRAIN_META, adapter_dir.parent / TRAIN_META):
        if not cand.is_file():
            continue
        data = load_json(cand)
        if not isinstance(data, dict):
            raise InputError(f"{cand}: expected a JSON object")
        missing = [k for k in ("base_model", "method", "tokenizer_hash") if not data.get(k)]
        if missing:
            raise InputError(f"{cand}: missing field(s) {', '.join(missing)}; it should be written by `nift train`")
        return cand, data
    return None


@dataclass
class LoraModule:
    """One LoRA-adapted module: ΔW = scaling · B·A (transposed for embeddings and fan_in_fan_out layers)."""

    name: str  # module path in the model, e.g. model.layers.0.self_attn.q_proj
    a: Any
    b: Any
    scaling: float
    embedding: bool = False
    fan_in_fan_out: bool = False
    bias: Any = None  # lora_B.bias (lora_bias=True): added to the module's bias

    @property
    def weight_shape(self) -> tuple[int, ...]:
        out, inn = int(self.b.shape[0]), int(self.a.shape[1])
        return (inn, out) if (self.embedding or self.fan_in_fan_out) else (out, inn)

    def add_rows_to(self, acc: Any, start: int, stop: int, scale: float) -> None:
        """acc += scale · ΔW[start:stop] in float32, without materialising ΔW: one fused matrix product, with the
        scale folded into the small factor (r columns) rather than applied to the product."""
        if self.embedding or self.fan_in_fan_out:  # ΔW = (B·A)ᵀ: rows start:stop are (A[:, start:stop])ᵀ·Bᵀ
            acc.addmm_(self.a[:, start:stop].float().T * scale, self.b.float().T)
        else:
            acc.addmm_(self.b[start:stop].float() * scale, self.a.float())


_LORA_KEY = re.compile(r"^(?P<m>.+)\.(?:lora_(?P<ab>[AB])\.(?P<p>weight|bias)|lora_embedding_(?P<eab>[AB]))$")
_UNSUPPORTED_CONFIG = {
    "use_dora": "DoRA adapters (use_dora) rescale each weight by a learned magnitude",
    "target_parameters": "adapters on raw parameters (target_parameters)",
    "layer_replication": "layer replication",
    "use_qalora": "QA-LoRA adapters",
    "alora_invocation_tokens": "activated LoRA (aLoRA)",
    "trainable_token_indices": "trainable token adapters",
}


@dataclass
class Adapter:
    """A PEFT LoRA adapter folder read into memory (it is small next to the model)."""

    folder: Path
    config: dict[str, Any]
    weights_file: Path
    modules: dict[str, LoraModule]  # by the target tensor they change: "<module>.weight"
    full: dict[str, Any]  # whole tensors that replace the target's (modules_to_save, saved embedding layers)
    nbytes: int

    @staticmethod
    def config_of(folder: Path) -> dict[str, Any]:
        path = folder / "adapter_config.json"
        if not path.is_file():
            raise InputError(f"{folder} is not a PEFT adapter folder: it has no adapter_config.json")
        cfg = load_json(path)
        if not isinstance(cfg, dict) or cfg.get("peft_type") != "LORA":
            raise InputError(f"{path}: peft_type is {cfg.get('peft_type') if isinstance(cfg, dict) else cfg!r}; "
                             "nift merges LoRA adapters only")
        for key, what in _UNSUPPORTED_CONFIG.items():
            if cfg.get(key):
                raise InputError(f"{path}: {key} is set: {what} cannot be merged by nift; use PEFT's "
                                 "merge_and_unload on a model that fits in memory")
        for key in ("r", "lora_alpha"):
            if not isinstance(cfg.get(key), (int, float)) or cfg[key] <= 0:
                raise InputError(f"{path}: field {key} must be a positive number (got {cfg.get(key)!r})")
        return cfg

    @classmethod
    def load(cls, folder: Path) -> Adapter:
        import torch
        from peft.utils.other import get_pattern_key

        cfg = cls.config_of(folder)
        st, binf = folder / "adapter_model.safetensors", folder / "adapter_model.bin"
        if st.is_file():
            from safetensors.torch import load_file

            try:
                state = load_file(str(st))
            except Exception as e:  # noqa: BLE001 - a corrupt file, whatever the library's exception
                raise InputError(f"{st}: cannot read the adapter weights ({e})") from None
            weights_file = st
        elif binf.is_file():
            state = torch.load(binf, map_location="cpu", weights_only=True)
            weights_file = binf
        else:
            raise InputError(f"{folder}: no adapter_model.safetensors or adapter_model.bin")

        parts: dict[str, dict[str, Any]] = {}
        full: dict[str, Any] = {}
        unknown = []
        for key, tensor in state.items():
            name = key.removeprefix("base_model.model.")
            m = _LORA_KEY.match(name)
            if m:
                slot = ("emb_" + m["eab"]) if m["eab"] else (m["ab"] + ("_bias" if m["p"] == "bias" else ""))
                parts.setdefault(m["m"], {})[slot] = tensor
            elif ".lora_" in name:
                unknown.append(key)
            elif ".base_layer." in name:  # PEFT saves the whole embedding next to its LoRA (save_embedding_layers)
                full[name.replace(".base_layer.", ".")] = tensor
            else:
                full[name] = tensor
        if unknown:
            raise InputError(f"{weights_file}: adapter tensors nift cannot merge: {', '.join(sorted(unknown))}")

        modules: dict[str, LoraModule] = {}
        rank_pattern, alpha_pattern = cfg.get("rank_pattern") or {}, cfg.get("alpha_pattern") or {}
        for mod, p in sorted(parts.items()):
            embedding = "emb_A" in p or "emb_B" in p
            a, b = (p.get("emb_A"), p.get("emb_B")) if embedding else (p.get("A"), p.get("B"))
            if a is None or b is None or a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
                raise InputError(f"{weights_file}: module {mod}: lora A/B missing or of mismatched shape "
                                 f"({None if a is None else tuple(a.shape)}, {None if b is None else tuple(b.shape)})")
            r = rank_pattern.get(get_pattern_key(rank_pattern.keys(), mod), cfg["r"])
            alpha = alpha_pattern.get(get_pattern_key(alpha_pattern.keys(), mod), cfg["lora_alpha"])
            if int(a.shape[0]) != int(r):
                raise InputError(f"{weights_file}: module {mod} has rank {a.shape[0]} but adapter_config.json "
                                 f"says r={r}")
            scaling = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
            modules[f"{mod}.weight"] = LoraModule(
                mod, a, b, float(scaling), embedding=embedding,
                fan_in_fan_out=bool(cfg.get("fan_in_fan_out")) and not embedding, bias=p.get("B_bias"))
        if not modules and not full:
            raise InputError(f"{weights_file}: the adapter holds no tensors")
        nbytes = sum(t.numel() * t.element_size() for t in state.values())
        return cls(folder, cfg, weights_file, modules, full, nbytes)


# -------------------------------------------------------------------------------------------------- plan


@dataclass
class MergePlan:
    """Everything the merge needs, resolved and opened (headers only until `load`)."""

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
        if not t.is_float or self.dtype == "auto":
            return t.dtype
        return TORCH_NAMES[self.dtype]


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
    base = Checkpoint.open(model_folder(base_ref, "base", log), f"base {base_ref}") if base_ref else None
    instruct = (Checkpoint.open(model_folder(cfg.instruct, "instruct", log), f"instruct {cfg.instruct}")
                if cfg.instruct else None)
    warnings: list[str] = []
    if base is not None and method != "chat-vector" and base.folder.resolve() == target.folder.resolve():
        if method == "lora-base":
            warnings.append("the target is the adapter's own base model: this is a plain lora merge")
        base = None  # nothing to compare
    if method != "chat-vector" and base is None and base_ref and method == "lora-base":
        warnings.append(f"base model {base_ref} not found: the adapter is checked against the target only")
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


# ------------------------------------------------------------------------------------------------ checks


def _fmt(v: Any) -> str:
    return json.dumps(v) if isinstance(v, (list, dict)) else repr(v)


def compare_checkpoints(a: Checkpoint, b: Checkpoint) -> tuple[list[str], list[str]]:
    """(errors, warnings): architecture and every tensor's name and shape must agree."""
    errors, warnings = [], []
    for key in STRUCTURAL_KEYS:
        if a.config.get(key) != b.config.get(key):
            errors.append(f"config {key}: {_fmt(a.config.get(key))} in {a.label}, {_fmt(b.config.get(key))} in "
                          f"{b.label}")
    for key in sorted((set(a.config) | set(b.config)) - set(STRUCTURAL_KEYS) - IGNORED_KEYS):
        if a.config.get(key) != b.config.get(key):
            warnings.append(f"config {key} differs: {_fmt(a.config.get(key))} in {a.label}, "
                            f"{_fmt(b.config.get(key))} in {b.label}")
    for name in sorted(set(a.tensors) - set(b.tensors)):
        errors.append(f"tensor {name}: in {a.label}, missing from {b.label}")
    for name in sorted(set(b.tensors) - set(a.tensors)):
        errors.append(f"tensor {name}: in {b.label}, missing from {a.label}")
    for name in sorted(set(a.tensors) & set(b.tensors)):
        sa, sb = a.tensors[name].shape, b.tensors[name].shape
        if sa != sb:
            errors.append(f"tensor {name}: shape {list(sa)} in {a.label}, {list(sb)} in {b.label}")
    da, db = a.main_dtype(), b.main_dtype()
    if da != db:
        warnings.append(f"dtype: {da} in {a.label}, {db} in {b.label}")
    return errors, warnings


def _examples(tokens: list[Any], limit: int = 20) -> str:
    shown = ", ".join(repr(t) for t in tokens[:limit])
    return shown + (f", ... and {len(tokens) - limit} more" if len(tokens) > limit else "")


def compare_tokenizers(ta: Any, tb: Any, la: str, lb: str) -> tuple[list[str], list[str]]:
    """(errors, warnings): the vocabulary (token -> id) must be identical; special-token roles may differ (an
    instruct sibling often ends turns with its own token), which is reported."""
    errors, warnings = [], []
    va, vb = ta.get_vocab(), tb.get_vocab()
    if va != vb:
        only_a = sorted(set(va) - set(vb), key=va.get)
        only_b = sorted(set(vb) - set(va), key=vb.get)
        moved = sorted((t for t in set(va) & set(vb) if va[t] != vb[t]), key=va.get)
        errors.append(f"vocabulary: {len(va)} tokens in {la}, {len(vb)} in {lb}")
        if only_a:
            errors.append(f"vocabulary: {len(only_a)} token(s) only in {la}: {_examples(only_a)}")
        if only_b:
            errors.append(f"vocabulary: {len(only_b)} token(s) only in {lb}: {_examples(only_b)}")
        if moved:
            errors.append(f"vocabulary: {len(moved)} token(s) with different ids: "
                          f"{_examples([f'{t} ({va[t]} vs {vb[t]})' for t in moved])}")
    sa, sb = ta.special_tokens_map, tb.special_tokens_map
    for key in sorted(set(sa) | set(sb)):
        if str(sa.get(key)) != str(sb.get(key)):
            warnings.append(f"special token {key}: {sa.get(key)!r} in {la}, {sb.get(key)!r} in {lb}")
    return errors, warnings


def check_adapter(adapter: Adapter, target: Checkpoint) -> list[str]:
    """Every module the adapter changes must exist in the target with the shape the adapter was trained for."""
    errors = []
    tied = bool(target.config.get("tie_word_embeddings"))
    for name, mod in adapter.modules.items():
        info = target.tensors.get(name)
        if info is None:
            hint = (" (the target ties its output layer to the input embeddings)"
                    if tied and name.startswith("lm_head") else "")
            errors.append(f"adapter module {mod.name}: the target has no tensor {name}{hint}")
            continue
        if info.shape != mod.weight_shape:
            errors.append(f"adapter module {mod.name}: adapter expects {list(mod.weight_shape)}, target has "
                          f"{list(info.shape)}")
        if mod.embedding and tied:
            errors.append(f"adapter module {mod.name}: LoRA on input embeddings that the target ties to its output "
                          "layer (tie_word_embeddings) cannot be merged exactly: the merged weight would change "
                          "the output layer too")
        if mod.bias is not None:
            bias = f"{mod.name}.bias"
            if bias not in target.tensors:
                errors.append(f"adapter module {mod.name}: has a LoRA bias but the target has no tensor {bias}")
            elif target.tensors[bias].shape != tuple(mod.bias.shape):
                errors.append(f"adapter module {mod.name}: bias {list(mod.bias.shape)} vs target "
                              f"{list(target.tensors[bias].shape)}")
    for name, tensor in adapter.full.items():
        info = target.tensors.get(name)
        if info is None:
            errors.append(f"adapter tensor {name} (modules_to_save): the target has no such tensor")
        elif info.shape != tuple(tensor.shape):
            errors.append(f"adapter tensor {name} (modules_to_save): {list(tensor.shape)} vs target "
                          f"{list(info.shape)}")
    return errors


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                    "tokenizer.model", "vocab.json", "merges.txt", "vocab.txt")


def _same_tokenizer_files(a: Path, b: Path) -> bool:
    found = False
    for name in _TOKENIZER_FILES:
        fa, fb = a / name, b / name
        if fa.is_file() != fb.is_file():
            return False
        if fa.is_file():
            found = True
            if fa.stat().st_size != fb.stat().st_size or sha256_file(fa) != sha256_file(fb):
                return False
    return found


def _load_tokenizer(folder: Path) -> Any:
    from nift.models import load_tokenizer

    return load_tokenizer(str(folder), log=lambda *_: None)


def check_plan(plan: MergePlan, log: Callable[[str], None] = print) -> None:
    """Load the adapter and compare everything that must agree; raise `MergeRefused` listing every difference.

    Runs before anything is written."""
    from nift.models import tokenizer_hash

    errors: list[str] = []
    t = plan.target
    if t.config.get("quantization_config") or any(i.dtype.startswith("F8") for i in t.tensors.values()):
        raise MergeRefused(f"{t.label} is quantized (quantization_config / float8 weights): merge into the "
                           "unquantized model")
    if plan.adapter_dir is not None:
        plan.adapter = Adapter.load(plan.adapter_dir)
        errors += check_adapter(plan.adapter, t)
        full = sorted(plan.adapter.full)
        policy = plan.full_tensors
        if full and (policy == "refuse" or (policy == "auto" and plan.method != "lora")):
            errors.append(
                f"the adapter stores whole tensors ({', '.join(full)}) that would replace the target's own; "
                "for lora-base and chat-vector that overwrites the sibling's weights with the base's. Pass "
                "--full-tensors replace to do it anyway")
        elif full and plan.adapter_scale != 1:
            plan.warnings.append(f"--adapter-scale does not apply to the whole tensors {', '.join(full)} "
                                 "(they replace the target's)")

    pairs = []
    if plan.base is not None:
        pairs.append((plan.base, t))
    if plan.instruct is not None and plan.base is not None:
        pairs.append((plan.base, plan.instruct))
    for a, b in pairs:
        errs, warns = compare_checkpoints(a, b)
        errors += errs
        plan.warnings += warns

    tokenizers: dict[Path, Any] = {}

    def tok(ck: Checkpoint) -> Any:
        if ck.folder not in tokenizers:
            tokenizers[ck.folder] = _load_tokenizer(ck.folder)
        if ck is t:
            plan.tokenizer = tokenizers[ck.folder]
        return tokenizers[ck.folder]

    for a, b in pairs:
        if _same_tokenizer_files(a.folder, b.folder):
            continue  # byte-identical tokenizer files: nothing can differ, and loading a 262k vocabulary is slow
        errs, warns = compare_tokenizers(tok(a), tok(b), a.label, b.label)
        errors += errs
        plan.warnings += warns
    meta = plan.meta or {}
    if (plan.adapter is not None and plan.base is None and meta.get("tokenizer_hash") and plan.method != "lora"
            and tokenizer_hash(tok(t)) != meta["tokenizer_hash"]):
        errors.append(f"tokenizer: {t.label} differs from the one the adapter was trained with (tokenizer_hash "
                          f"in {plan.meta_path}) and the base model is not available to show how; pass --base")
    if plan.adapter is not None and meta.get("eos_token"):
        vocab = tok(t).get_vocab()
        if meta["eos_token"] not in vocab:
            errors.append(f"tokenizer: the adapter learned to stop with {meta['eos_token']!r} ({plan.meta_path}), "
                          f"which is not in the vocabulary of {t.label}")
        else:
            plan.eos_id = vocab[meta["eos_token"]]
    if errors:
        names = " / ".join(x.label for x in (plan.base, t, plan.instruct) if x is not None)
        raise MergeRefused(
            f"refusing to merge ({names}); nothing was written. {len(errors)} difference(s):\n  "
            + "\n  ".join(errors)
            + "\nMerge only into a model with the same architecture, tensor shapes and vocabulary as the one the "
            "adapter was trained on (for lora-base: its instruct sibling)."
        )


# ------------------------------------------------------------------------------------------------- merge


@functools.cache
def _process() -> Any:
    import psutil

    return psutil.Process()


def _rss() -> int:
    return _process().memory_info().rss


BLOCK_BYTES = 32 << 20  # float32 rows worked on at a time


def merge_tensor(plan: MergePlan, t: TensorInfo, w: Any,
                 readers: dict[str, TensorReader]) -> tuple[str, Iterator[Any]]:
    """What is done to one target tensor, and its merged value as a sequence of row blocks.

    The arithmetic is float32 on at most BLOCK_BYTES of rows at a time, each block cast to the tensor's output
    dtype, so the working memory stays flat however large the tensor (a 128k x 8k embedding under chat-vector).
    Untouched tensors pass through as they were read (no copy)."""
    import torch

    out_dtype = torch_dtype(plan.out_dtype(t))
    adapter = plan.adapter
    full = adapter.full.get(t.name) if adapter is not None else None
    mod = adapter.modules.get(t.name) if adapter is not None else None
    owner = (adapter.modules.get(t.name.removesuffix("bias") + "weight")
             if adapter is not None and t.name.endswith(".bias") else None)
    if owner is not None and owner.bias is None:
        owner = None
    # PEFT semantics: a whole tensor in the adapter replaces the target's (and the chat vector's) value; a LoRA on
    # the same module (PEFT saves embeddings whole next to their LoRA) still adds its delta on top.
    kinds = [k for k, on in (("replaced", full is not None), ("chat_vector", plan.chat and full is None),
                             ("lora", mod is not None), ("lora_bias", owner is not None)) if on]
    if not t.is_float or t.numel == 0:
        return "copied", iter([w.to(out_dtype)])
    if not kinds and w.dtype == out_dtype:
        return "copied", iter([w])
    rows = t.shape[0] if t.shape else 1
    step = max(1, BLOCK_BYTES // (4 * max(1, t.numel // max(rows, 1))))

    def blocks() -> Iterator[Any]:
        src = (full if full is not None else w).reshape(rows, -1)
        inst = base = None
        if "chat_vector" in kinds:
            inst = readers["instruct"].get(t.name).reshape(rows, -1)
            base = readers["base"].get(t.name).reshape(rows, -1)
        for a in range(0, rows, step):
            b = min(rows, a + step)
            if not kinds:
                yield src[a:b].to(out_dtype)
                continue
            acc = src[a:b].to(torch.float32, copy=True)
            # target + λ·(instruct − base) + s·(α/r)·B·A, in that order
            if inst is not None:
                d = inst[a:b].to(torch.float32, copy=True)
                d.sub_(base[a:b].float())  # type: ignore[index]
                acc.add_(d.mul_(plan.chat_scale))
            if mod is not None:
                mod.add_rows_to(acc, a, b, plan.adapter_scale * mod.scaling)
            if owner is not None:
                acc.add_((owner.bias[a:b].float() * (plan.adapter_scale * owner.scaling)).reshape(acc.shape))
            yield acc.to(out_dtype)

    return ("+".join(kinds) or "cast"), blocks()


def merge_weights(plan: MergePlan, out_dir: Path, progress: bool = False,
                  tensor_hook: Callable[[str, Any], Any] | None = None) -> dict[str, Any]:
    """Stream the target's shards through `merge_tensor` into `out_dir`, one output shard per input shard.

    Peak memory: the adapter, the pages of the open input shard (safetensors maps it; they are clean page cache,
    released when the next shard is opened) and a few float32 row blocks.
    `tensor_hook(name, block)` may replace a block of rows just before it is written (the tests corrupt a merge
    with it on purpose)."""
    from tqdm import tqdm

    readers = {"target": TensorReader(plan.target)}
    if plan.chat:
        readers["base"] = TensorReader(plan.base)  # type: ignore[arg-type]
        readers["instruct"] = TensorReader(plan.instruct)  # type: ignore[arg-type]
    out_dir.mkdir(parents=True, exist_ok=True)
    counts: Counter = Counter()
    weight_map: dict[str, str] = {}
    total_out = 0
    rss_start = rss_peak = _rss()
    bar = tqdm(total=plan.target.total_bytes, unit="B", unit_scale=True, desc="merge", disable=not progress)
    try:
        for file, infos in plan.target.by_file().items():
            _, meta = read_header(file)
            writer = ShardWriter(out_dir / file.name, [(t.name, plan.out_dtype(t), t.shape) for t in infos],
                                 metadata=meta or {"format": "pt"})
            try:
                for t in infos:
                    kind, blocks = merge_tensor(plan, t, readers["target"].get(t.name), readers)
                    for block in blocks:
                        writer.write(t.name, block if tensor_hook is None else tensor_hook(t.name, block))
                        rss_peak = max(rss_peak, _rss())
                    counts[kind] += 1
                    bar.update(t.nbytes)
                    del blocks, block  # a live view would keep this shard's file mapped once the next is open
                writer.close()
            except BaseException:
                writer.abort()
                raise
            total_out += writer.data_bytes
            weight_map.update({t.name: file.name for t in infos})
            for r in readers.values():
                r.close()  # unmap the finished shard before opening the next
    finally:
        bar.close()
        for r in readers.values():
            r.close()
    if (plan.target.folder / INDEX).is_file():
        write_index(out_dir, weight_map, total_out)
    return {"tensors": dict(sorted(counts.items())), "bytes_written": total_out, "shards": len(plan.target.files),
            "rss_start_mb": round(rss_start / 2**20, 1), "rss_peak_mb": round(rss_peak / 2**20, 1)}


# Weight formats and files that belong to the source model, not to the merged one.
_WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".gguf", ".msgpack", ".h5", ".ckpt", ".onnx"}
_NOT_COPIED = {INDEX, "pytorch_model.bin.index.json", "README.md", "nift_model.json"}


def write_aux_files(plan: MergePlan, out_dir: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Config, tokenizer and generation config from the target; dtype and EOS brought up to date."""
    from transformers import AutoConfig, GenerationConfig

    copied = []
    for p in sorted(plan.target.folder.iterdir()):
        source_only = p.suffix in _WEIGHT_SUFFIXES or p.name in _NOT_COPIED or p.name.startswith(".")
        if p.is_file() and not source_only:
            shutil.copyfile(p, out_dir / p.name)
            copied.append(p.name)
    config = dict(plan.target.config)
    out_main = plan.dtype if plan.dtype != "auto" else _dtype_name(plan.target.main_dtype())
    for key in ("dtype", "torch_dtype"):
        if key in config or (key == "dtype" and "torch_dtype" not in config):
            config[key] = out_main
    write_json(out_dir / "config.json", config)

    notes = {}
    try:
        gen = GenerationConfig.from_pretrained(out_dir)
    except OSError:
        gen = GenerationConfig.from_model_config(AutoConfig.from_pretrained(out_dir))
        notes["generation_config"] = "created from config.json (the target has none)"
    if plan.eos_id is not None:
        eos = gen.eos_token_id
        ids = [] if eos is None else (list(eos) if isinstance(eos, (list, tuple)) else [eos])
        if plan.eos_id not in ids:
            # The adapter was trained to end with this token (EOS appended to every target): without it in the
            # stop list the merged model would run on past its answers.
            gen.eos_token_id = [*ids, plan.eos_id]
            notes["eos_token_id"] = f"added {plan.eos_id} ({(plan.meta or {}).get('eos_token')}), the EOS the " \
                                    f"adapter was trained with, to {ids}"
            log(f"[merge] generation_config: {notes['eos_token_id']}")
    gen.save_pretrained(out_dir)
    return {"copied": copied, **notes}


def _dtype_name(st: str) -> str:
    return {v: k for k, v in TORCH_NAMES.items()}.get(st, "float32")


# ------------------------------------------------------------------------------------------- verification


RTOL_FLOOR = 1e-4  # float32 weights: only summation-order noise remains


def _available_memory() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def verification_memory(plan: MergePlan) -> int:
    """Bytes the verification needs: one float32 copy of the model at a time, plus the adapter."""
    numel = sum(t.numel for t in plan.target.tensors.values() if t.is_float)
    return int(numel * 4 * 1.25) + (plan.adapter.nbytes if plan.adapter else 0)


def _encode(tok: Any, prompts: list[str]) -> tuple[Any, Any]:
    """The prompts as one right-padded batch and its attention mask (one forward pass per model, not one per
    prompt: each pass reads the whole output layer, 262k x 640 for Gemma)."""
    import torch

    rows = [list(tok(p)["input_ids"]) for p in prompts]
    ids = torch.full((len(rows), max(map(len, rows))), tok.pad_token_id or 0, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


def _logits(model: Any, batch: tuple[Any, Any], device: str) -> Any:
    """The logits at every real (unpadded) position of every prompt, flattened, in float64 on the CPU."""
    import torch

    ids, mask = batch
    with torch.no_grad():
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
    return out[mask.to(out.device).bool()].double().cpu().reshape(-1)


def _rel(a: Any, b: Any) -> float:
    return float((a - b).norm()) / (float(b.norm()) or 1.0)


def _top1(a: Any, b: Any, vocab: int) -> float:
    return float((a.reshape(-1, vocab).argmax(-1) == b.reshape(-1, vocab).argmax(-1)).double().mean())


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' own per-load progress bars would interleave with ours."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def _round_like_output(plan: MergePlan, model: Any) -> None:
    """Round every parameter to the dtype the merge writes it in: what a correct merge's file holds."""
    import torch

    main = torch_dtype(plan.out_dtype(TensorInfo("", Path(), plan.target.main_dtype(), ())))
    with torch.no_grad():
        for name, p in model.named_parameters():
            info = plan.target.tensors.get(name)
            dtype = torch_dtype(plan.out_dtype(info)) if info is not None else main
            if p.is_floating_point() and dtype != torch.float32:
                p.copy_(p.to(dtype).float())


def verify_merge(plan: MergePlan, model_dir: Path, prompts: list[str], rtol: float | None = None,
                 device: str = "cpu", log: Callable[[str], None] = print) -> dict[str, Any]:
    """Logits of the merged folder against the unmerged reference on `prompts`, everything in float32.

    The reference is the target with the adapter attached by PEFT and not merged (its scaling multiplied by
    --adapter-scale), and for chat-vector the target plus λ·(instruct − base) added in memory. The relative error
    ||merged − reference|| / ||reference|| over all positions must stay within the tolerance: `rtol` when given;
    else 1e-4 for float32 weights and, for bf16/fp16 weights, twice the error that rounding the correctly merged
    weights to that dtype causes (measured here, on the same prompts) when that is larger. A merge that is right
    but rounded passes; a wrong one (a module left out, a shard garbled) moves the logits far more."""
    import gc

    import torch
    from transformers import AutoModelForCausalLM

    batches = _encode(plan.tokenizer or _load_tokenizer(model_dir), prompts)
    low_precision = any(plan.out_dtype(t) not in ("F32", "F64") for t in plan.target.tensors.values() if t.is_float)
    with _quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(plan.target.folder, dtype=torch.float32).to(device).eval()
        vocab = int(model.config.get_text_config().vocab_size) if hasattr(model.config, "get_text_config") \
            else int(model.config.vocab_size)
        before = _logits(model, batches, device)
        if plan.chat:
            _add_chat_vector(plan, model)
        scaled: Callable[[], Any] = contextlib.nullcontext
        if plan.adapter is not None:
            from peft import PeftModel
            from peft.helpers import rescale_adapter_scale

            model = PeftModel.from_pretrained(model, str(plan.adapter_dir), is_trainable=False).to(device).eval()
            if plan.adapter_scale != 1 and plan.adapter.modules:
                scaled = functools.partial(rescale_adapter_scale, model, plan.adapter_scale)
        with scaled():
            ref = _logits(model, batches, device)
            noise = 0.0
            if low_precision:
                if plan.adapter is not None:
                    model = model.merge_and_unload()  # PEFT's own merge, in memory, at the current scale
                _round_like_output(plan, model)
                noise = _rel(_logits(model, batches, device), ref)
        del model
        gc.collect()  # free the reference before loading the merged model: one float32 copy at a time
        merged_model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
        merged = _logits(merged_model, batches, device)
        del merged_model

    rel = _rel(merged, ref)
    tol = rtol if rtol is not None else max(RTOL_FLOOR, 2 * noise)
    effect = _rel(ref, before) if plan.adapter is not None or plan.chat else 0.0
    result: dict[str, Any] = {
        "passed": rel <= tol, "rel_error": rel, "tolerance": tol,
        "tolerance_basis": "given (--verify-rtol)" if rtol is not None else
        f"max({RTOL_FLOOR:g}, 2 x rounding error {noise:.2e})" if low_precision else f"{RTOL_FLOOR:g} (float32)",
        "rounding_error": noise, "effect": effect, "max_abs_error": float((merged - ref).abs().max()),
        "top1_agreement": _top1(merged, ref, vocab), "prompts": len(prompts), "positions": int(ref.numel() // vocab),
        "reference": ("target + λ·(instruct − base) in memory" if plan.chat else "target")
        + (" + unmerged adapter (PEFT)" if plan.adapter is not None else ""),
        "compute_dtype": "float32", "device": device,
    }
    if effect <= tol:
        result["note"] = (f"the merge barely changes these logits (relative effect {effect:.2e} <= tolerance "
                          f"{tol:.0e}): this check cannot tell a merged model from the target alone")
    return result


def _add_chat_vector(plan: MergePlan, model: Any) -> None:
    """target += λ·(instruct − base), parameter by parameter, through the model's own parameter names."""
    import torch

    inst, base = TensorReader(plan.instruct), TensorReader(plan.base)  # type: ignore[arg-type]
    with torch.no_grad():
        for name, info in plan.instruct.tensors.items():  # type: ignore[union-attr]
            if not info.is_float:
                continue
            try:
                p = model.get_parameter(name)
            except AttributeError:
                continue
            p += (plan.chat_scale * (inst.get(name).float() - base.get(name).float())).to(p.device)
    inst.close()
    base.close()


def _pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available on this machine")
    return device


# ----------------------------------------------------------------------------------------------- model card


def _md_cell(value: Any) -> str:
    return str(value).replace("|", r"\|").replace("\n", " ")


def model_card(plan: MergePlan, stats: dict[str, Any]) -> str:
    meta = plan.meta or {}
    lora = meta.get("lora") or {}
    adapter_base = meta.get("base_model") or (plan.adapter.config.get("base_model_name_or_path")
                                              if plan.adapter else None)
    rows = [("method", plan.method), ("target (weights merged into)", plan.target_ref)]
    if str(plan.target.folder) != plan.target_ref:
        rows.append(("target folder", str(plan.target.folder)))
    if plan.adapter is not None:
        rows += [("adapter", str(plan.adapter_dir)), ("adapter sha256", stats["adapter_sha256"]),
                 ("adapter trained on (base)", adapter_base or "unknown"),
                 ("λ on the LoRA delta (--adapter-scale)", plan.adapter_scale)]
    if plan.chat:
        rows += [("chat vector", f"{plan.instruct_ref} − {plan.base_ref}"),
                 ("λ on the chat vector (--chat-vector-scale)", plan.chat_scale)]
    rows += [("data manifest hash", meta.get("data_manifest_hash", "n/a (no nift_train.json)")),
             ("dtype", f"{stats['dtype']['output']} (target: {stats['dtype']['target']})"),
             ("nift", __version__)]
    if meta:
        rows += [("training template", meta.get("template")), ("EOS appended in training", meta.get("eos_token")),
                 ("training method", meta.get("method")),
                 ("LoRA", f"r={lora.get('r')}, alpha={lora.get('alpha')}, dropout={lora.get('dropout')}, "
                          f"targets={lora.get('target_modules')}"),
                 ("hyperparameters", json.dumps(meta.get("hyperparameters") or {}, sort_keys=True))]
    v = stats.get("verification") or {}
    if v.get("passed"):
        check = (f"passed: relative logit error {v['rel_error']:.2e} <= {v['tolerance']:.0e} against "
                 f"{v['reference']} on {v['prompts']} prompts ({v['positions']} positions), top-1 agreement "
                 f"{v['top1_agreement']:.3f}")
    else:
        check = f"not run: {v.get('skipped', 'disabled')}"
    tags = list(dict.fromkeys(["nift", "merge", plan.method] + (["lora"] if plan.adapter is not None else [])))
    front = ["---", f"base_model: {json.dumps(str(plan.target_ref))}", "library_name: transformers",
             "tags:", *[f"- {t}" for t in tags], "---", ""]
    licence = ""
    nm = plan.target.folder / "nift_model.json"
    if nm.is_file():
        with_licence = json.loads(nm.read_text(encoding="utf-8"))
        licence = (f"\n## Licence\n\nThe weights derive from {with_licence.get('upstream')}: "
                   f"{with_licence.get('licence')}. Source: {with_licence.get('source')}.\n")
    table = "\n".join(f"| {k} | {_md_cell(val)} |" for k, val in rows)
    what = {
        "lora": "the LoRA adapter merged into the model it was trained on",
        "lora-base": "a LoRA adapter trained on a base model, merged into another model with the same architecture "
                     "and vocabulary (its instruct sibling): the adapter acts like a chat vector",
        "chat-vector": "task arithmetic: target + λ·(instruct − base)"
                       + (", plus a LoRA adapter" if plan.adapter is not None else ""),
    }[plan.method]
    return "\n".join(front) + f"""# Merged by nift ({plan.method})

This model is {what}, made by `nift merge` (non-instructional fine-tuning): merged shard by shard, deltas
computed in float32, weights written in {stats['dtype']['output']}.

| | |
|---|---|
{table}

**Verification:** {check}.
{licence}
## Use

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("path/to/this/folder")
tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")
```
"""


# ------------------------------------------------------------------------------------------------- stage


def run(cfg: MergeConfig, run_dir: str | Path, force: bool = False, log=print,
        tensor_hook: Callable[[str, Any], Any] | None = None) -> StageResult:
    """Run the merge stage into `run_dir/merge/` (the model in `merge/model/`)."""
    run_dir = Path(run_dir)
    stage_dir = run_dir / "merge"
    plan, inputs, fingerprints = build_plan(cfg, run_dir, log=log)
    if force or up_to_date(stage_dir, stage_identity("merge", cfg, inputs, fingerprints)) is None:
        # Before run_stage touches the stage dir: a refused merge leaves a previous result intact.
        check_plan(plan, log=log)
        for w in plan.warnings:
            log(f"[merge] note: {w}")

    def body(ctx: StageContext) -> None:
        partial, final = ctx.path(PARTIAL_DIR), ctx.path(MODEL_DIR)
        for d in (partial, final):  # an interrupted run restarts the merge: it costs disk time, nothing paid for
            shutil.rmtree(d, ignore_errors=True)
        (ctx.dir / "verification_failed.json").unlink(missing_ok=True)
        need = sum(torch_bytes(plan, t) for t in plan.target.tensors.values())
        free = shutil.disk_usage(ctx.dir).free
        if free < need * 1.02 + 2**20:
            raise InputError(f"{ctx.dir}: {need / 1e9:.2f} GB needed for the merged model, {free / 1e9:.2f} GB free")
        log(f"[merge] {plan.method}: {plan.target.label} ({len(plan.target.files)} shard(s), "
            f"{plan.target.total_bytes / 1e9:.2f} GB) -> {final}")
        with ctx.timed("merge_s"):
            merged = merge_weights(plan, partial, progress=cfg.progress, tensor_hook=tensor_hook)
        aux = write_aux_files(plan, partial, log=log)
        stats: dict[str, Any] = {
            "method": plan.method, "target": plan.target_ref, "target_path": str(plan.target.folder),
            "base": plan.base_ref, "instruct": plan.instruct_ref,
            "adapter": str(plan.adapter_dir) if plan.adapter_dir else None,
            "adapter_sha256": sha256_file(plan.adapter.weights_file) if plan.adapter else None,
            "adapter_scale": plan.adapter_scale if plan.adapter else None,
            "chat_vector_scale": plan.chat_scale if plan.chat else None,
            "data_manifest_hash": (plan.meta or {}).get("data_manifest_hash"),
            "dtype": {"target": _dtype_name(plan.target.main_dtype()),
                      "output": plan.dtype if plan.dtype != "auto" else _dtype_name(plan.target.main_dtype())},
            "merge": merged, "files": aux, "warnings": plan.warnings,
        }
        if plan.dtype != "auto" and stats["dtype"]["output"] != stats["dtype"]["target"]:
            log(f"[merge] writing {stats['dtype']['output']} weights as asked (--dtype); the target is "
                f"{stats['dtype']['target']}")
        stats["verification"] = _run_verification(cfg, plan, partial, ctx, log)
        (partial / "README.md").write_text(model_card(plan, stats), encoding="utf-8")
        os.replace(partial, final)
        ctx.stats.update(stats)
        log(f"[merge] wrote {final} ({merged['bytes_written'] / 1e9:.2f} GB, tensors: {merged['tensors']})")

    return run_stage("merge", stage_dir, cfg, body, inputs=inputs, fingerprints=fingerprints, force=force, log=log)


def torch_bytes(plan: MergePlan, t: TensorInfo) -> int:
    return t.numel * DTYPE_SIZES[plan.out_dtype(t)]


def _run_verification(cfg: MergeConfig, plan: MergePlan, model_dir: Path, ctx: StageContext,
                      log: Callable[[str], None]) -> dict[str, Any]:
    if cfg.verify == "off":
        return {"passed": None, "skipped": "--verify off"}
    need, avail = verification_memory(plan), _available_memory()
    if cfg.verify == "auto" and need > avail:
        log(f"[merge] verification skipped: it needs ~{need / 1e9:.1f} GB (float32), {avail / 1e9:.1f} GB "
            "available; --verify on forces it")
        return {"passed": None, "skipped": f"needs ~{need / 1e9:.1f} GB in float32, {avail / 1e9:.1f} GB available"}
    device = _pick_device(cfg.device)
    log(f"[merge] verifying: logits of the merged model vs the unmerged reference on {len(cfg.verify_prompts)} "
        f"prompts ({device}) ...")
    with ctx.timed("verify_s"):
        result = verify_merge(plan, model_dir, cfg.verify_prompts, cfg.verify_rtol, device=device, log=log)
    if result.get("note"):
        log(f"[merge] warning: {result['note']}")
    if not result["passed"]:
        write_json(ctx.path("verification_failed.json"), result)
        raise NiftError(
            f"verification failed: the merged model's logits differ from the unmerged reference by "
            f"{result['rel_error']:.3e} (relative; tolerance {result['tolerance']:.0e}; top-1 agreement "
            f"{result['top1_agreement']:.3f}). The merge is not published: the rejected folder is "
            f"{model_dir} and the measurements are in {ctx.path('verification_failed.json')}."
        )
    log(f"[merge] verified: relative logit error {result['rel_error']:.2e} <= {result['tolerance']:.0e}, "
        f"top-1 agreement {result['top1_agreement']:.3f}")
    return result
