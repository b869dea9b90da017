"""What a conversion did: one line per tensor (types, sizes, error) and the totals."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ConversionReport", "TensorReport", "format_bytes"]


@dataclass(frozen=True)
class TensorReport:
    """One converted tensor.

    Attributes:
        name: the checkpoint tensor name.
        gguf_name: the GGUF tensor name.
        source_dtype: the stored dtype in the checkpoint (``bf16``; ``u8 packed, bf16 scale``).
        shape: the logical shape, numpy order.
        stored_type: the GGUF type written (``i2_s``, ``tq2_0``, ``f16``, ``q8_0``, ...).
        rel_error: ``||stored - source||_F / ||source||_F`` with ``stored`` the value the GGUF
            file holds, dequantized. For BitLinear matrices the source is the master weight, so
            this is the ternarization error; already-ternary (packed) sources compare with
            ``t * s_w`` (0 up to the fp16 rounding of the scale in TQ / f16 files).
        source_bytes: bytes in the checkpoint (packed weight + its scale).
        stored_bytes: bytes of the tensor data in the GGUF file.
    """

    name: str
    gguf_name: str
    source_dtype: str
    shape: tuple[int, ...]
    stored_type: str
    rel_error: float
    source_bytes: int
    stored_bytes: int


@dataclass
class ConversionReport:
    """The result of :func:`bitnet.convert.convert_with_report`.

    Attributes:
        path: the GGUF file written.
        weight_type: type of the BitLinear matrices.
        embed_type: type of the token embedding (and untied head).
        architecture: the HF architecture converted (``BitNetForCausalLM``).
        tensors: one :class:`TensorReport` per GGUF tensor, in file order.
        source_bytes: sum of the tensors' checkpoint bytes.
        output_bytes: size of the GGUF file.
        seconds: wall time of the conversion.
        gguf_architecture: ``general.architecture`` written (``bitnet`` or ``bitnet-b1.58``).
        source: the checkpoint directory read.
        tokenizer: ``tokenizer.ggml.model`` written (``gpt2`` / ``llama``), None without one.
        warnings: everything the conversion warned about (missing tokenizer, extra tensors).
    """

    path: Path
    weight_type: str
    embed_type: str
    architecture: str
    tensors: list[TensorReport]
    source_bytes: int
    output_bytes: int
    seconds: float
    gguf_architecture: str = ""
    source: str = ""
    tokenizer: str | None = None
    warnings: list[str] = field(default_factory=list)

    def max_rel_error(self, stored_type: str | None = None) -> float:
        """Largest relative error over the tensors (of ``stored_type`` if given; 0 if none)."""
        errs = [t.rel_error for t in self.tensors if stored_type in (None, t.stored_type)]
        return max(errs, default=0.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (paths as strings, shapes as lists, inf errors as None)."""
        d = asdict(self)
        d["path"] = str(self.path)
        for t in d["tensors"]:
            t["shape"] = list(t["shape"])
            if not math.isfinite(t["rel_error"]):
                t["rel_error"] = None
        return d

    def format(self) -> str:
        """A table of the tensors and a totals line (plus warnings), for a terminal."""
        head = ("gguf tensor", "source", "shape", "type", "rel.err", "before", "after")
        rows = [
            (
                t.gguf_name,
                t.source_dtype,
                "x".join(map(str, t.shape)),
                t.stored_type,
                f"{t.rel_error:.3e}" if math.isfinite(t.rel_error) else "inf",
                format_bytes(t.source_bytes),
                format_bytes(t.stored_bytes),
            )
            for t in self.tensors
        ]
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        right = {4, 5, 6}

        def line(r: tuple[str, ...]) -> str:
            pairs = enumerate(zip(r, widths, strict=True))
            cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in pairs]
            return "  ".join(cells).rstrip()

        out = [line(head), line(tuple("-" * w for w in widths))]
        out += [line(r) for r in rows]
        ratio = self.source_bytes / self.output_bytes if self.output_bytes else float("nan")
        tok = f", tokenizer {self.tokenizer}" if self.tokenizer else ", no tokenizer"
        out.append("")
        out.append(
            f"{self.architecture} -> {self.path} ({self.gguf_architecture}, weights "
            f"{self.weight_type}, embedding {self.embed_type}{tok})"
        )
        worst = max(self.tensors, key=lambda t: t.rel_error, default=None)
        err = f"; max rel. error {worst.rel_error:.3e} ({worst.gguf_name})" if worst else ""
        out.append(
            f"{len(self.tensors)} tensors: {format_bytes(self.source_bytes)} -> "
            f"{format_bytes(self.output_bytes)} ({ratio:.2f}x smaller) in {self.seconds:.1f} s"
            + err
        )
        out += [f"warning: {w}" for w in self.warnings]
        return "\n".join(out)


def format_bytes(n: int) -> str:
    """``1536 -> '1.5 KiB'``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"  # pragma: no cover - the loop always returns
