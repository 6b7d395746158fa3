"""The checks before a merge writes anything: architecture, tensor shapes, the adapter's modules, vocabulary.

Every difference is collected and listed in one error; nothing is refused on the first one alone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nift.artifacts import sha256_file
from nift.checkpoint import Checkpoint
from nift.errors import InputError
from nift.merge.adapter import Adapter
from nift.merge.plan import MergePlan

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
    errors += check_target_modules(adapter, target)
    for name, tensor in adapter.full.items():
        info = target.tensors.get(name)
        if info is None:
            errors.append(f"adapter tensor {name} (modules_to_save): the target has no such tensor")
        elif info.shape != tuple(tensor.shape):
            errors.append(f"adapter tensor {name} (modules_to_save): {list(tensor.shape)} vs target "
                          f"{list(info.shape)}")
    return errors


def _peft_match(key: str | list[str], name: str) -> bool:
    """PEFT's rule: a string is a regular expression the whole module name must match; a list holds names that
    match the module's name or its last dotted parts."""
    if isinstance(key, str):
        return re.fullmatch(key, name) is not None
    return any(name == k or name.endswith("." + k) for k in key)


def check_target_modules(adapter: Adapter, target: Checkpoint) -> list[str]:
    """adapter_config.json's target_modules must name modules the target has, and cover every module the adapter
    holds weights for: PEFT (and --verify) loads the adapter by that list, while the merge goes by the weights, so a
    module that is not there (an edited config) would otherwise merge silently with --verify off."""
    tm = adapter.config.get("target_modules")
    if not tm or tm == "all-linear" or not isinstance(tm, (str, list)):
        return []
    where = f"{adapter.folder / 'adapter_config.json'}: target_modules"
    modules = {n.rsplit(".", 1)[0] for n in target.tensors if "." in n}
    if target.config.get("tie_word_embeddings"):
        modules.add("lm_head")  # a real module that shares the embeddings' tensor
    errors = []
    for key in [tm] if isinstance(tm, str) else tm:
        if not any(_peft_match([key] if isinstance(tm, list) else key, m) for m in modules):
            errors.append(f"{where} names {key!r}, but {target.label} has no module of that name")
    for mod in adapter.modules.values():
        if not _peft_match(tm, mod.name):
            errors.append(f"adapter module {mod.name}: has LoRA weights but is not in {where} ({_fmt(tm)}), so PEFT "
                          "would not load them")
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


def load_tokenizer_quietly(folder: Path) -> Any:
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
            tokenizers[ck.folder] = load_tokenizer_quietly(ck.folder)
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


