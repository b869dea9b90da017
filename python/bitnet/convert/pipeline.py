"""The conversion driver: checkpoint -> validated plan -> one streamed GGUF file."""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from .architectures import detect, gguf_metadata, linear_class, parse_hparams, tensor_specs
from .checkpoint import Checkpoint
from .errors import ConversionError
from .report import ConversionReport, TensorReport
from .tokenizer import tokenizer_metadata
from .weights import EMBED_TYPES, WEIGHT_TYPES, TensorPlan, convert_tensor, plan_tensor

__all__ = ["ConversionWarning", "FILE_TYPES", "convert", "convert_with_report"]

FILE_TYPES = {"f32": 0, "f16": 1, "tq1_0": 36, "tq2_0": 37, "i2_s": 40}
"""``general.file_type`` per weight type: llama.cpp's LlamaFileType (ALL_F32, MOSTLY_F16,
MOSTLY_TQ1_0, MOSTLY_TQ2_0) and bitnet.cpp's MOSTLY_I2_S (40)."""

GGUF_ARCH = {"i2_s": "bitnet-b1.58"}
"""``general.architecture`` per weight type: I2_S files are for bitnet.cpp's fork, every other
type writes llama.cpp mainline's ``bitnet``."""

_QUANTIZED = {"i2_s", "tq1_0", "tq2_0", "q8_0", "q4_0"}
_SHOWN = 5  # names listed in "missing" / "not converted" messages


class ConversionWarning(UserWarning):
    """Something was left out of the GGUF file (no tokenizer, unused checkpoint tensors)."""


def _check_types(weight_type: str, embed_type: str) -> tuple[str, str]:
    w = str(weight_type).lower()
    e = str(embed_type).lower()
    if w not in WEIGHT_TYPES:
        raise ConversionError(
            f"unknown weight type {weight_type!r}; choose one of {', '.join(WEIGHT_TYPES)}"
        )
    if e not in EMBED_TYPES:
        raise ConversionError(
            f"unknown embedding type {embed_type!r}; choose one of {', '.join(EMBED_TYPES)}"
        )
    return w, e


def _check_dst(dst: Path) -> None:
    parent = dst.parent
    if not parent.is_dir():
        raise ConversionError(f"{dst}: the output directory {parent} does not exist")
    if dst.is_dir():
        raise ConversionError(f"{dst}: is a directory; give the path of the .gguf file to write")


def _resolve(
    src: str | os.PathLike[str], revision: str | None, cache_dir: Any, progress: bool
) -> tuple[Path, str]:
    """The local checkpoint directory and the model name (``general.name``)."""
    s = os.fspath(src)
    local = Path(os.path.expanduser(s))
    if local.is_dir():
        if revision is not None:
            raise ConversionError(
                f"revision {revision!r} given for the local directory {s}; revisions apply "
                "only to Hugging Face repo ids"
            )
        return local, local.resolve().name
    if local.exists():
        raise ConversionError(f"{s}: is a file; expected a checkpoint directory or a repo id")
    from .. import hub

    try:
        path = hub.resolve_checkpoint(s, revision=revision, cache_dir=cache_dir, progress=progress)
    except (FileNotFoundError, ValueError) as e:
        raise ConversionError(str(e)) from None
    return Path(path), s.rstrip("/").split("/")[-1]


def _list(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" (and {len(names) - _SHOWN} more)" if len(names) > _SHOWN else "")


def _plan(
    ckpt: Checkpoint, weight_type: str, embed_type: str
) -> tuple[Any, list[TensorPlan], list[str]]:
    """Validates the whole checkpoint against its config; returns (hparams, plans, warnings)."""
    cfg_path = ckpt.path / "config.json"
    arch = detect(ckpt.config, cfg_path)
    hp = parse_hparams(ckpt.config, arch, cfg_path)
    lc = linear_class(ckpt.config, cfg_path)
    specs = tensor_specs(hp, arch, "lm_head.weight" in ckpt)
    missing = [s.src for s in specs if s.src not in ckpt]
    if missing:
        raise ConversionError(
            f"{ckpt.path}: {len(missing)} tensor(s) that {arch.hf_name} with this config.json "
            f"needs are missing: {_list(missing)}"
        )
    plans = [plan_tensor(s, ckpt, lc, weight_type, embed_type) for s in specs]
    used = {p.weight.name for p in plans} | {p.scale.name for p in plans if p.scale is not None}
    used.add("lm_head.weight")  # a tied model's copy of the embedding
    extra = [n for n in ckpt.tensors if n not in used and not n.endswith("inv_freq")]
    warns = []
    if extra:
        warns.append(
            f"{len(extra)} checkpoint tensor(s) are not part of {arch.hf_name} and were not "
            f"converted: {_list(extra)}"
        )
    return hp, plans, warns


def convert_with_report(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    weight_type: str = "i2_s",
    embed_type: str = "f16",
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    report: bool = True,
) -> ConversionReport:
    """Converts a HuggingFace BitNet checkpoint to GGUF and reports what was stored.

    Args:
        src: a checkpoint directory, or a Hugging Face repo id (``"owner/name"``) that
            :func:`bitnet.hub.resolve_checkpoint` downloads (or finds in the cache).
        dst: the ``.gguf`` file to write; its directory must exist. An existing file is
            replaced only when the new one is complete.
        weight_type: storage of the BitLinear matrices: ``i2_s`` (bitnet.cpp, architecture
            ``bitnet-b1.58``), ``tq1_0`` / ``tq2_0`` (llama.cpp, ``bitnet``), or ``f16`` /
            ``f32`` (the dequantized ``t * s_w``, ``bitnet``).
        embed_type: storage of the token embedding (and an untied output head): ``f16``,
            ``f32``, ``q8_0`` or ``q4_0``. Norms are always f32.
        revision: branch, tag or commit of a repo id.
        cache_dir: Hugging Face cache directory for a repo id.
        progress: show progress bars (download, conversion).
        report: print the report table to stderr when done.

    Returns:
        The :class:`ConversionReport` (path, per-tensor types, sizes and relative errors).

    Raises:
        ConversionError: anything wrong with the checkpoint, the types or the destination
            (nothing is written then, and an existing ``dst`` is left untouched).
        bitnet.hub.HubError: a repo id could not be downloaded.
    """
    from .. import gguf

    t0 = time.perf_counter()
    weight_type, embed_type = _check_types(weight_type, embed_type)
    dst = Path(os.path.expanduser(os.fspath(dst)))
    _check_dst(dst)
    directory, name = _resolve(src, revision, cache_dir, progress)
    arch = GGUF_ARCH.get(weight_type, "bitnet")
    with Checkpoint(directory) as ckpt:
        hp, plans, warns = _plan(ckpt, weight_type, embed_type)
        tok = tokenizer_metadata(directory, ckpt.config, hp.vocab_size)
        if tok is None:
            warns.append(f"{directory}: no tokenizer.json; the GGUF file has no tokenizer")
        else:
            warns += tok.warnings
        for w in warns:
            warnings.warn(w, ConversionWarning, stacklevel=2)

        metadata: dict[str, Any] = {
            "general.name": name,
            "general.file_type": gguf.typed(FILE_TYPES[weight_type], "u32"),
        }
        if weight_type in _QUANTIZED or embed_type in _QUANTIZED:
            metadata["general.quantization_version"] = gguf.typed(2, "u32")
        metadata.update(gguf_metadata(hp, arch))
        if tok is not None:
            metadata.update(tok.metadata)

        reports: dict[str, TensorReport] = {}

        def loader(plan: TensorPlan) -> Any:
            def load() -> Any:
                value, rep = convert_tensor(plan, ckpt)
                reports[plan.spec.gguf] = rep
                return value

            return load

        tensors = [
            (p.spec.gguf, gguf.LazyTensor(p.stored_type, p.spec.shape, loader(p))) for p in plans
        ]
        # One tensor is read, converted and written at a time; the writer's progress bar
        # advances per tensor (in bytes written).
        gguf.write(dst, arch, metadata, tensors, progress=progress)

    result = ConversionReport(
        path=dst,
        weight_type=weight_type,
        embed_type=embed_type,
        architecture=hp.architecture,
        tensors=[reports[p.spec.gguf] for p in plans],
        source_bytes=sum(p.source_bytes for p in plans),
        output_bytes=dst.stat().st_size,
        seconds=time.perf_counter() - t0,
        gguf_architecture=arch,
        source=str(directory),
        tokenizer=None if tok is None else tok.model,
        warnings=warns,
    )
    if report:
        print(result.format(), file=sys.stderr)
    return result


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    weight_type: str = "i2_s",
    embed_type: str = "f16",
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    report: bool = True,
) -> Path:
    """Converts a HuggingFace BitNet checkpoint to GGUF; returns the written path.

    Same arguments as :func:`convert_with_report` (which this wraps); with ``report=True`` the
    report table is printed to stderr.
    """
    return convert_with_report(
        src,
        dst,
        weight_type,
        embed_type,
        revision=revision,
        cache_dir=cache_dir,
        progress=progress,
        report=report,
    ).path
