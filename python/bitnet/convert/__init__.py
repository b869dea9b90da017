"""Convert HuggingFace BitNet checkpoints to GGUF.

::

    from bitnet.convert import convert
    convert("microsoft/bitnet-b1.58-2B-4T", "2b4t.gguf", weight_type="i2_s")

Reads ``BitNetForCausalLM`` (transformers; bf16 master weights or packed uint8 + weight_scale)
and 1bitLLM's ``BitnetForCausalLM`` checkpoints (safetensors, single or sharded, or PyTorch
``.bin`` / ``.pt``), ternarizes or unpacks the BitLinear matrices, and writes one GGUF file with
the hyperparameters and the tokenizer. See docs/formats.md for the formats and keys.
"""

from __future__ import annotations

from .architectures import ARCHITECTURES
from .errors import ConversionError
from .pipeline import FILE_TYPES, ConversionWarning, convert, convert_with_report
from .report import ConversionReport, TensorReport
from .weights import EMBED_TYPES, WEIGHT_TYPES

__all__ = [
    "ARCHITECTURES",
    "EMBED_TYPES",
    "FILE_TYPES",
    "WEIGHT_TYPES",
    "ConversionError",
    "ConversionReport",
    "ConversionWarning",
    "TensorReport",
    "convert",
    "convert_with_report",
]
