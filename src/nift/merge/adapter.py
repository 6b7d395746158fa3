"""The adapter side of a merge: PEFT LoRA adapter folders and the train stage's metadata beside them."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nift.checkpoint import load_json
from nift.errors import InputError

TRAIN_META = "nift_train.json"

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


