"""Safetensors checkpoints read and written one tensor at a time, so that a merge never holds a whole model.

Reading: a model folder's tensors are listed from the safetensors headers alone (8-byte length + JSON, see
https://huggingface.co/docs/safetensors) without touching the data; tensor data comes from `safetensors.safe_open`.

Writing: `safetensors.torch.save_file` needs every tensor of a file in memory at once. `ShardWriter` writes the
same format incrementally instead: the header is known up front (a merge keeps every tensor's name and shape), so
it is written first and each tensor's bytes are appended as soon as they are computed. Files are written under a
temporary name, fsync'd and renamed, and read back by `safe_open` in the tests.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nift.errors import InputError
from nift.io import parse_json_line, read_json

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"

# safetensors dtype names and their sizes in bytes.
DTYPE_SIZES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4,
    "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
}
FLOAT_DTYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}
TORCH_NAMES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16", "float64": "F64"}


def torch_dtype(name: str) -> Any:
    """The torch dtype for a safetensors dtype name."""
    import torch

    table = {
        "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
        "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
        "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    }
    return table[name]


def st_dtype(dtype: Any) -> str:
    """The safetensors dtype name for a torch dtype."""
    name = str(dtype).removeprefix("torch.")
    table = {**TORCH_NAMES, "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8",
             "bool": "BOOL", "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2"}
    return table[name]


@dataclass(frozen=True)
class TensorInfo:
    name: str
    file: Path
    dtype: str  # safetensors name: F32, BF16, ...
    shape: tuple[int, ...]
    offset: int = 0  # where its bytes start in the file's data section


    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPE_SIZES[self.dtype]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES


def load_json(path: Path) -> Any:
    """A JSON file from a model or adapter folder; invalid JSON is an error naming the file and line."""
    return read_json(path)


def read_header(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """(tensors, metadata) from a safetensors file's header, without reading the data."""
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise ValueError("file shorter than 8 bytes")
            (n,) = struct.unpack("<Q", raw)
            if n > 100 * 1024 * 1024:
                raise ValueError(f"header length {n} is implausible")
            header = parse_json_line(f.read(n), f"{path} (safetensors header)")
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable safetensors file ({e})") from None
    meta = header.pop("__metadata__", None) or {}
    return header, meta


@dataclass
class Checkpoint:
    """A Hugging Face model folder with safetensors weights: its config and every tensor's file, dtype and shape."""

    folder: Path
    label: str  # what the user called it (for messages)
    files: list[Path]  # weight files in order
    tensors: dict[str, TensorInfo]
    config: dict[str, Any]
    index_metadata: dict[str, Any]

    @classmethod
    def open(cls, folder: str | Path, label: str | None = None) -> Checkpoint:
        folder = Path(folder)
        label = label or str(folder)
        cfg_path = folder / "config.json"
        if not cfg_path.is_file():
            raise InputError(f"{label}: {folder} has no config.json; is it a Hugging Face model folder?")
        config = load_json(cfg_path)
        if not isinstance(config, dict):
            raise InputError(f"{cfg_path}: expected a JSON object")
        index_metadata: dict[str, Any] = {}
        if (folder / INDEX).is_file():
            index = load_json(folder / INDEX)
            weight_map = index.get("weight_map") if isinstance(index, dict) else None
            if not isinstance(weight_map, dict):
                raise InputError(f"{folder / INDEX}: not a safetensors index (no weight_map)")
            index_metadata = index.get("metadata") or {}
            files = sorted({folder / f for f in weight_map.values()})
            missing = [str(f) for f in files if not f.is_file()]
            if missing:
                raise InputError(f"{label}: shards named in {INDEX} are missing: {', '.join(missing)}")
        elif (folder / SINGLE).is_file():
            files = [folder / SINGLE]
        else:
            others = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".gguf"))
            hint = (f" It holds {', '.join(others)}: convert it to safetensors first (load it with transformers "
                    "and save_pretrained(..., safe_serialization=True)); pickled weights cannot be streamed "
                    "safely.") if others else ""
            raise InputError(f"{label}: no {SINGLE} or {INDEX} in {folder}.{hint}")
        tensors: dict[str, TensorInfo] = {}
        for f in files:
            header, _ = read_header(f)
            for name, spec in header.items():
                if spec.get("dtype") not in DTYPE_SIZES:
                    raise InputError(f"{f}: tensor {name} has unsupported dtype {spec.get('dtype')!r}")
                tensors[name] = TensorInfo(name, f, spec["dtype"], tuple(spec["shape"]),
                                           int(spec.get("data_offsets", [0])[0]))
        return cls(folder, label, files, tensors, config, index_metadata)

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    def by_file(self) -> dict[Path, list[TensorInfo]]:
        """Tensors grouped by weight file, in file order and, within a file, in on-disk order (sequential reads)."""
        out: dict[Path, list[TensorInfo]] = {f: [] for f in self.files}
        for t in sorted(self.tensors.values(), key=lambda t: t.offset):
            out[t.file].append(t)
        return out

    def main_dtype(self) -> str:
        """The dtype holding most of the floating-point bytes (what `config.json` calls the model's dtype)."""
        sizes: dict[str, int] = {}
        for t in self.tensors.values():
            if t.is_float:
                sizes[t.dtype] = sizes.get(t.dtype, 0) + t.nbytes
        return max(sizes, key=sizes.get) if sizes else "F32"


class TensorReader:
    """Reads tensors from a checkpoint's files, keeping one file open at a time: the memory a merge holds stays
    near one shard (the pages of the open file's mapping) rather than growing with every file it has touched."""

    def __init__(self, ckpt: Checkpoint):
        self.ckpt = ckpt
        self._file: Path | None = None
        self._handle: Any = None

    def get(self, name: str) -> Any:
        from safetensors import safe_open

        info = self.ckpt.tensors[name]
        if info.file != self._file:
            self.close()
            self._handle = safe_open(str(info.file), framework="pt", device="cpu")
            self._file = info.file
        return self._handle.get_tensor(name)

    def close(self) -> None:
        self._handle = None  # safe_open has no close(); dropping the last reference unmaps the file
        self._file = None


class ShardWriter:
    """Writes one safetensors file tensor by tensor; `specs` fixes every tensor's name, dtype and shape up front."""

    def __init__(self, path: Path, specs: Iterable[tuple[str, str, tuple[int, ...]]],
                 metadata: dict[str, str] | None = None):
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + f".tmp{os.getpid()}")
        self.order: list[str] = []
        self.specs: dict[str, tuple[str, tuple[int, ...], int]] = {}
        header: dict[str, Any] = {"__metadata__": dict(metadata or {"format": "pt"})}
        offset = 0
        for name, dtype, shape in specs:
            n = math.prod(shape) * DTYPE_SIZES[dtype]
            header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
            self.specs[name] = (dtype, tuple(shape), n)
            self.order.append(name)
            offset += n
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # the spec pads the header with spaces to an 8-byte boundary
        self.data_bytes = offset
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.tmp, "wb")  # noqa: SIM115 - closed in close()/abort()
        self._f.write(struct.pack("<Q", len(raw)) + raw)
        self._next = 0  # index of the tensor being written
        self._partial = 0  # its bytes written so far

    def write(self, name: str, tensor: Any) -> None:
        """Append the next tensor, or the next rows of it: tensors come in the declared order with the declared
        dtype, and a tensor is complete once its declared number of bytes has been written."""
        import torch

        if self._next >= len(self.order) or self.order[self._next] != name:
            expected = self.order[self._next] if self._next < len(self.order) else "nothing"
            raise RuntimeError(f"{self.path.name}: got tensor {name}, expected {expected}")
        dtype, shape, n = self.specs[name]
        if st_dtype(tensor.dtype) != dtype:
            raise RuntimeError(f"{self.path.name}: {name} is {tensor.dtype}, declared {dtype}")
        data = tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
        if self._partial + data.nbytes > n:
            raise RuntimeError(f"{self.path.name}: {name} got {self._partial + data.nbytes} bytes, declared {n} "
                               f"({dtype} {list(shape)})")
        self._f.write(memoryview(data))
        self._partial += data.nbytes
        if self._partial == n:
            self._next += 1
            self._partial = 0

    def close(self) -> None:
        """Finish the file (all declared tensors must have been written)."""
        if self._next != len(self.order):
            self.abort()
            raise RuntimeError(f"{self.path.name}: {len(self.order) - self._next} declared tensors not written")
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self._f.close()
        self.tmp.unlink(missing_ok=True)


def write_index(folder: Path, weight_map: dict[str, str], total_size: int) -> None:
    from nift.artifacts import write_json

    write_json(folder / INDEX, {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))})


def fingerprint(folder: str | Path) -> str:
    """A cheap identity for a folder outside the run dir: every file's name, size and modification time.

    Hashing the bytes of a multi-GB model on every re-run would defeat an instant skip; any rewrite of a file
    changes its mtime."""
    folder = Path(folder)
    if folder.is_file():
        st = folder.stat()
        entries = [(folder.name, st.st_size, st.st_mtime_ns)]
    else:
        entries = []
        for p in sorted(folder.rglob("*")):
            if p.is_file() and not p.name.startswith("."):
                st = p.stat()
                entries.append((p.relative_to(folder).as_posix(), st.st_size, st.st_mtime_ns))
    return hashlib.sha256(json.dumps([str(folder.resolve()), entries]).encode()).hexdigest()
