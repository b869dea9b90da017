"""Quantization-aware training of BitNet b1.58 models on the autograd tape.

* :class:`TrainModelConfig` (:mod:`bitnet.train.config`): the hyperparameters, convertible to
  and from a transformers ``BitNetForCausalLM`` ``config.json``.
* :class:`BitNetForTraining` (:mod:`bitnet.train.model`): the model (fp32 master weights with
  transformers names, BitLinear with the straight-through estimator), ``save_pretrained`` /
  ``from_pretrained``.
* :class:`TrainConfig` and :class:`Trainer` (:mod:`bitnet.train.trainer`): AdamW with schedules,
  gradient accumulation and clipping, periodic evaluation, checkpoints with exact resume, GGUF
  export.
* :mod:`bitnet.train.data`: text / JSONL / CSV / Parquet loading, BPE tokenizer training,
  :class:`TokenDataset` (fixed-length windows in a seeded order).
* :mod:`bitnet.train.checkpoint`: the checkpoint directory format.
"""

from __future__ import annotations

from .checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainModelConfig
from .data import (
    DataError,
    TokenDataset,
    encode_texts,
    load_texts,
    load_tokenizer,
    save_tokenizer,
    split_train_val,
    train_bpe_tokenizer,
)
from .model import BitNetForTraining, LoadResult
from .trainer import SCHEDULES, TrainConfig, Trainer

__all__ = [
    "SCHEDULES",
    "BitNetForTraining",
    "CheckpointError",
    "DataError",
    "LoadResult",
    "TokenDataset",
    "TrainConfig",
    "TrainModelConfig",
    "Trainer",
    "encode_texts",
    "latest_checkpoint",
    "load_checkpoint",
    "load_texts",
    "load_tokenizer",
    "save_checkpoint",
    "save_tokenizer",
    "split_train_val",
    "train_bpe_tokenizer",
]
