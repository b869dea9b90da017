"""LoRA fine-tuning of BitNet b1.58 models on a frozen, packed ternary base.

* :class:`LoraConfig` (:mod:`bitnet.lora.config`): rank, alpha, dropout, target modules; PEFT's
  ``adapter_config.json``.
* :class:`LoraModel` (:mod:`bitnet.lora.model`): the base (GGUF, checkpoint directory or
  ``BitNetForTraining``) with A/B adapters on the tape; ``loss``, ``logits``, ``generate``,
  ``save_adapter`` / ``load_adapter`` (PEFT layout), ``merge`` (a GGUF + the rounding report:
  on the base's own grid for a GGUF base, absmean re-quantization for master weights).
* :mod:`bitnet.lora.data`: JSONL instruction data (prompt/response or chat messages), loss on
  the responses only.
* :class:`LoraTrainer` (:mod:`bitnet.lora.trainer`): AdamW on the adapters with a progress bar.

The frozen BitLinear op is :func:`bitnet.autograd.bitlinear_frozen` (``x``, packed weights):
the inference kernels forward, a straight-through gradient for ``x`` only. User guide:
docs/lora.md.
"""

from __future__ import annotations

from .config import ADAPTER_CONFIG, ADAPTER_WEIGHTS, TARGET_MODULES, LoraConfig
from .data import (
    IGNORE_INDEX,
    SIMPLE_TEMPLATE,
    DataError,
    InstructionDataset,
    encode_example,
    load_instructions,
    read_jsonl,
)
from .model import BaseConfig, LayerMergeStats, LoraModel, MergeReport, peft_key
from .trainer import LoraTrainConfig, LoraTrainer

__all__ = [
    "ADAPTER_CONFIG",
    "ADAPTER_WEIGHTS",
    "IGNORE_INDEX",
    "SIMPLE_TEMPLATE",
    "TARGET_MODULES",
    "BaseConfig",
    "DataError",
    "InstructionDataset",
    "LayerMergeStats",
    "LoraConfig",
    "LoraModel",
    "LoraTrainConfig",
    "LoraTrainer",
    "MergeReport",
    "encode_example",
    "load_instructions",
    "peft_key",
    "read_jsonl",
]
