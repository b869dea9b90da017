"""A HuggingFace checkpoint directory: ``config.json`` plus lazy access to its tensors.

Supported weight files, looked for in this order:

* ``model.safetensors.index.json`` (sharded safetensors; the index's ``weight_map`` names the
  shard of every tensor),
* ``model.safetensors``, else every ``*.safetensors`` file of the directory,
* ``pytorch_model.bin.index.json`` (sharded PyTorch),
* ``pytorch_model.bin``, else every ``*.bin`` / ``*.pt`` / ``*.pth`` file.

Opening a checkpoint reads only headers: names, shapes and dtypes of every tensor. A tensor's
data is read when :meth:`Checkpoint.load` asks for it: safetensors files through
``safetensors.safe_open`` (memory-mapped), PyTorch files through ``torch.load(mmap=True,
weights_only=True)``, so converting a model holds about one tensor in memory at a time.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConversionError

__all__ = ["Checkpoint", "TensorInfo", "DTYPE_BYTES", "read_json"]

# Element sizes of the dtype names used here (safetensors' names, lower case).
DTYPE_BYTES = {
    "f64": 8,
    "f32": 4,
    "f16": 2,
    "bf16": 2,
    "i64": 8,
    "i32": 4,
    "i16": 2,
    "i8": 1,
    "u8": 1,
    "bool": 1,
    "f8_e4m3": 1,
    "f8_e5m2": 1,
}

_SAFETENSORS_DTYPES = {
    "F64": "f64",
    "F32": "f32",
    "F16": "f16",
    "BF16": "bf16",
    "I64": "i64",
    "I32": "i32",
    "I16": "i16",
    "I8": "i8",
    "U8": "u8",
    "BOOL": "bool",
    "F8_E4M3": "f8_e4m3",
    "F8_E5M2": "f8_e5m2",
}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a checkpoint, known from the file header only.

    Attributes:
        name: the state-dict key (e.g. ``model.layers.0.self_attn.q_proj.weight``).
        shape: numpy order (outermost first).
        dtype: lower-case name: ``bf16``, ``f16``, ``f32``, ``u8``, ``i32``, ...
        file: the file holding it.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    file: Path

    @property
    def nbytes(self) -> int:
        """Bytes of the stored tensor."""
        n = DTYPE_BYTES.get(self.dtype, 0)
        for d in self.shape:
            n *= d
        return n


def read_json(path: Path) -> Any:
    """Parses a JSON file; a malformed one raises :class:`ConversionError` naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConversionError(f"{path}: not valid JSON ({e})") from None


def _torch():
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is installed wherever tests run
        raise ConversionError(
            "converting checkpoints needs PyTorch: pip install 'bitnet-ext[convert]'"
        ) from None
    return torch


def _torch_dtype_name(dtype: Any) -> str:
    torch = _torch()
    names = {
        torch.float64: "f64",
        torch.float32: "f32",
        torch.float16: "f16",
        torch.bfloat16: "bf16",
        torch.int64: "i64",
        torch.int32: "i32",
        torch.int16: "i16",
        torch.int8: "i8",
        torch.uint8: "u8",
        torch.bool: "bool",
    }
    return names.get(dtype, str(dtype).replace("torch.", ""))


class Checkpoint:
    """A checkpoint directory opened for reading.

    Attributes:
        path: the directory.
        config: the parsed ``config.json``.
        tensors: ``name -> TensorInfo`` for every tensor of every weight file.
        files: the weight files, in the order they were read.

    Use as a context manager (or call :meth:`close`) to release open files.

    Raises:
        ConversionError: no directory, no ``config.json``, no weight files, an unreadable or
            malformed file, a shard named in an index but missing, or a tensor name present in
            two files.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise ConversionError(f"{self.path}: not a checkpoint directory")
        cfg = self.path / "config.json"
        if not cfg.is_file():
            raise ConversionError(
                f"{self.path}: config.json not found (a HuggingFace checkpoint directory has "
                "config.json next to its weight files)"
            )
        self.config: dict[str, Any] = read_json(cfg)
        if not isinstance(self.config, dict):
            raise ConversionError(f"{cfg}: expected a JSON object")
        self.tensors: dict[str, TensorInfo] = {}
        self.files: list[Path] = []
        self._safe: dict[Path, Any] = {}  # open safe_open handles
        self._torch_sd: dict[Path, dict[str, Any]] = {}  # mmap-loaded state dicts
        self._index()

    # ---------------------------------------------------------------- discovery
    def _weight_files(self) -> list[Path]:
        p = self.path
        for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
            index = p / index_name
            if index.is_file():
                data = read_json(index)
                wmap = data.get("weight_map") if isinstance(data, dict) else None
                if not isinstance(wmap, dict) or not wmap:
                    raise ConversionError(f"{index}: no 'weight_map' object")
                files = []
                for shard in dict.fromkeys(wmap.values()):
                    f = p / str(shard)
                    if not f.is_file():
                        raise ConversionError(f"{index}: shard {shard} is missing from {p}")
                    files.append(f)
                return files
        if (p / "model.safetensors").is_file():
            return [p / "model.safetensors"]
        st = sorted(p.glob("*.safetensors"))
        if st:
            return st
        if (p / "pytorch_model.bin").is_file():
            return [p / "pytorch_model.bin"]
        pt = sorted([*p.glob("*.bin"), *p.glob("*.pt"), *p.glob("*.pth")])
        if pt:
            return pt
        raise ConversionError(
            f"{p}: no weight files found (expected model.safetensors, "
            "model.safetensors.index.json, pytorch_model.bin or *.pt)"
        )

    def _index(self) -> None:
        for f in self._weight_files():
            infos = self._read_safetensors(f) if f.suffix == ".safetensors" else self._read_torch(f)
            for info in infos:
                if info.name in self.tensors:
                    raise ConversionError(
                        f"tensor {info.name} is stored twice: in {self.tensors[info.name].file} "
                        f"and in {f}"
                    )
                self.tensors[info.name] = info
            self.files.append(f)
        if not self.tensors:
            raise ConversionError(f"{self.path}: the weight files hold no tensors")

    def _read_safetensors(self, f: Path) -> list[TensorInfo]:
        from safetensors import safe_open

        try:
            handle = safe_open(str(f), framework="pt")
            infos = []
            for name in handle.keys():
                sl = handle.get_slice(name)
                dtype = _SAFETENSORS_DTYPES.get(sl.get_dtype(), sl.get_dtype().lower())
                infos.append(TensorInfo(name, tuple(int(d) for d in sl.get_shape()), dtype, f))
        except Exception as e:  # safetensors raises its own error types (and OSError)
            raise ConversionError(f"{f}: cannot read safetensors file ({e})") from None
        self._safe[f] = handle
        return infos

    def _read_torch(self, f: Path) -> list[TensorInfo]:
        torch = _torch()
        try:
            try:
                sd = torch.load(str(f), map_location="cpu", mmap=True, weights_only=True)
            except RuntimeError as e:
                # Files saved with the legacy (non-zip) serializer cannot be memory-mapped.
                if "mmap" not in str(e) and "zip" not in str(e):
                    raise
                sd = torch.load(str(f), map_location="cpu", weights_only=True)
        except Exception as e:  # unpickling errors come in many types
            raise ConversionError(f"{f}: cannot read PyTorch checkpoint ({e})") from None
        sd = _unwrap_state_dict(sd, f)
        self._torch_sd[f] = sd
        return [
            TensorInfo(k, tuple(int(d) for d in v.shape), _torch_dtype_name(v.dtype), f)
            for k, v in sd.items()
        ]

    # ---------------------------------------------------------------- access
    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def load(self, name: str) -> Any:
        """Reads one tensor as a CPU ``torch.Tensor`` in its stored dtype.

        Raises:
            ConversionError: unknown name, or the file cannot be read (naming file and tensor).
        """
        info = self.tensors.get(name)
        if info is None:
            raise ConversionError(f"{self.path}: no tensor named {name}")
        try:
            if info.file in self._safe:
                return self._safe[info.file].get_tensor(name)
            return self._torch_sd[info.file][name]
        except Exception as e:
            raise ConversionError(f"{info.file}: cannot read tensor {name} ({e})") from None

    def close(self) -> None:
        """Releases the open files (idempotent)."""
        self._safe.clear()
        self._torch_sd.clear()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _unwrap_state_dict(obj: Any, f: Path) -> dict[str, Any]:
    """Returns the tensor dict of a loaded PyTorch file: a plain state dict, or one nested under
    ``state_dict`` / ``model`` / ``module`` (training checkpoints). Non-tensor entries of a plain
    state dict (e.g. ``_metadata``) are dropped."""
    torch = _torch()
    if not isinstance(obj, dict):
        raise ConversionError(f"{f}: expected a state dict, got {type(obj).__name__}")
    for key in ("state_dict", "model", "module"):
        inner = obj.get(key)
        if isinstance(inner, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            obj = inner
            break
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise ConversionError(f"{f}: holds no tensors")
    return tensors
