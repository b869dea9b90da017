"""``bitnet info FILE.gguf``: describe a GGUF file (metadata, tokenizer, tensors, totals).

``--json`` prints one machine-readable JSON object instead of the report; ``--metadata`` shows
every metadata value in full (long arrays and strings are abbreviated otherwise). FILE may be a
Hugging Face repo id (``owner/name`` or ``owner/name/file.gguf``), as for ``bitnet.gguf.read``.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

_MAX_ITEMS = 8  # array items shown before "..." without --metadata
_MAX_CHARS = 80  # string characters shown before "..." without --metadata


def register(sub: argparse._SubParsersAction) -> None:
    """Adds the ``info`` subcommand to the ``bitnet`` parser."""
    p = sub.add_parser(
        "info",
        help="describe a GGUF file: metadata, tokenizer, tensors and totals",
        description="Print a GGUF file's version, architecture, hyperparameters, tokenizer "
        "summary, other metadata, tensor table and totals.",
    )
    p.add_argument("file", metavar="FILE", help="a .gguf file or a Hugging Face repo id")
    p.add_argument("--json", action="store_true", help="print a JSON object instead")
    p.add_argument("--metadata", action="store_true", help="print every metadata value in full")
    p.set_defaults(func=run)


def _jsonable(v: Any) -> Any:
    """Plain JSON: bytes (non-UTF-8 strings) as their repr, non-finite floats as strings."""
    if isinstance(v, bytes):
        return repr(v)
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    return v


def _abbrev(v: Any, full: bool) -> Any:
    """``v`` with long arrays cut to their first items (JSON: ``{"length", "head"}``)."""
    if full:
        return v
    if isinstance(v, list) and len(v) > _MAX_ITEMS:
        return {"length": len(v), "head": [_abbrev(x, False) for x in v[:_MAX_ITEMS]]}
    if isinstance(v, list):
        return [_abbrev(x, False) for x in v]
    if isinstance(v, str) and len(v) > _MAX_CHARS:
        return v[:_MAX_CHARS] + "..."
    return v


def _show(v: Any, full: bool) -> str:
    """A value as one line of text (long arrays and strings abbreviated unless ``full``)."""
    if isinstance(v, list):
        items = v if full or len(v) <= _MAX_ITEMS else v[:_MAX_ITEMS]
        body = ", ".join(_show(x, full) for x in items)
        if len(items) < len(v):
            body += f", ... ({len(v)} items)"
        return f"[{body}]"
    if isinstance(v, str):
        s = v if full or len(v) <= _MAX_CHARS else v[:_MAX_CHARS] + "..."
        return json.dumps(s, ensure_ascii=False)
    return repr(v)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n} B"


def describe(f: Any, full: bool = False) -> dict[str, Any]:
    """The report on a :class:`bitnet.gguf.GGUFFile` as a dict (the ``--json`` object); long
    metadata arrays are abbreviated to ``{"length", "head"}`` unless ``full``."""
    md = f.metadata
    arch = f.architecture
    hyper = {k: md[k] for k in md if arch and k.startswith(arch + ".")}
    tok = {
        "model": md.get("tokenizer.ggml.model"),
        "pre": md.get("tokenizer.ggml.pre"),
        "vocab_size": len(md["tokenizer.ggml.tokens"])
        if isinstance(md.get("tokenizer.ggml.tokens"), list)
        else None,
        "merges": len(md["tokenizer.ggml.merges"])
        if isinstance(md.get("tokenizer.ggml.merges"), list)
        else None,
        "bos_token_id": md.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": md.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": md.get("tokenizer.ggml.padding_token_id"),
        "has_chat_template": "tokenizer.chat_template" in md,
    }
    other = {k: md[k] for k in md if k not in hyper}
    tensors = [
        {
            "name": t.name,
            "shape": list(t.shape),
            "type": t.type,
            "nbytes": t.nbytes,
            "offset": t.offset,
        }
        for t in f.tensors.values()
    ]
    by_type: dict[str, int] = {}
    for t in f.tensors.values():
        by_type[t.type] = by_type.get(t.type, 0) + t.nbytes
    return {
        "file": str(f.path),
        "file_size": f.file_size,
        "version": f.version,
        "alignment": f.alignment,
        "architecture": arch,
        "hyperparameters": {k: _jsonable(v) for k, v in hyper.items()},
        "tokenizer": {k: _jsonable(v) for k, v in tok.items()},
        "metadata": {k: _jsonable(_abbrev(v, full)) for k, v in other.items()},
        "metadata_types": dict(f.metadata_types),
        "tensors": tensors,
        "totals": {
            "tensors": len(tensors),
            "bytes_by_type": by_type,
            "tensor_bytes": sum(by_type.values()),
            "parameters": sum(t.n_elements for t in f.tensors.values()),
            "file_size": f.file_size,
        },
    }


def _print_report(info: dict[str, Any], metadata: dict[str, Any], full: bool) -> None:
    types = info["metadata_types"]
    print(f"file:          {info['file']} ({_size(info['file_size'])})")
    print(f"GGUF version:  {info['version']} (alignment {info['alignment']})")
    print(f"architecture:  {info['architecture'] or '-'}")
    if info["hyperparameters"]:
        print("\nhyperparameters:")
        for k, v in info["hyperparameters"].items():
            print(f"  {k} = {_show(v, full)}  ({types[k]})")
    tok = info["tokenizer"]
    if any(v not in (None, False) for v in tok.values()):
        print("\ntokenizer:")
        dash = lambda v: "-" if v is None else v  # noqa: E731
        print(f"  model {dash(tok['model'])}, pre {dash(tok['pre'])}")
        print(f"  vocab size {dash(tok['vocab_size'])}, merges {dash(tok['merges'])}")
        print(
            f"  bos {dash(tok['bos_token_id'])}, eos {dash(tok['eos_token_id'])}, "
            f"pad {dash(tok['pad_token_id'])}, chat template "
            f"{'yes' if tok['has_chat_template'] else 'no'}"
        )
    other = [k for k in metadata if k not in info["hyperparameters"]]
    if other:
        print("\nmetadata:")
        for k in other:
            v = metadata[k]
            print(f"  {k} = {_show(v, full)}  ({types[k]})")
    tensors = info["tensors"]
    if tensors:
        print("\ntensors:")
        rows = [
            (t["name"], "x".join(map(str, t["shape"])), t["type"], str(t["nbytes"]))
            for t in tensors
        ]
        header = ("name", "shape", "type", "bytes")
        w = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
        for r in [header, *rows]:
            print(f"  {r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:<{w[2]}}  {r[3]:>{w[3]}}")
    tot = info["totals"]
    print("\ntotals:")
    print(f"  tensors:      {tot['tensors']}")
    by_type = ", ".join(f"{t} {_size(n)}" for t, n in tot["bytes_by_type"].items()) or "-"
    print(f"  bytes:        {_size(tot['tensor_bytes'])} ({by_type})")
    print(f"  parameters:   {tot['parameters']:,}")
    print(f"  file size:    {_size(tot['file_size'])} ({tot['file_size']} bytes)")


def run(args: argparse.Namespace) -> int:
    """Prints the report (or JSON) for ``args.file``; returns the exit status."""
    from ..gguf import read

    with read(args.file) as f:
        info = describe(f, full=args.metadata)
        if args.json:
            print(json.dumps(info, indent=2, ensure_ascii=False))
        else:
            _print_report(info, f.metadata, args.metadata)
    return 0
