"""``bitnet chat [-m MODEL]``: an interactive chat with the model's chat template.

Each line read from stdin is a user message; the reply streams to stdout, then a newline. The
conversation history is kept (and the KV cache of its prefix reused) until ``/reset``;
``/exit`` or end of input quits. Works with a pipe as stdin (one message per line), so it can be
scripted; the ``> `` prompt is shown only on a terminal.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .generate import add_model_args, add_sampling_args, load, sampling_options

COMMANDS_HELP = "/reset clears the history, /exit quits"


def register(sub: argparse._SubParsersAction) -> None:
    """Adds the ``chat`` subcommand to the ``bitnet`` parser."""
    p = sub.add_parser(
        "chat",
        help="interactive chat (one message per line; /reset, /exit)",
        description="Chat with a model using its chat template. Reads one user message per "
        f"line from stdin and streams each reply to stdout; {COMMANDS_HELP}.",
    )
    add_model_args(p)
    p.add_argument("--system", default=None, help="a system message opening the conversation")
    p.add_argument("--chat-template", default=None, help="a Jinja template file to use instead")
    add_sampling_args(p)
    p.set_defaults(func=run)


def _fresh(system: str | None) -> list[dict[str, Any]]:
    return [] if system is None else [{"role": "system", "content": system}]


def run(args: argparse.Namespace) -> int:
    """The chat loop; returns the exit status."""
    template = None
    if args.chat_template is not None:
        with open(args.chat_template, encoding="utf-8") as f:
            template = f.read()
    model = load(args)
    opts = sampling_options(args)
    tok = model.tokenizer
    if tok is None:
        raise ValueError(f"{model.path}: the model file has no tokenizer; cannot chat")
    if template is None and tok.chat_template is None:
        raise ValueError(
            f"{model.path}: the model has no chat template; pass --chat-template FILE "
            "or use `bitnet generate`"
        )
    history = _fresh(args.system)
    interactive = sys.stdin.isatty()
    if interactive:
        print(
            f"chatting with {model.path.name if model.path else 'the model'} ({COMMANDS_HELP})",
            file=sys.stderr,
        )
    while True:
        if interactive:
            sys.stdout.write("> ")
            sys.stdout.flush()
        line = sys.stdin.readline()
        if not line:
            break
        text = line.rstrip("\r\n")
        command = text.strip()
        if not command:
            continue
        if command == "/exit":
            break
        if command == "/reset":
            history = _fresh(args.system)
            model.reset()
            print("(history cleared)", file=sys.stderr)
            continue
        history.append({"role": "user", "content": text})
        try:
            pieces = model.chat(history, stream=True, chat_template=template, **opts)
        except ValueError as e:
            # Most likely the history outgrew the context: say so and keep the session.
            history.pop()
            print(f"bitnet chat: {e} (/reset clears the history)", file=sys.stderr)
            continue
        reply = []
        for piece in pieces:
            sys.stdout.write(piece)
            sys.stdout.flush()
            reply.append(piece)
        sys.stdout.write("\n")
        sys.stdout.flush()
        history.append({"role": "assistant", "content": "".join(reply)})
    return 0
