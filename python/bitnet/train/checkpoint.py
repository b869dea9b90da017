"""Training checkpoints: weights, optimizer state and trainer state in one directory.

A checkpoint directory (``<out_dir>/checkpoint-<step>/``) holds:

* ``config.json``: the model's HF ``BitNetForCausalLM`` config;
* ``model.safetensors``: the fp32 master weights under their HF names (so the directory is
  also a checkpoint that ``bitnet convert`` and ``BitNetForTraining.from_pretrained`` read);
* ``optimizer.safetensors``: AdamW's first and second moments, ``m.<param name>`` and
  ``v.<param name>`` (fp32, each parameter's shape);
* ``trainer_state.json``: format version, step, the ``TrainConfig``, the optimizer's
  hyper-parameters and per-parameter step counts, the data position, the BitLinear ``lambda_``
  and the history of logged metrics;
* ``tokenizer.json`` / ``tokenizer_config.json`` when the trainer has a tokenizer.

Writes are atomic: everything goes into a hidden temporary directory beside the target, which
is renamed into place only when complete, so an interrupted save never leaves a half-written
checkpoint under the final name (an older checkpoint of the same name is replaced only then).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FORMAT",
    "VERSION",
    "CheckpointError",
    "find_checkpoints",
    "latest_checkpoint",
    "load_checkpoint",
    "read_trainer_state",
    "resolve_checkpoint",
    "save_checkpoint",
]

FORMAT = "bitnet-train-checkpoint"
VERSION = 1
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "trainer_state.json"
CONFIG_FILE = "config.json"
_CHECKPOINT_DIR = re.compile(r"checkpoint-(\d+)")


class CheckpointError(ValueError):
    """A checkpoint that is missing files, corrupt, or does not fit the model / optimizer."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_json(path: Path, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def save_checkpoint(
    directory: str | os.PathLike[str],
    *,
    model_state: Mapping[str, np.ndarray],
    model_config: Mapping[str, Any],
    optimizer_state: Sequence[tuple[int, np.ndarray, np.ndarray]],
    param_names: Sequence[str],
    trainer_state: Mapping[str, Any],
    tokenizer: Any = None,
) -> Path:
    """Writes a checkpoint directory atomically; returns its path.

    Args:
        directory: the checkpoint directory to create (its parent is created if needed); an
            existing one is replaced once the new one is complete.
        model_state: parameter name -> array (stored as fp32).
        model_config: the HF ``config.json`` dict.
        optimizer_state: AdamW's ``get_state()``: one ``(step, m, v)`` per parameter.
        param_names: the name of each optimizer parameter, in the optimizer's order.
        trainer_state: JSON-serializable trainer state (step, config, history, ...); the
            format version and the per-parameter optimizer step counts are added.
        tokenizer: a ``tokenizers.Tokenizer`` saved beside the weights, or None.

    Raises:
        CheckpointError: the optimizer state does not match ``param_names``.
        OSError: the directory cannot be written (nothing is left behind then).
    """
    from safetensors.numpy import save_file

    if len(optimizer_state) != len(param_names):
        raise CheckpointError(
            f"save_checkpoint: {len(optimizer_state)} optimizer entries for "
            f"{len(param_names)} parameter names"
        )
    final = Path(os.path.expanduser(os.fspath(directory)))
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        weights = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in model_state.items()}
        save_file(weights, str(tmp / MODEL_FILE), metadata={"format": "pt"})
        moments: dict[str, np.ndarray] = {}
        steps: dict[str, int] = {}
        for name, (step, m, v) in zip(param_names, optimizer_state, strict=True):
            moments[f"m.{name}"] = np.ascontiguousarray(m, dtype=np.float32)
            moments[f"v.{name}"] = np.ascontiguousarray(v, dtype=np.float32)
            steps[name] = int(step)
        save_file(moments, str(tmp / OPTIMIZER_FILE))
        _write_json(tmp / CONFIG_FILE, dict(model_config))
        state = {"format": FORMAT, "version": VERSION, **dict(trainer_state)}
        state["optimizer_steps"] = steps
        _write_json(tmp / STATE_FILE, state)
        if tokenizer is not None:
            from .data import save_tokenizer

            save_tokenizer(tokenizer, tmp)
        for f in (MODEL_FILE, OPTIMIZER_FILE):
            with open(tmp / f, "rb") as fh:
                os.fsync(fh.fileno())
        # mkdtemp makes the directory 0700 (and safetensors its files 0600): give the checkpoint
        # the permissions an ordinary directory and files would have under the current umask.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        for f in tmp.iterdir():
            os.chmod(f, 0o666 & ~umask)
        _fsync_dir(tmp)
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
            os.replace(final, old / final.name)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def find_checkpoints(out_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """The complete ``checkpoint-<step>`` directories in ``out_dir``, sorted by step."""
    root = Path(os.path.expanduser(os.fspath(out_dir)))
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _CHECKPOINT_DIR.fullmatch(p.name)
        if m and p.is_dir() and (p / STATE_FILE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(out_dir: str | os.PathLike[str]) -> Path | None:
    """The ``checkpoint-<step>`` directory with the highest step in ``out_dir``, or None."""
    found = find_checkpoints(out_dir)
    return found[-1][1] if found else None


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A checkpoint directory from ``path``: the directory itself when it holds
    ``trainer_state.json``, else the latest ``checkpoint-<step>`` inside it (a run's out_dir).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: neither a checkpoint nor a directory containing one.
    """
    p = Path(os.path.expanduser(os.fspath(path)))
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such checkpoint directory")
    if not p.is_dir():
        raise CheckpointError(f"{p}: is a file; expected a checkpoint directory")
    if (p / STATE_FILE).is_file():
        return p
    latest = latest_checkpoint(p)
    if latest is None:
        raise CheckpointError(
            f"{p}: not a training checkpoint (no {STATE_FILE}) and no checkpoint-<step> "
            "directory inside it"
        )
    return latest


def read_trainer_state(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``trainer_state.json`` of a checkpoint directory, validated (format and version,
    an integer step).

    Raises:
        FileNotFoundError, CheckpointError: see :func:`resolve_checkpoint`; a corrupt or
            foreign state file.
    """
    d = resolve_checkpoint(directory)
    path = d / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: corrupt trainer state, not valid JSON ({e})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a bitnet training checkpoint (format {FORMAT!r})")
    if state.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {state.get('version')!r} is not supported (this "
            f"bitnet reads version {VERSION})"
        )
    step = state.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"{path}: invalid step {step!r}")
    return state


def _load_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    if not path.is_file():
        raise CheckpointError(f"{path}: missing; the checkpoint is incomplete")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises SafetensorError (not an OSError) on bad files
        raise CheckpointError(f"{path}: corrupt safetensors file ({e})") from None


def load_checkpoint(
    directory: str | os.PathLike[str], param_names: Sequence[str], param_shapes: Sequence[tuple]
) -> tuple[dict[str, Any], dict[str, np.ndarray], list[tuple[int, np.ndarray, np.ndarray]]]:
    """Reads and validates a checkpoint written by :func:`save_checkpoint`.

    Args:
        directory: a checkpoint directory, or a run's out_dir (its latest checkpoint).
        param_names, param_shapes: the optimizer's parameters, in its order.

    Returns:
        (trainer state, model state dict {name: fp32 array}, optimizer state [(step, m, v)]).
        The trainer state gains ``"path"``: the checkpoint directory read.

    Raises:
        FileNotFoundError: no such directory.
        CheckpointError: a missing or corrupt file, or a parameter missing from the optimizer
            state or of the wrong shape (naming it).
    """
    d = resolve_checkpoint(directory)
    state = read_trainer_state(d)
    weights = _load_safetensors(d / MODEL_FILE)
    moments = _load_safetensors(d / OPTIMIZER_FILE)
    steps = state.get("optimizer_steps")
    if not isinstance(steps, dict):
        raise CheckpointError(f"{d / STATE_FILE}: no optimizer_steps")
    opt: list[tuple[int, np.ndarray, np.ndarray]] = []
    for name, shape in zip(param_names, param_shapes, strict=True):
        m, v, step = moments.get(f"m.{name}"), moments.get(f"v.{name}"), steps.get(name)
        if m is None or v is None or not isinstance(step, int):
            raise CheckpointError(
                f"{d / OPTIMIZER_FILE}: no optimizer state for parameter {name!r}; the "
                "checkpoint belongs to a different model"
            )
        want = tuple(int(s) for s in shape)
        for what, arr in (("m", m), ("v", v)):
            if tuple(arr.shape) != want or arr.dtype != np.float32:
                raise CheckpointError(
                    f"{d / OPTIMIZER_FILE}: {what}.{name} is {arr.dtype} {list(arr.shape)}, "
                    f"expected float32 {list(want)}"
                )
        opt.append((step, m, v))
    state["path"] = str(d)
    return state, weights, opt
