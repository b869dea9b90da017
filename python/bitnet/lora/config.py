"""``LoraConfig``: which BitLinear layers get adapters, their rank, scaling and dropout.

The config maps one to one onto PEFT's ``adapter_config.json`` (``peft_type: LORA``), so an
adapter saved by :meth:`bitnet.lora.LoraModel.save_adapter` loads with
``peft.PeftModel.from_pretrained`` and one saved by PEFT (plain LoRA) loads here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "TARGET_MODULES", "LoraConfig"]

TARGET_MODULES: tuple[str, ...] = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)
"""The seven BitLinear projections of a BitNet layer (transformers' module names), in forward
order. They are the only modules LoRA can target here: the embedding, the head and the norms
stay as they are."""

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"

# PEFT LoraConfig fields that would change the math; any other value than these is refused.
_PEFT_DEFAULTS: dict[str, Any] = {
    "bias": "none",
    "fan_in_fan_out": False,
    "use_rslora": False,
    "use_dora": False,
    "modules_to_save": None,
    "layers_to_transform": None,
    "rank_pattern": {},
    "alpha_pattern": {},
}


def _targets(value: Any) -> list[str]:
    if isinstance(value, str):
        if value == "all-linear":
            return list(TARGET_MODULES)
        value = [value]
    if not isinstance(value, Iterable):
        raise ValueError(
            f"LoraConfig: target_modules must be a list of module names, got {value!r}"
        )
    names = [str(v) for v in value]
    if not names:
        raise ValueError(
            "LoraConfig: target_modules is empty; choose some of " + ", ".join(TARGET_MODULES)
        )
    for n in names:
        if n not in TARGET_MODULES:
            raise ValueError(
                f"LoraConfig: unknown target module {n!r}; the BitLinear modules are "
                + ", ".join(TARGET_MODULES)
            )
    # Canonical (forward) order, no duplicates: the parameter order depends only on the set.
    return [n for n in TARGET_MODULES if n in names]


@dataclasses.dataclass
class LoraConfig:
    """LoRA hyperparameters (PEFT's names in brackets).

    Each targeted projection ``y = W x`` (``W [out, in]``, frozen ternary) becomes
    ``y = W x + (alpha / r) * B (A dropout(x))`` with ``A [r, in]`` initialised Kaiming-uniform
    as PEFT does (``U(-1/sqrt(in), 1/sqrt(in))``) and ``B [out, r]`` zeros, so an untrained
    adapter leaves the model unchanged.

    Attributes:
        r: adapter rank (``r``), >= 1.
        alpha: scaling numerator (``lora_alpha``); the update is scaled by ``alpha / r``.
        dropout: dropout probability on the adapter's input during training (``lora_dropout``),
            in [0, 1).
        target_modules: which projections get adapters (``target_modules``): a subset of
            :data:`TARGET_MODULES`, or ``"all-linear"``. The default is all seven, the QLoRA
            recipe: a ternary base cannot absorb small updates in any single projection, so
            spreading the adapter's capacity over every projection trains better than PEFT's
            classic ``q_proj, v_proj`` choice at the same parameter count per module.

    Raises:
        ValueError: ``r < 1``, ``alpha <= 0``, dropout outside [0, 1), an empty target list or
            an unknown module name.
    """

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] = dataclasses.field(default_factory=lambda: list(TARGET_MODULES))

    def __post_init__(self) -> None:
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"LoraConfig: r must be an integer >= 1, got {self.r!r}")
        a = self.alpha
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not (0 < a < math.inf):
            raise ValueError(f"LoraConfig: alpha must be a positive number, got {a!r}")
        self.alpha = float(a)
        p = self.dropout
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not (0.0 <= p < 1.0):
            raise ValueError(f"LoraConfig: dropout must be in [0, 1), got {p!r}")
        self.dropout = float(p)
        self.target_modules = _targets(self.target_modules)

    @property
    def scaling(self) -> float:
        """``alpha / r``, the factor on ``B @ A`` (PEFT's default, not rsLoRA)."""
        return self.alpha / self.r

    # ------------------------------------------------------------------ PEFT
    def to_peft_dict(self, base_model_name_or_path: str | None = None) -> dict[str, Any]:
        """PEFT's ``adapter_config.json`` contents (a JSON-serializable dict)."""
        return {
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base_model_name_or_path,
            "r": self.r,
            "lora_alpha": self.alpha,
            "lora_dropout": self.dropout,
            "target_modules": list(self.target_modules),
            "inference_mode": True,
            "init_lora_weights": True,
            "revision": None,
            **{k: (dict(v) if isinstance(v, dict) else v) for k, v in _PEFT_DEFAULTS.items()},
        }

    @classmethod
    def from_peft_dict(cls, d: Mapping[str, Any], where: str = ADAPTER_CONFIG) -> LoraConfig:
        """The config of a PEFT ``adapter_config.json`` dict.

        Raises:
            ValueError: not a LoRA adapter, or an option this implementation does not support
                (bias, fan_in_fan_out, rsLoRA, DoRA, per-layer ranks, layer subsets,
                modules_to_save, regex target_modules); the message names ``where`` and the key.
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"{where}: expected a JSON object")
        if d.get("peft_type") != "LORA":
            raise ValueError(f"{where}: peft_type is {d.get('peft_type')!r}, expected 'LORA'")
        for key, default in _PEFT_DEFAULTS.items():
            v = d.get(key)
            empty_ok = default is None or default == {}
            if not (v is None or v == default or (empty_ok and v in ([], {}))):
                raise ValueError(
                    f"{where}: {key} = {v!r} is not supported (only {default!r}); bitnet.lora "
                    "implements plain LoRA on the BitLinear projections"
                )
        tm = d.get("target_modules")
        if isinstance(tm, str) and tm != "all-linear":
            raise ValueError(
                f"{where}: target_modules {tm!r} is a regular expression; list the module "
                "names instead (" + ", ".join(TARGET_MODULES) + ")"
            )
        try:
            return cls(
                r=d.get("r", 8),
                alpha=d.get("lora_alpha", 8),
                dropout=d.get("lora_dropout", 0.0),
                target_modules=tm if tm is not None else [],
            )
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None

    def save(self, directory: str | os.PathLike[str], base: str | None = None) -> Path:
        """Writes ``adapter_config.json`` into ``directory`` (created); returns its path."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        path = out / ADAPTER_CONFIG
        path.write_text(json.dumps(self.to_peft_dict(base), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> LoraConfig:
        """Reads ``adapter_config.json`` from an adapter directory (or that file itself).

        Raises:
            FileNotFoundError: no such file. ValueError: invalid JSON or config.
        """
        p = Path(os.path.expanduser(os.fspath(directory)))
        path = p / ADAPTER_CONFIG if p.is_dir() else p
        if not p.exists():
            raise FileNotFoundError(
                f"{p}: no such adapter directory (expected {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS})"
            )
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file (an adapter directory needs one)")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        return cls.from_peft_dict(d, str(path))
