"""``bitnet serve [-m MODEL] [--host 127.0.0.1] [--port 8000]``: an OpenAI-compatible HTTP server.

Loads the model (the packaged default model without ``-m``), binds the address, prints the URL
and serves :func:`bitnet.serve.create_app` with uvicorn until interrupted (Ctrl-C). Endpoints,
parameters and limits: docs/serving.md.
"""

from __future__ import annotations

import argparse
import os
import socket

from .generate import _number, add_model_args, load, non_negative_int

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def register(sub: argparse._SubParsersAction) -> None:
    """Adds the ``serve`` subcommand to the ``bitnet`` parser."""
    p = sub.add_parser(
        "serve",
        help="serve a model over an OpenAI-compatible HTTP API",
        description="Serve a model over HTTP with OpenAI's API: POST /v1/completions, "
        "POST /v1/chat/completions (both with stream: true), GET /v1/models, GET /health. "
        "One generation runs at a time; up to --max-queue requests wait, later ones get 503.",
    )
    add_model_args(p)
    p.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to listen on (default {DEFAULT_HOST}; 0.0.0.0 for every interface)",
    )
    p.add_argument(
        "--port",
        type=_number(int, 0, 65535),
        default=DEFAULT_PORT,
        help=f"TCP port (default {DEFAULT_PORT}; 0: any free port)",
    )
    p.add_argument(
        "--max-queue",
        type=non_negative_int,
        default=16,
        metavar="N",
        help="requests that may wait while one generates; more get 503 (default 16)",
    )
    p.add_argument(
        "--model-name",
        default=None,
        metavar="NAME",
        help="the model id clients send and /v1/models lists (default: the repo id given "
        "with -m, else the file name without .gguf)",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug"),
        help="uvicorn's log level (default info: one line per request)",
    )
    p.set_defaults(func=run)


def model_name(args: argparse.Namespace, model: object) -> str:
    """``--model-name``, else the repo id given with ``-m``, else the file's stem."""
    if args.model_name:
        return str(args.model_name)
    if args.model and not os.path.exists(os.path.expanduser(args.model)):
        return str(args.model)  # a repo id
    path = getattr(model, "path", None)
    return path.stem if path is not None else "bitnet"


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one)."""
    infos = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE | socket.AI_ADDRCONFIG
    )
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


def url(sock: socket.socket) -> str:
    """``http://host:port`` of a bound socket."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def run(args: argparse.Namespace) -> int:
    """Loads the model and serves it until interrupted; returns the exit status."""
    try:
        import uvicorn

        from ..serve import create_app
    except ImportError as e:
        raise RuntimeError(
            f"bitnet serve needs starlette and uvicorn ({e}); install the extra: "
            "pip install 'bitnet-ext[serve]'"
        ) from None
    model = load(args)
    name = model_name(args, model)
    app = create_app(model, model_name=name, max_queue=args.max_queue)
    sock = bind(args.host, args.port)
    base = url(sock)
    print(
        f"bitnet serve: serving '{name}' ({model.path}) at {base} "
        f"(OpenAI base URL {base}/v1); Ctrl-C stops",
        flush=True,
    )
    config = uvicorn.Config(app, log_level=args.log_level, timeout_graceful_shutdown=5)
    try:
        # uvicorn shuts down gracefully on SIGINT / SIGTERM, then re-raises the signal: Ctrl-C
        # comes back as KeyboardInterrupt, which is this command's normal end.
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:
        print("bitnet serve: stopped", flush=True)
    finally:
        sock.close()
    return 0
