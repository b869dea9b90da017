"""A plain-Python GGUF encoder written from docs/formats.md section 3, for the GGUF tests.

It is the test's independent reference for the byte layout (the writer's output must equal it
byte for byte) and the source of the broken-file corpus: it records the offset of every field
so that a test can patch exactly one of them.
"""

from __future__ import annotations

import struct
from typing import Any

VALUE_IDS = {
    "u8": 0,
    "i8": 1,
    "u16": 2,
    "i16": 3,
    "u32": 4,
    "i32": 5,
    "f32": 6,
    "bool": 7,
    "string": 8,
    "array": 9,
    "u64": 10,
    "i64": 11,
    "f64": 12,
}
_PACK = {
    "u8": "<B",
    "i8": "<b",
    "u16": "<H",
    "i16": "<h",
    "u32": "<I",
    "i32": "<i",
    "f32": "<f",
    "bool": "<?",
    "u64": "<Q",
    "i64": "<q",
    "f64": "<d",
}


def _string(s: str | bytes) -> bytes:
    b = s.encode("utf-8") if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def encode_value(type_: str, value: Any) -> bytes:
    """The payload of a value of GGUF type string ``type_`` ("u32", "array[array[i8]]")."""
    if type_.startswith("array[") and type_.endswith("]"):
        inner = type_[6:-1]
        elem = "array" if inner.startswith("array[") else inner
        out = struct.pack("<IQ", VALUE_IDS[elem], len(value))
        return out + b"".join(encode_value(inner, v) for v in value)
    if type_ == "string":
        return _string(value)
    return struct.pack(_PACK[type_], value)


class RefFile:
    """Builds a GGUF file field by field; ``offsets`` maps field names to byte offsets:
    ``version``, ``n_tensors``, ``n_kv``, ``kv:<key>`` (the key's length field),
    ``kv:<key>:type``, ``kv:<key>:value``, ``ti:<name>`` (the name's length field),
    ``ti:<name>:n_dims``, ``ti:<name>:dims``, ``ti:<name>:type``, ``ti:<name>:offset``,
    ``data``; ``tensor_offsets`` maps names to absolute data offsets."""

    def __init__(self, version: int = 3, alignment: int = 32) -> None:
        self.version = version
        self.alignment = alignment
        self.kvs: list[tuple[str | bytes, int, bytes]] = []
        self.infos: list[tuple[str | bytes, list[int], int, bytes]] = []
        self.offsets: dict[str, int] = {}
        self.tensor_offsets: dict[str, int] = {}

    def kv(self, key: str | bytes, type_: str, value: Any) -> RefFile:
        head = type_.split("[")[0]
        self.kvs.append((key, VALUE_IDS[head], encode_value(type_, value)))
        return self

    def kv_raw(self, key: str | bytes, type_id: int, payload: bytes) -> RefFile:
        self.kvs.append((key, type_id, payload))
        return self

    def tensor(self, name: str | bytes, shape: tuple[int, ...], type_id: int, data: bytes):
        """``shape`` in numpy order (stored reversed)."""
        self.infos.append((name, list(shape), type_id, data))
        return self

    def build(self) -> bytes:
        a = self.alignment
        out = bytearray(b"GGUF")
        self.offsets["version"] = len(out)
        out += struct.pack("<I", self.version)
        self.offsets["n_tensors"] = len(out)
        out += struct.pack("<Q", len(self.infos))
        self.offsets["n_kv"] = len(out)
        out += struct.pack("<Q", len(self.kvs))
        for key, tid, payload in self.kvs:
            k = key if isinstance(key, str) else key.decode("latin-1")
            self.offsets[f"kv:{k}"] = len(out)
            out += _string(key)
            self.offsets[f"kv:{k}:type"] = len(out)
            out += struct.pack("<I", tid)
            self.offsets[f"kv:{k}:value"] = len(out)
            out += payload
        rel = 0
        rels = []
        for name, shape, tid, data in self.infos:
            n = name if isinstance(name, str) else name.decode("latin-1")
            self.offsets[f"ti:{n}"] = len(out)
            out += _string(name)
            self.offsets[f"ti:{n}:n_dims"] = len(out)
            out += struct.pack("<I", len(shape))
            self.offsets[f"ti:{n}:dims"] = len(out)
            out += b"".join(struct.pack("<Q", d) for d in reversed(shape))
            self.offsets[f"ti:{n}:type"] = len(out)
            out += struct.pack("<I", tid)
            self.offsets[f"ti:{n}:offset"] = len(out)
            out += struct.pack("<Q", rel)
            rels.append(rel)
            rel += -(-len(data) // a) * a
        out += bytes(-len(out) % a)
        self.offsets["data"] = len(out)
        for (name, _, _, data), r in zip(self.infos, rels, strict=True):
            n = name if isinstance(name, str) else name.decode("latin-1")
            self.tensor_offsets[n] = len(out)
            assert len(out) == self.offsets["data"] + r
            out += data + bytes(-len(data) % a)
        return bytes(out)
