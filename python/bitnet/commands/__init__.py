"""Subcommands of the ``bitnet`` CLI: one module per command.

Each module defines ``register(subparsers)``, which adds its parser and sets ``func`` (a callable
taking the parsed namespace and returning the exit status). Modules import heavy dependencies
(torch, huggingface_hub) inside ``run`` only, so ``bitnet --help`` stays fast.
"""

from __future__ import annotations

# Order of appearance in ``bitnet --help``.
COMMANDS = (
    "download",
    "convert",
    "info",
    "generate",
    "chat",
    "serve",
    "perplexity",
    "bench",
    "train",
    "finetune",
)
