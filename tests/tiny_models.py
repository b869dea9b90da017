"""Tiny converted BitNet models shared by the Model API, generation and CLI tests.

Each model is a random ``BitNetForCausalLM`` checkpoint from :mod:`checkpoints` (with its
LLaMA-3-style byte-level tokenizer and chat template), converted once per test process with
``bitnet.convert.convert`` into a temporary directory removed at exit.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from checkpoints import make_bitnet_checkpoint

_ROOT = Path(tempfile.mkdtemp(prefix="bitnet-tiny-models-"))
atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)

PROMPTS = (
    "BitNet stores every weight",
    "hello",
    "Zürich naïve café: 12345 tokens, 日本語 🙂",
    "ka bit net ter na ry lo ra mo del",
)
"""Sample prompts (ASCII, non-ASCII, multi-byte characters split across tokens)."""


@functools.cache
def checkpoint(seed: int = 3) -> Path:
    """The checkpoint directory (2 layers, hidden 256, 4 heads / 2 KV heads, vocab 576,
    context 128)."""
    return make_bitnet_checkpoint(_ROOT / f"ckpt-{seed}", seed=seed)


@functools.cache
def gguf(weight_type: str = "i2_s", seed: int = 3) -> Path:
    """The checkpoint converted to ``weight_type`` (f16 embedding/head)."""
    from bitnet.convert import convert

    dst = _ROOT / f"tiny-{seed}-{weight_type}.gguf"
    return convert(checkpoint(seed), dst, weight_type, progress=False, report=False)


def rewrite_gguf(src: Path, dst: Path, drop: tuple[str, ...] = (), **update: object) -> Path:
    """A copy of GGUF ``src`` at ``dst`` with the metadata keys ``drop`` left out and the
    ``update`` keys (dots written as ``__``) set; tensors and other keys keep their types."""
    from bitnet import gguf as g

    with g.read(src) as f:
        types = f.metadata_types
        md = {k: g.typed(v, types[k]) for k, v in f.metadata.items() if k not in drop}
        md.update({k.replace("__", "."): v for k, v in update.items()})
        tensors = [(t.name, g.Tensor(t.type, t.shape, t.data)) for t in f.tensors.values()]
        arch = f.architecture
        md.pop("general.architecture", None)
        return g.write(dst, arch, md, tensors)
