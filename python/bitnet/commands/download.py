"""``bitnet download REPO_ID``: fetch a Hugging Face repository into the local HF cache.

The last line of stdout is the local snapshot directory, so scripts can capture it::

    path=$(bitnet download microsoft/bitnet-b1.58-2B-4T --quiet | tail -n 1)

Progress bars go to stderr. ``HF_HOME`` / ``HF_HUB_CACHE``, ``HF_TOKEN`` and
``HF_HUB_OFFLINE=1`` are honoured as by every Hugging Face tool.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Adds the ``download`` subcommand to the ``bitnet`` parser."""
    p = sub.add_parser(
        "download",
        help="download a Hugging Face repository into the local cache and print its path",
        description=(
            "Download a Hugging Face model repository (or the files matching --include) into "
            "the Hugging Face cache and print the local snapshot directory as the last line."
        ),
    )
    p.add_argument("repo_id", metavar="REPO_ID", help="repository id 'owner/name'")
    p.add_argument(
        "--revision", default=None, help="branch, tag or commit hash (default: the main branch)"
    )
    p.add_argument(
        "--cache-dir",
        default=None,
        help="cache directory (default: HF_HUB_CACHE, else $HF_HOME/hub, else "
        "~/.cache/huggingface/hub)",
    )
    p.add_argument(
        "--include",
        metavar="PATTERN",
        nargs="+",
        action="extend",
        default=None,
        help="only download files matching these glob patterns (e.g. '*.gguf' config.json); "
        "may be repeated",
    )
    p.add_argument(
        "--token",
        default=None,
        help="Hugging Face access token (default: HF_TOKEN or the stored `hf auth login`)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Downloads ``args.repo_id`` and prints the snapshot directory; returns the exit status."""
    from ..hub import download

    path = download(
        args.repo_id,
        revision=args.revision,
        cache_dir=args.cache_dir,
        allow_patterns=args.include,
        token=args.token,
        progress=not args.quiet,
    )
    print(path, flush=True)
    return 0
