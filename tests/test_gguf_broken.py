"""The broken-file corpus: every malformed GGUF header field raises GGUFError (or OSError for
I/O-level problems) with a message naming the file and the problem; never a crash or a hang.

Files are generated from a valid small file built by the reference encoder, which records the
offset of every field, so each case patches exactly one thing.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from gguf_reference import RefFile, encode_value

from bitnet import gguf as G

NAME = "broken.gguf"


def base(**kw) -> RefFile:
    rng = np.random.default_rng(7)
    ref = RefFile(**kw)
    ref.kv("general.architecture", "string", "bitnet")
    ref.kv("k.u32", "u32", 7)
    ref.kv("k.flag", "bool", True)
    ref.kv("k.arr", "array[string]", ["a", "bc"])
    ref.kv("k.nested", "array[array[i16]]", [[1], [2, 3]])
    ref.tensor("a", (2, 32), 0, rng.standard_normal((2, 32)).astype(np.float32).tobytes())
    ref.tensor("q", (2, 32), 8, rng.integers(0, 256, 68, dtype=np.uint8).tobytes())
    return ref


def parse(data: bytes) -> G.GGUFFile:
    return G.read_buffer(data, NAME)


def patched(ref: RefFile, field: str, fmt: str, value, delta: int = 0) -> bytes:
    data = bytearray(ref.build())
    struct.pack_into(fmt, data, ref.offsets[field] + delta, value)
    return bytes(data)


def expect_error(data: bytes, *fragments: str) -> str:
    with pytest.raises(G.GGUFError) as e:
        parse(data)
    msg = str(e.value)
    assert msg.startswith(f"{NAME}: "), msg
    for frag in fragments:
        assert frag in msg, (frag, msg)
    return msg


def test_base_file_is_valid():
    ref = base()
    f = parse(ref.build())
    assert f.metadata["k.nested"] == [[1], [2, 3]]
    assert [t.offset for t in f.tensors.values()] == [
        ref.tensor_offsets["a"],
        ref.tensor_offsets["q"],
    ]
    assert isinstance(G.GGUFError("x"), ValueError)


def test_truncation_at_every_header_byte_and_in_the_data():
    ref = base()
    data = ref.build()
    header_end = ref.offsets["data"]
    cuts = list(range(header_end + 1))
    data_end = ref.tensor_offsets["q"] + 68  # the padding after the last tensor is optional
    cuts += list(range(header_end + 1, data_end, 7))
    problems = (
        "empty",
        "not a GGUF file",
        "unexpected end of file",
        "bytes remain",
        "cannot fit",
        "past the end of the file",
        "claims",
    )
    for cut in cuts:
        with pytest.raises(G.GGUFError) as e:
            parse(data[:cut])
        msg = str(e.value)
        assert msg.startswith(f"{NAME}: ") and any(p in msg for p in problems), (cut, msg)
    # the last tensor's data cut short, named with its extent
    cut = data_end - 1
    msg = expect_error(data[:cut], "tensor 'q': data [offset ", "extends past the end of the file")
    assert f"[offset {ref.tensor_offsets['q']}, 68 bytes]" in msg
    assert f"(size {cut})" in msg
    assert parse(data[:data_end]).tensors["q"].data.tobytes() == data[data_end - 68 : data_end]


def test_truncated_file_on_disk(tmp_path: Path):
    data = base().build()
    p = tmp_path / "t.gguf"
    p.write_bytes(data[:100])
    with pytest.raises(G.GGUFError, match=f"{p}: the tensor count 2 cannot fit in the 76 bytes"):
        G.read(p)


def test_magic_and_version():
    ref = base()
    data = bytearray(ref.build())
    expect_error(b"GGML" + bytes(data[4:]), "not a GGUF file (magic bytes 0x47 0x47 0x4d 0x4c")
    expect_error(b"GG", "not a GGUF file (magic bytes 0x47 0x47,")
    expect_error(patched(ref, "version", "<I", 1), "GGUF version 1 is not supported")
    for v in (0, 4, 0xFFFFFFFF):
        expect_error(patched(ref, "version", "<I", v), f"unsupported GGUF version {v}")
    expect_error(patched(ref, "version", ">I", 3), "big-endian GGUF files are not supported")


def test_hostile_counts_are_rejected_before_allocating():
    ref = base()
    for n in (2**63, 2**40, 10**6):
        expect_error(patched(ref, "n_tensors", "<Q", n), f"tensor count {n} cannot fit")
        expect_error(patched(ref, "n_kv", "<Q", n), f"metadata count {n} cannot fit")
    # a string length past the end
    msg = expect_error(patched(ref, "kv:k.u32", "<Q", 2**62), "has length 4611686018427387904")
    assert f"key at byte {ref.offsets['kv:k.u32']}" in msg
    # an array count past the end (string elements need >= 8 bytes each)
    at = ref.offsets["kv:k.arr:value"] + 4
    expect_error(
        patched(ref, "kv:k.arr:value", "<Q", 2**60, 4),
        "key 'k.arr': array of string at byte",
        f"at byte {at} claims 1152921504606846976 items",
    )
    # the nested array's inner count
    at = ref.offsets["kv:k.nested:value"] + 12 + 4
    expect_error(patched(ref, "kv:k.nested:value", "<Q", 2**50, 16), "array of i16", f"byte {at}")


def test_nesting_depth_is_capped():
    def nested(depth: int) -> bytes:
        # depth - 1 arrays of one array each, then the innermost array[u8] = [5]
        return struct.pack("<IQ", 9, 1) * (depth - 1) + struct.pack("<IQ", 0, 1) + b"\x05"

    ok = RefFile().kv_raw("deep", 9, nested(16)).build()
    f = parse(ok)
    assert f.metadata_types["deep"] == "array[" * 16 + "u8" + "]" * 16
    v = f.metadata["deep"]
    for _ in range(15):
        v = v[0]
    assert v == [5]
    expect_error(RefFile().kv_raw("deep", 9, nested(17)).build(), "key 'deep'", "deeper than 16")
    expect_error(RefFile().kv_raw("deep", 9, nested(100000)).build(), "deeper than 16")


def test_bad_value_and_element_types():
    ref = base()
    for t in (13, 255, 0xFFFFFFFF):
        expect_error(
            patched(ref, "kv:k.u32:type", "<I", t), "key 'k.u32'", f"invalid value type {t}"
        )
    expect_error(
        patched(ref, "kv:k.arr:value", "<I", 99),
        "key 'k.arr'",
        f"invalid array element type 99 at byte {ref.offsets['kv:k.arr:value']}",
    )
    expect_error(patched(ref, "kv:k.flag:value", "<B", 2), "key 'k.flag'", "is 2, not 0 or 1")
    bad_bools = RefFile().kv_raw("b", 9, struct.pack("<IQ", 7, 3) + b"\x01\x00\x03").build()
    expect_error(bad_bools, "key 'b'", "bool array item 2", "is 3, not 0 or 1")


def test_tensor_dims_and_types():
    ref = base()
    for n in (0, 5, 2**31):
        expect_error(patched(ref, "ti:a:n_dims", "<I", n), "tensor 'a'", f"n_dims {n} at byte")
    expect_error(
        patched(ref, "ti:a:dims", "<Q", 2**64 - 3), "tensor 'a'", "is -3 as int64 (negative)"
    )
    big = bytearray(ref.build())
    struct.pack_into("<QQ", big, ref.offsets["ti:a:dims"], 2**40, 2**40)
    expect_error(bytes(big), "tensor 'a'", "element count overflows int64")
    big = bytearray(ref.build())
    struct.pack_into("<QQ", big, ref.offsets["ti:a:dims"], 2**31, 2**31)  # 2^62 f32 values
    expect_error(bytes(big), "tensor 'a'", "byte count overflows int64 (4611686018427387904 blocks")
    big = bytearray(ref.build())
    struct.pack_into("<QQ", big, ref.offsets["ti:q:dims"], 2**15, 2**48 - 1)  # ~2^58 blocks
    expect_error(bytes(big), "tensor 'q'", "byte count overflows int64", "blocks of 34 bytes")
    for t in (4, 5, 31, 32, 33, 37, 38, 42, 999):
        expect_error(
            patched(ref, "ti:a:type", "<I", t), "tensor 'a'", f"unknown or removed ggml type id {t}"
        )
    expect_error(
        patched(ref, "ti:q:dims", "<Q", 33),
        "tensor 'q'",
        "q8_0 row length 33 is not a multiple of the block size 32",
    )
    i2s = RefFile().tensor("w", (2, 64), 36, bytes(64 * 2 // 4 + 32)).build()
    expect_error(i2s, "tensor 'w'", "i2_s row length 64 is not a multiple of 128")
    zero = parse(RefFile().tensor("z", (0, 32), 8, b"").build())
    assert zero.tensors["z"].nbytes == 0 and zero.tensors["z"].shape == (0, 32)


def test_tensor_offsets():
    ref = base()
    expect_error(
        patched(ref, "ti:q:offset", "<Q", 65),
        "tensor 'q'",
        "data offset 65 is not a multiple of the alignment 32",
    )
    size = len(ref.build())
    expect_error(
        patched(ref, "ti:q:offset", "<Q", 2**20),
        "tensor 'q': data [offset ",
        f"68 bytes] extends past the end of the file (size {size})",
    )
    expect_error(  # offset + size wraps around 2^64
        patched(ref, "ti:q:offset", "<Q", 2**64 - 32),
        "tensor 'q'",
        "extends past the end of the file",
    )
    # the data section itself beyond the end (a tensor declared, the file cut at the header)
    data = ref.build()[: ref.offsets["data"] - 1]
    expect_error(data, "the data section starts at byte", "past the end of the file")


@pytest.mark.parametrize(
    ("type_", "value", "fragment"),
    [
        ("u32", 0, "alignment 0 is not a nonzero power of two"),
        ("u32", 3, "alignment 3 is not a nonzero power of two"),
        ("u32", 96, "alignment 96 is not a nonzero power of two"),
        ("u64", 64, "must be a u32, got u64"),
        ("string", "32", "must be a u32, got string"),
    ],
)
def test_bad_alignment(type_, value, fragment):
    ref = base()
    ref.kv("general.alignment", type_, value)
    expect_error(ref.build(), "key 'general.alignment'", fragment)


def test_alignment_other_than_32_is_honoured():
    for a in (1, 8, 64, 4096):
        ref = base(alignment=a)
        ref.kv("general.alignment", "u32", a)
        f = parse(ref.build())
        assert f.alignment == a and f.data_offset == ref.offsets["data"]
        assert f.tensors["q"].offset == ref.tensor_offsets["q"]


def test_duplicates_empty_and_invalid_names():
    ref = base().kv("k.u32", "u32", 8)
    expect_error(ref.build(), "key 'k.u32': duplicate key")
    ref = base().tensor("a", (1,), 0, bytes(4))
    expect_error(ref.build(), "tensor 'a': duplicate tensor name")
    expect_error(RefFile().kv("", "u8", 1).build(), "metadata entry 0: empty key at byte 24")
    expect_error(
        RefFile().tensor("", (1,), 0, bytes(4)).build(), "tensor info 0: empty tensor name"
    )
    for bad in (b"\xff\xfe", b"ok\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82"):
        msg = expect_error(RefFile().tensor(bad, (1,), 0, bytes(4)).build(), "is not valid UTF-8")
        assert "tensor info 0: tensor name '" in msg
        expect_error(
            RefFile().kv(bad, "u8", 1).build(), "metadata entry 0: key '", "is not valid UTF-8"
        )
    good = "blk.0.ü✓𝄞"
    assert list(parse(RefFile().tensor(good, (1,), 0, bytes(4)).build()).tensors) == [good]


def test_directory_missing_and_empty_files(tmp_path: Path):
    with pytest.raises(IsADirectoryError, match=f"{tmp_path}: is a directory"):
        G.read(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope.gguf: cannot open: No such file"):
        G.read(tmp_path / "nope.gguf")
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(G.GGUFError, match="empty.gguf: the file is empty"):
        G.read(empty)
    if Path("/dev/null").exists():
        with pytest.raises(OSError, match="/dev/null: not a regular file"):
            G.read("/dev/null")


def test_random_corruption_never_crashes():
    """Seeded byte flips all over the header: each parse succeeds or raises GGUFError."""
    ref = base()
    data = ref.build()
    header_end = ref.offsets["data"]
    rng = np.random.default_rng(2024)
    outcomes = {"ok": 0, "error": 0}
    for _ in range(3000):
        buf = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            buf[int(rng.integers(0, header_end))] = int(rng.integers(0, 256))
        try:
            f = parse(bytes(buf))
            for t in f.tensors.values():
                assert t.offset + t.nbytes <= len(buf)
                t.data.tobytes()
            outcomes["ok"] += 1
        except G.GGUFError as e:
            assert str(e).startswith(f"{NAME}: ")
            outcomes["error"] += 1
    assert outcomes["error"] > 1000 and outcomes["ok"] > 0


def test_array_encoding_helper_matches_spec():
    # guards the reference encoder the corpus relies on: u32 elem type, u64 count, items
    assert encode_value("array[u8]", [1, 2]) == struct.pack("<IQBB", 0, 2, 1, 2)
    assert encode_value("array[array[i8]]", [[-1]]) == struct.pack("<IQIQb", 9, 1, 1, 1, -1)
