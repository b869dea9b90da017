"""GGUF files (v2 and v3): a validated, memory-mapped reader and a streaming writer.

Reading::

    with bitnet.gguf.read("model.gguf") as f:          # or a repo id "owner/name[/file.gguf]"
        f.metadata["bitnet-b1.58.block_count"]          # plain Python values
        w = f.tensors["blk.0.attn_q.weight"].packed()   # zero-copy PackedWeights
        e = f.tensors["token_embd.weight"].dequantize() # float32

Every byte of the header is validated in C++ before use; a malformed file raises
:class:`GGUFError` naming the file and the key, tensor or byte offset at fault. Tensor data are
zero-copy read-only views into the mapping, which stays alive for as long as any view does.

Writing::

    bitnet.gguf.write("out.gguf", "bitnet", {"bitnet.block_count": 30}, {"w": array, ...})

Metadata types are inferred (see :func:`write`) or forced with :class:`typed`; tensors are numpy
arrays, torch tensors, :class:`bitnet.ops.PackedWeights`, raw :class:`Tensor` bytes, or
:class:`LazyTensor` (loaded one at a time while writing, so a model never has to fit in memory).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import _ext

__all__ = [
    "GGUFError",
    "GGUFFile",
    "LazyTensor",
    "TYPES",
    "Tensor",
    "TensorInfo",
    "read",
    "read_buffer",
    "tensor_nbytes",
    "type_size",
    "typed",
    "write",
]

GGUFError = _ext.GGUFError
"""A malformed or unsupported GGUF file (a ``ValueError``); the message names the file and the
key, tensor or byte offset at fault. Operating-system failures raise ``OSError``."""

_TYPE_TABLE = {name: (tid, block, size) for tid, name, block, size in _ext.gguf_types()}
TYPES: tuple[str, ...] = tuple(_TYPE_TABLE)
"""Names of every ggml tensor type this module knows (``"f32"``, ``"q8_0"``, ``"tq2_0"``,
``"i2_s"``, ...), in type-id order."""

TERNARY_TYPES = ("i2_s", "tq1_0", "tq2_0")
_ARRAY_DTYPES = {
    "f32": np.float32,
    "f16": np.float16,
    "f64": np.float64,
    "i8": np.int8,
    "i16": np.int16,
    "i32": np.int32,
    "i64": np.int64,
    "bf16": np.uint16,
}
_NUMPY_TYPES = {  # tensor dtype -> ggml type
    np.dtype(np.float32): "f32",
    np.dtype(np.float16): "f16",
    np.dtype(np.float64): "f64",
    np.dtype(np.int8): "i8",
    np.dtype(np.int16): "i16",
    np.dtype(np.int32): "i32",
    np.dtype(np.int64): "i64",
}
_META_DTYPES = {  # metadata array dtype -> GGUF value type
    np.dtype(np.uint8): "u8",
    np.dtype(np.int8): "i8",
    np.dtype(np.uint16): "u16",
    np.dtype(np.int16): "i16",
    np.dtype(np.uint32): "u32",
    np.dtype(np.int32): "i32",
    np.dtype(np.uint64): "u64",
    np.dtype(np.int64): "i64",
    np.dtype(np.float32): "f32",
    np.dtype(np.float64): "f64",
    np.dtype(np.bool_): "bool",
}
_SCALARS = ("u8", "i8", "u16", "i16", "u32", "i32", "u64", "i64", "f32", "f64", "bool", "string")
_TYPE_RE = re.compile(r"(?:array\[)*(?:" + "|".join(_SCALARS) + r")\]*")


def _check_type(type: Any, what: str) -> str:
    if not isinstance(type, str) or type.lower() not in _TYPE_TABLE:
        raise ValueError(f"{what}: unknown ggml type {type!r}; known types: {', '.join(TYPES)}")
    return type.lower()


def type_size(type: str) -> tuple[int, int]:
    """``(values per block, bytes per block)`` of a ggml type, as ggml's type table states it.

    I2_S reports bitnet.cpp's ``(1, 1)``; its tensors really take ``elements / 4 + 32`` bytes
    (use :func:`tensor_nbytes`).
    """
    _, block, size = _TYPE_TABLE[_check_type(type, "type_size")]
    return block, size


def tensor_nbytes(type: str, shape: Iterable[int], what: str = "tensor") -> int:
    """Bytes of a tensor of ``type`` and numpy ``shape`` (innermost dimension last), checking that
    the row length is a multiple of the block size (I2_S: 128)."""
    return int(_ext.gguf_tensor_nbytes(_check_type(type, what), tuple(shape), what))


# ------------------------------------------------------------------------------ reading
class _Holder:
    """The parsed file's handle, shared by a GGUFFile and its TensorInfos (no reference cycle,
    so dropping them unmaps the file at once); close() clears it."""

    __slots__ = ("handle", "path")

    def __init__(self, handle: Any, path: Path) -> None:
        self.handle = handle
        self.path = path


class TensorInfo:
    """One tensor of a :class:`GGUFFile`: where it is and how to read it.

    ``shape`` is in numpy order (outermost first; GGUF stores it reversed), ``offset`` is
    absolute in the file, ``nbytes`` the stored size.
    """

    __slots__ = ("name", "shape", "type", "type_id", "nbytes", "offset", "_index", "_file")

    def __init__(self, holder: _Holder, index: int, row: tuple) -> None:
        self.name: str = row[0]
        self.shape: tuple[int, ...] = tuple(row[1])
        self.type: str = row[2]
        self.type_id: int = row[3]
        self.offset: int = row[4]
        self.nbytes: int = row[5]
        self._index = index
        self._file = holder

    @property
    def n_elements(self) -> int:
        """The number of values (product of ``shape``)."""
        return int(np.prod(self.shape, dtype=np.int64))

    def _where(self) -> str:
        return f"{self._file.path}: tensor '{self.name}'"

    @property
    def data(self) -> np.ndarray:
        """The stored bytes: uint8, 1-D, read-only, a zero-copy view into the mapping (which the
        view keeps alive, also after the file is closed)."""
        handle = self._file.handle
        if handle is None:
            raise ValueError(f"{self._where()}: the GGUFFile is closed")
        return handle.tensor_data(self._index)

    def array(self) -> np.ndarray:
        """A typed zero-copy view with ``shape``: f32, f16, f64, i8, i16, i32, i64, and bf16 as
        uint16 (its raw bits). Other (block) types raise ``ValueError``; see :meth:`dequantize`."""
        dtype = _ARRAY_DTYPES.get(self.type)
        if dtype is None:
            raise ValueError(
                f"{self._where()}: type {self.type} is a block format, not a plain array; use "
                f".dequantize() or .packed(), or .data for the raw bytes"
            )
        return self.data.view(dtype).reshape(self.shape)

    def dequantize(self) -> np.ndarray:
        """The values as float32 ``[shape]`` (a new array): f32, f16, f64, bf16, q8_0, q4_0,
        and the ternary tq1_0, tq2_0, i2_s (``scale * t``).

        Ternary tensors must carry one scale per tensor (BitNet's); a TQ tensor whose blocks
        have different scales raises ``ValueError``.
        """
        t = self.type
        if t in ("f32", "f16", "f64"):
            return self.array().astype(np.float32)
        if t == "bf16":
            bits = self.array().astype(np.uint32) << np.uint32(16)
            return bits.view(np.float32)
        if self.n_elements == 0 and t in ("q8_0", "q4_0", *TERNARY_TYPES):
            return np.zeros(self.shape, np.float32)
        if t in ("q8_0", "q4_0"):
            from .ops import dequantize_blocks

            return dequantize_blocks(self.data, t, self.shape)
        if t in TERNARY_TYPES:
            from .ops import unpack

            try:
                tern, scale = unpack(self.packed())
            except ValueError as e:
                raise ValueError(f"{self._where()}: {e}") from e
            return (tern.astype(np.float32) * np.float32(scale)).reshape(self.shape)
        raise ValueError(
            f"{self._where()}: cannot dequantize type {t}; supported: f32, f16, f64, bf16, "
            f"q8_0, q4_0, tq1_0, tq2_0, i2_s"
        )

    def packed(self) -> Any:
        """The ternary weights as a zero-copy :class:`bitnet.ops.PackedWeights` ``[rows, K]``
        (``rows`` = product of the outer dimensions). Only for i2_s, tq1_0 and tq2_0."""
        if self.type not in TERNARY_TYPES:
            raise ValueError(
                f"{self._where()}: type {self.type} is not a ternary format "
                f"({', '.join(TERNARY_TYPES)})"
            )
        from .ops import from_bytes

        k = self.shape[-1]
        rows = int(np.prod(self.shape[:-1], dtype=np.int64)) if len(self.shape) > 1 else 1
        try:
            return from_bytes(self.data, self.type, (rows, k))
        except ValueError as e:
            raise ValueError(f"{self._where()}: {e}") from e

    def __repr__(self) -> str:
        return (
            f"TensorInfo({self.name!r}, shape={self.shape}, type={self.type!r}, "
            f"nbytes={self.nbytes}, offset={self.offset})"
        )


class GGUFFile:
    """A parsed GGUF file (see :func:`read`); a context manager.

    Attributes:
        path: the file. version: 2 or 3. alignment: of the data section and every tensor.
        data_offset: absolute start of the data section. file_size: bytes.
        metadata: key -> plain Python value (int, float, bool, str, nested lists; strings that
            are not valid UTF-8 come back as ``bytes``), in file order.
        metadata_types: key -> GGUF type string (``"u32"``, ``"string"``, ``"array[i32]"``,
            ``"array[array[u8]]"``; an array of arrays with differing inner types is
            ``"array[array]"``).
        tensors: name -> :class:`TensorInfo`, in file order.
    """

    def __init__(self, handle: Any, path: Path) -> None:
        self._holder = _Holder(handle, path)
        self.path = path
        self.version: int = handle.version
        self.alignment: int = handle.alignment
        self.data_offset: int = handle.data_offset
        self.file_size: int = handle.size
        self.metadata: dict[str, Any] = {}
        self.metadata_types: dict[str, str] = {}
        for key, value, type_ in handle.metadata():
            self.metadata[key] = value
            self.metadata_types[key] = type_
        self.tensors: dict[str, TensorInfo] = {
            row[0]: TensorInfo(self._holder, i, row) for i, row in enumerate(handle.tensors())
        }

    @property
    def architecture(self) -> str | None:
        """``metadata["general.architecture"]`` (``None`` when absent)."""
        arch = self.metadata.get("general.architecture")
        return arch if isinstance(arch, str) else None

    def close(self) -> None:
        """Drops this object's reference to the mapping (unmapped once no view holds it);
        views already handed out stay valid, the tensors' ``.data`` then raises."""
        self._holder.handle = None

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"GGUFFile('{self.path}', version={self.version}, architecture={self.architecture!r}, "
            f"{len(self.metadata)} keys, {len(self.tensors)} tensors)"
        )


def _looks_like_repo_id(s: str) -> bool:
    """``"owner/name"`` or ``"owner/name/.../file.gguf"`` (not a path-like string)."""
    if s.startswith(("/", ".", "~")) or "\\" in s or "//" in s:
        return False
    parts = s.split("/")
    if len(parts) == 2:
        return not s.lower().endswith(".gguf")
    return len(parts) >= 3 and s.lower().endswith(".gguf")


def read(path: str | os.PathLike[str]) -> GGUFFile:
    """Memory-maps and validates a GGUF file.

    Args:
        path: a local file; a ``str`` that is not an existing path but reads as a Hugging Face
            repo id (``"owner/name"`` or ``"owner/name/file.gguf"``) is downloaded (or taken
            from the cache) by :func:`bitnet.hub.resolve_gguf`.

    Raises:
        GGUFError: a malformed or unsupported file (the message names the key/tensor/offset).
        OSError: missing file (FileNotFoundError), directory, unreadable; hub failures.
    """
    if isinstance(path, str) and not os.path.lexists(path) and _looks_like_repo_id(path):
        from .hub import resolve_gguf

        path = resolve_gguf(path)
    p = Path(os.path.expanduser(os.fspath(path)))
    return GGUFFile(_ext.GGUFHandle.open(str(p)), p)


def read_buffer(data: Any, name: str = "<buffer>") -> GGUFFile:
    """Parses a GGUF file held in memory (bytes, bytearray, memoryview, uint8 array), zero-copy;
    ``name`` stands for the path in messages."""
    if isinstance(data, np.ndarray):
        data = data.reshape(-1).view(np.uint8)
    return GGUFFile(_ext.GGUFHandle.parse(data, name), Path(name))


# ------------------------------------------------------------------------------ writing
class typed:  # noqa: N801  (a small wrapper used like a function: typed(3, "u64"))
    """Forces a metadata value's GGUF type: ``typed(3, "u64")``, ``typed([1, 2], "array[u8]")``,
    ``typed([[1], [2, 3]], "array[array[i16]]")``. The type string is the full type, as
    :attr:`GGUFFile.metadata_types` prints it. Out-of-range values raise ``ValueError`` when
    written."""

    __slots__ = ("value", "type")

    def __init__(self, value: Any, type: str) -> None:
        if (
            not isinstance(type, str)
            or not _TYPE_RE.fullmatch(type)
            or (type.count("[") != type.count("]"))
        ):
            raise ValueError(
                f"typed: invalid GGUF type {type!r}; expected one of {', '.join(_SCALARS)} "
                f"or array[<type>]"
            )
        self.value = value
        self.type = type

    def __repr__(self) -> str:
        return f"typed({self.value!r}, {self.type!r})"


class Tensor:
    """Raw, already encoded tensor data of any ggml type: ``Tensor("q8_0", (rows, k), data)``;
    ``data`` is bytes-like or a uint8 array of exactly :func:`tensor_nbytes` bytes."""

    __slots__ = ("type", "shape", "data")

    def __init__(self, type: str, shape: Iterable[int], data: Any) -> None:
        self.type = _check_type(type, "Tensor")
        self.shape = tuple(int(d) for d in shape)
        expect = tensor_nbytes(self.type, self.shape, f"Tensor({self.type}, {self.shape})")
        n = data.nbytes if isinstance(data, np.ndarray) else memoryview(data).nbytes
        if n != expect:
            raise ValueError(
                f"Tensor({self.type}, {self.shape}): needs {expect} bytes, got {n} bytes"
            )
        self.data = data


class LazyTensor:
    """A tensor whose data come from ``load()``, called exactly once, when the writer reaches
    it; it may return anything :func:`write` accepts (but another LazyTensor) and must match
    the declared ``type`` and ``shape``."""

    __slots__ = ("type", "shape", "load")

    def __init__(self, type: str, shape: Iterable[int], load: Callable[[], Any]) -> None:
        self.type = _check_type(type, "LazyTensor")
        self.shape = tuple(int(d) for d in shape)
        if not callable(load):
            raise TypeError(f"LazyTensor: load must be callable, got {_type_name(load)}")
        self.load = load


def _type_name(obj: Any) -> str:
    return type(obj).__name__


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def _prepare(name: str, value: Any) -> tuple[str, tuple[int, ...], Any]:
    """``(ggml type, numpy shape, payload)``; the payload is a C-contiguous little-endian numpy
    array, a bytes-like object, or a PackedWeights."""
    from .ops import PackedWeights

    if isinstance(value, Tensor):
        return value.type, value.shape, value.data
    if isinstance(value, PackedWeights):
        if value.format == "native":
            raise ValueError(
                f"tensor '{name}': PackedWeights in the 'native' kernel layout is not a file "
                f"format; pack it as i2_s, tq1_0 or tq2_0"
            )
        return value.format, tuple(value.shape), value
    if _is_torch(value):
        import torch

        t = value.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:
            return "bf16", tuple(t.shape), t.view(torch.int16).numpy()
        try:
            value = t.numpy()
        except TypeError as e:
            raise TypeError(f"tensor '{name}': unsupported torch dtype {t.dtype}") from e
    if isinstance(value, np.ndarray):
        if value.dtype.byteorder == ">":
            value = value.astype(value.dtype.newbyteorder("<"))
        ggml = _NUMPY_TYPES.get(np.dtype(value.dtype))
        if ggml is None:
            raise TypeError(
                f"tensor '{name}': unsupported dtype {value.dtype}; use float32, float16, "
                f"float64, int8, int16, int32, int64 (or bitnet.gguf.Tensor for raw bytes)"
            )
        if value.ndim == 0:
            raise ValueError(f"tensor '{name}': a 0-d array has no shape for GGUF; reshape(1)")
        return ggml, tuple(value.shape), value
    if isinstance(value, LazyTensor):
        raise TypeError(f"tensor '{name}': load() returned another LazyTensor")
    raise TypeError(
        f"tensor '{name}': unsupported value {_type_name(value)}; expected a numpy array, a "
        f"torch tensor, PackedWeights, bitnet.gguf.Tensor or bitnet.gguf.LazyTensor"
    )


def _int_type(lo: int, hi: int, where: str, scalar: bool) -> str:
    """Scalars: u32 if 0 <= v < 2**32, i32 if negative and fits, else u64 / i64. Array
    elements (range lo..hi): i32 if all fit, else i64, else u64 (all non-negative)."""
    if scalar:
        if 0 <= lo and hi < 2**32:
            return "u32"
        if -(2**31) <= lo < 0:
            return "i32"
        if 0 <= lo and hi < 2**64:
            return "u64"
        if -(2**63) <= lo < 0:
            return "i64"
    else:
        if -(2**31) <= lo and hi < 2**31:
            return "i32"
        if -(2**63) <= lo and hi < 2**63:
            return "i64"
        if 0 <= lo and hi < 2**64:
            return "u64"
    bad = lo if lo < -(2**63) else hi
    raise ValueError(f"{where}: integer {bad} does not fit in 64 bits")


def _join(a: str | None, b: str | None, where: str) -> str | None:
    """The common type of two inferred element types (None: unknown, from an empty list)."""
    if a is None or a == b:
        return b
    if b is None:
        return a
    if a.startswith("array[") and b.startswith("array["):
        inner = _join(_unknown(a[6:-1]), _unknown(b[6:-1]), where)
        return f"array[{inner or '?'}]"
    num = {"i32": 0, "i64": 1, "f32": 2}
    if a in num and b in num:
        return a if num[a] > num[b] else b
    raise TypeError(f"{where}: array elements mix {a} and {b}; use bitnet.gguf.typed(...)")


def _unknown(t: str) -> str | None:
    return None if t == "?" else t


def _infer_elements(items: Any, where: str) -> str | None:
    if isinstance(items, np.ndarray):
        if items.ndim > 1:
            inner = _infer_elements(items[0], where) if len(items) else None
            return f"array[{inner or '?'}]"
        t = _META_DTYPES.get(np.dtype(items.dtype))
        if t is None:
            raise TypeError(f"{where}: unsupported array dtype {items.dtype}")
        return t
    py_types = {type(v) for v in items}  # fast paths for the common homogeneous lists
    if py_types == {str}:
        return "string"
    if py_types == {int}:
        return _int_type(min(items), max(items), where, scalar=False)
    if py_types == {float}:
        return "f32"
    kinds: set[str] = set()
    ints: list[int] = []
    elem: str | None = None
    for k, v in enumerate(items):
        if isinstance(v, (bool, np.bool_)):
            kinds.add("bool")
        elif isinstance(v, (int, np.integer)):
            kinds.add("int")
            ints.append(int(v))
        elif isinstance(v, (float, np.floating)):
            kinds.add("float")
        elif isinstance(v, (str, bytes)):
            kinds.add("string")
        elif isinstance(v, (list, tuple, np.ndarray)):
            kinds.add("array")
            inner = _infer_elements(v, f"{where}[{k}]")
            elem = _join(elem, f"array[{inner or '?'}]", where)
        else:
            raise TypeError(f"{where}[{k}]: unsupported metadata value {_type_name(v)}")
    if not kinds:
        return None
    if kinds == {"int"}:
        return _int_type(min(ints), max(ints), where, scalar=False)
    if kinds <= {"int", "float"}:
        return "f32"
    if len(kinds) == 1:
        return elem if kinds == {"array"} else kinds.pop()
    raise TypeError(
        f"{where}: array mixes {', '.join(sorted(kinds))}; use bitnet.gguf.typed(...) or make "
        f"the elements one type"
    )


def _infer_type(value: Any, where: str) -> str:
    """The GGUF type of a metadata value: bool -> bool; int -> u32 (0 <= v < 2**32), i32
    (negative, fits), else u64 / i64; float -> f32; str / bytes -> string; list / tuple ->
    array (ints -> i32 if all fit, else i64 (u64 if all are non-negative and some exceed
    i64); floats, or ints mixed with floats -> f32; strs -> string; bools -> bool; lists ->
    arrays, inner types unified); an empty list -> array[u8]; numpy arrays by dtype."""
    if isinstance(value, typed):
        return value.type
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, (int, np.integer)):
        return _int_type(int(value), int(value), where, scalar=True)
    if isinstance(value, (float, np.floating)):
        return "f32"
    if isinstance(value, (str, bytes)):
        return "string"
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return _infer_type(value.item(), where)
    if isinstance(value, (list, tuple, np.ndarray)):
        elem = _infer_elements(value, where)
        return f"array[{elem or '?'}]".replace("?", "u8")
    raise TypeError(f"{where}: unsupported metadata value {_type_name(value)}")


def write(
    path: str | os.PathLike[str],
    arch: str,
    metadata: Mapping[str, Any],
    tensors: Mapping[str, Any] | Iterable[tuple[str, Any]],
    *,
    alignment: int = 32,
    progress: bool = False,
) -> Path:
    """Writes a GGUF v3 file, streaming one tensor at a time.

    ``general.architecture = arch`` is written first (``metadata`` may repeat it only with the
    same value), then ``metadata`` in order, then ``general.alignment`` when ``alignment`` is
    not 32. Metadata types are inferred as described in :func:`_infer_type` or forced with
    :class:`typed`. Tensors, in order: numpy arrays (float32 f32, float16 f16, float64 f64,
    int8/16/32/64 i8/i16/i32/i64), torch tensors (bfloat16 -> bf16), PackedWeights
    (i2_s/tq1_0/tq2_0), :class:`Tensor` (raw bytes of any type) and :class:`LazyTensor`.

    The file is written as ``path + ".partial"`` and renamed onto ``path`` only when complete;
    on any error the partial file is removed and nothing appears at ``path``.

    Returns:
        ``Path(path)``.
    """
    out = Path(os.fspath(path))
    if not isinstance(arch, str) or not arch:
        raise ValueError(f"{out}: arch must be a non-empty str, got {arch!r}")
    entries: list[tuple[str, Any, str]] = [("general.architecture", arch, "string")]
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise TypeError(f"{out}: metadata keys must be str, got {key!r}")
        raw = value.value if isinstance(value, typed) else value
        if key == "general.architecture":
            if raw != arch:
                raise ValueError(
                    f"{out}: metadata general.architecture = {raw!r} contradicts arch = {arch!r}"
                )
            continue
        entries.append((key, raw, _infer_type(value, f"key '{key}'")))
    items = tensors.items() if isinstance(tensors, Mapping) else tensors

    writer = _ext.GGUFStreamWriter(str(out), alignment)
    try:
        for key, value, type_ in entries:
            writer.add_metadata(key, value, type_)
        pending: list[Any] = []
        for name, value in items:
            if not isinstance(name, str):
                raise TypeError(f"{out}: tensor names must be str, got {name!r}")
            if isinstance(value, LazyTensor):
                decl = (value.type, value.shape)
            else:
                ggml, shape, value = _prepare(name, value)
                decl = (ggml, shape)
            writer.add_tensor(name, decl[1], decl[0])
            pending.append((name, value, decl))
        total = sum(writer.tensor_nbytes(i) for i in range(len(pending)))
        writer.write_header()
        _write_data(writer, out, pending, total, progress)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return out


def _write_data(writer: Any, out: Path, pending: list[Any], total: int, progress: bool) -> None:
    from tqdm.auto import tqdm

    from .ops import PackedWeights

    with tqdm(total=total, unit="B", unit_scale=True, desc=out.name, disable=not progress) as bar:
        for i in range(len(pending)):
            name, value, (ggml, shape) = pending[i]
            pending[i] = None  # the writer holds at most one tensor at a time
            if isinstance(value, LazyTensor):
                loaded = value.load()
                value = None
                got, got_shape, payload = _prepare(name, loaded)
                del loaded
                if (got, tuple(got_shape)) != (ggml, tuple(shape)):
                    raise ValueError(
                        f"{out}: tensor '{name}': load() returned {got} {list(got_shape)}, "
                        f"declared {ggml} {list(shape)}"
                    )
            else:
                payload = value
                value = None
            if isinstance(payload, np.ndarray):
                payload = np.ascontiguousarray(payload)
                writer.write_tensor_data(payload.reshape(-1).view(np.uint8))
            elif isinstance(payload, PackedWeights):
                writer.write_packed(payload)
            else:
                writer.write_tensor_data(memoryview(payload).cast("B"))
            bar.update(writer.tensor_nbytes(i))
            del payload
