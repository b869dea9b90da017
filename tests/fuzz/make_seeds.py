"""Writes the seed corpus of the GGUF reader fuzzer: small valid GGUF files.

Usage: ``python tests/fuzz/make_seeds.py OUT_DIR``

Most seeds are written by the llama.cpp ``gguf`` package (``GGUFWriter``, ``gguf.quants``) so
that the fuzzer starts from files a real tool produces: every metadata value type, string and
nested arrays, tensors of f32/f16/bf16/q8_0/q4_0/tq1_0/tq2_0 with odd shapes, alignments other
than 32, and a version-2 file. A few seeds that ``GGUFWriter`` cannot express (I2_S tensors,
empty and 16-deep nested arrays, zero-element tensors, a header with no data section) come from
the small encoder below (over tests/gguf_reference.py, written from docs/formats.md section 3).
Every seed is at most 4096 bytes (the fuzzer's -max_len) and deterministic (seeded), so the
corpus is reproducible.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

MAX_SEED_BYTES = 4096

# The value encoder is the GGUF tests' reference (tests/gguf_reference.py), shared so the byte
# layout is written once.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gguf_reference import VALUE_IDS as _VALUE_IDS  # noqa: E402
from gguf_reference import _string  # noqa: E402
from gguf_reference import encode_value as _value  # noqa: E402


def encode(
    kvs: list[tuple[str, str, Any]],
    tensors: list[tuple[str, tuple[int, ...], int, bytes]],
    version: int = 3,
    alignment: int = 32,
    pad_data: bool = True,
) -> bytes:
    """A GGUF file: ``kvs`` = (key, type string, value); ``tensors`` = (name, numpy shape,
    ggml type id, bytes), laid out in order at aligned offsets. ``pad_data=False`` omits the
    padding after the header when there are no tensors (the file then ends before the data
    section, which the format allows)."""
    head = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for key, type_, value in kvs:
        head += _string(key) + struct.pack("<I", _VALUE_IDS[type_.split("[")[0]])
        head += _value(type_, value)
    data = b""
    for name, shape, type_id, payload in tensors:
        data += b"\0" * (-len(data) % alignment)
        head += _string(name) + struct.pack("<I", len(shape))
        head += b"".join(struct.pack("<Q", d) for d in reversed(shape))
        head += struct.pack("<IQ", type_id, len(data))
        data += payload
    if tensors or pad_data:
        head += b"\0" * (-len(head) % alignment)
    return head + data


def _with_gguf_writer(path: Path, build: Callable[[Any], None]) -> None:
    import gguf

    w = gguf.GGUFWriter(str(path), "bitnet")
    build(w)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _quantized(w: Any, name: str, values: np.ndarray, qtype_name: str) -> None:
    import gguf
    from gguf import quants

    qtype = gguf.GGMLQuantizationType[qtype_name]
    w.add_tensor(name, quants.quantize(values, qtype), raw_dtype=qtype)


def write_seeds(out: Path) -> list[Path]:
    """Writes every seed into ``out`` (created if needed); returns their paths. Without the
    ``gguf`` package only the hand-encoded seeds are written (with a warning on stderr)."""
    try:
        import gguf
    except ImportError:
        gguf = None
        print(
            "make_seeds: the gguf package is missing; writing hand-encoded seeds only",
            file=sys.stderr,
        )

    rng = np.random.default_rng(20240611)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def meta_all_types(w: Any) -> None:
        w.add_uint8("k.u8", 200)
        w.add_int8("k.i8", -100)
        w.add_uint16("k.u16", 60000)
        w.add_int16("k.i16", -30000)
        w.add_uint32("k.u32", 4000000000)
        w.add_int32("k.i32", -2000000000)
        w.add_float32("k.f32", 1.5)
        w.add_uint64("k.u64", 2**63 + 5)
        w.add_int64("k.i64", -(2**62))
        w.add_float64("k.f64", -2.25)
        w.add_bool("k.bool", True)
        w.add_string("k.str", "h\u00e9llo \u2603")
        w.add_array("k.arr_i32", [1, -2, 3])
        w.add_array("k.arr_f32", [0.5, -1.25])
        w.add_array("k.arr_bool", [True, False, True])
        w.add_array("k.arr_str", ["a", "", "bc"])
        w.add_array("k.nested", [[1, 2], [3]])
        w.add_array("k.nested_str", [["x"], ["y", "z"]])
        w.add_key_value("k.arr_u8", [1, 2, 255], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.UINT8)
        w.add_tensor("t", rng.standard_normal((2, 3)).astype(np.float32))

    def plain_tensors(w: Any) -> None:
        w.add_tensor("f32.vec", rng.standard_normal(5).astype(np.float32))
        w.add_tensor("f16.mat", rng.standard_normal((3, 7)).astype(np.float16))
        w.add_tensor("f32.3d", rng.standard_normal((2, 1, 3)).astype(np.float32))
        w.add_tensor("f32.4d", rng.standard_normal((1, 2, 1, 2)).astype(np.float32))
        bf16 = (rng.standard_normal((2, 4)).astype(np.float32).view(np.uint32) >> 16).astype(
            np.uint16
        )
        w.add_tensor(
            "bf16.mat",
            bf16.view(np.uint8),
            raw_dtype=gguf.GGMLQuantizationType.BF16,
        )
        w.add_tensor("i32.vec", rng.integers(-9, 9, 3).astype(np.int32))

    def ternary(w: Any) -> None:
        w.add_uint32("general.quantization_version", 2)
        t = rng.integers(-1, 2, (2, 256)).astype(np.float32) * np.float32(0.75)
        _quantized(w, "blk.0.attn_q.weight", t, "TQ2_0")
        _quantized(w, "blk.0.attn_k.weight", t[:1], "TQ1_0")

    def blocks(w: Any) -> None:
        w.add_uint32("general.quantization_version", 2)
        _quantized(w, "token_embd.weight", rng.standard_normal((3, 64)).astype(np.float32), "Q8_0")
        _quantized(w, "output_norm.q4", rng.standard_normal((1, 32)).astype(np.float32), "Q4_0")

    def aligned(alignment: int) -> Callable[[Any], None]:
        def build(w: Any) -> None:
            w.add_custom_alignment(alignment)
            w.add_tensor("a", rng.standard_normal(3).astype(np.float32))
            w.add_tensor("b", rng.standard_normal((2, 2)).astype(np.float16))

        return build

    def tokenizer(w: Any) -> None:
        w.add_string("tokenizer.ggml.model", "gpt2")
        w.add_string("tokenizer.ggml.pre", "llama-bpe")
        w.add_array("tokenizer.ggml.tokens", ["<s>", "</s>", "a", "b", "ab", "\u0120the"])
        w.add_array("tokenizer.ggml.token_type", [3, 3, 1, 1, 1, 1])
        w.add_array("tokenizer.ggml.merges", ["a b", "\u0120 the"])
        w.add_uint32("tokenizer.ggml.bos_token_id", 0)
        w.add_uint32("tokenizer.ggml.eos_token_id", 1)
        w.add_string(
            "tokenizer.chat_template", "{% for m in messages %}{{ m.content }}{% endfor %}"
        )
        w.add_uint32("bitnet.block_count", 1)
        w.add_float32("bitnet.attention.layer_norm_rms_epsilon", 1e-5)

    builders: list[tuple[str, Callable[[Any], None]]] = [
        ("meta_all_types.gguf", meta_all_types),
        ("plain_tensors.gguf", plain_tensors),
        ("ternary_tq1_tq2.gguf", ternary),
        ("blocks_q8_0_q4_0.gguf", blocks),
        ("align_1.gguf", aligned(1)),
        ("align_8.gguf", aligned(8)),
        ("align_64.gguf", aligned(64)),
        ("tokenizer.gguf", tokenizer),
    ]
    if gguf is not None:
        for name, build in builders:
            path = out / name
            _with_gguf_writer(path, build)
            written.append(path)
        # Version 2 has the same layout as 3 (u64 counts and lengths): patch the version field.
        v2 = bytearray((out / "ternary_tq1_tq2.gguf").read_bytes())
        v2[4:8] = struct.pack("<I", 2)
        (out / "v2_ternary.gguf").write_bytes(bytes(v2))
        written.append(out / "v2_ternary.gguf")

    # Seeds the gguf package cannot write.
    i2s_codes = rng.integers(0, 3, 2 * 128 // 4, dtype=np.uint8)  # 2 rows of 128 values
    i2s = bytes(i2s_codes) + struct.pack("<f", 0.625) + b"\0" * 28
    manual = {
        "i2_s.gguf": encode(
            [("general.architecture", "string", "bitnet-b1.58")],
            [("blk.0.ffn_up.weight", (2, 128), 36, i2s)],
        ),
        "empty.gguf": encode([], []),
        "no_data_section.gguf": encode([("k", "u8", 1)], [], pad_data=False),
        "empty_arrays.gguf": encode(
            [
                ("e.u8", "array[u8]", []),
                ("e.str", "array[string]", []),
                ("e.nest", "array[array[i8]]", [[], []]),
            ],
            [],
        ),
        "nested_depth16.gguf": encode(
            [("deep", "array[" * 16 + "u16" + "]" * 16, [[[[[[[[[[[[[[[[7, 8]]]]]]]]]]]]]]]])], []
        ),
        "zero_elements.gguf": encode(
            [],
            [
                ("z", (0, 32), 8, b""),
                ("z2", (3, 0), 0, b""),
                ("one", (1,), 0, struct.pack("<f", 1.0)),
            ],
        ),
        "v2_alignment_16.gguf": encode(
            [("general.alignment", "u32", 16)],
            [("a", (3,), 1, b"\1\2\3\4\5\6"), ("b", (1, 2), 0, b"\0" * 8)],
            version=2,
            alignment=16,
        ),
    }
    for name, data in manual.items():
        (out / name).write_bytes(data)
        written.append(out / name)

    for path in written:
        size = path.stat().st_size
        if size > MAX_SEED_BYTES:
            raise ValueError(
                f"{path}: seed is {size} bytes, over the fuzzer's -max_len {MAX_SEED_BYTES}"
            )
    return written


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} OUT_DIR", file=sys.stderr)
        return 2
    paths = write_seeds(Path(argv[1]))
    print(f"wrote {len(paths)} seeds to {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
