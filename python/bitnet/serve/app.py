"""The OpenAI-compatible ASGI application (Starlette) behind ``bitnet serve``.

:func:`create_app` wraps one loaded :class:`bitnet.Model`. A Model runs one generation at a time,
so every generation runs on a single worker thread, in arrival order; requests beyond the one
generating wait in a queue of at most ``max_queue`` and later ones are refused with 503 (and
``Retry-After``). Requests are validated before they are queued: bad ones get an OpenAI-style
error body ``{"error": {"message", "type", "param", "code"}}`` with status 400 (bad JSON, bad or
unsupported fields, prompt longer than the context), 404 (unknown model or URL), 405 (wrong
method) or 413 (body over ``max_body_bytes``); 500 is only for a failure of the server itself.

Streaming answers are server-sent events (``data: {json}\\n\\n`` chunks, then ``data: [DONE]``).
A client that goes away (mid-stream, or while waiting for a non-streamed answer or in the queue)
cancels its generation: the worker stops at the next text piece and closes the model's stream,
so the model is free for the next request.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import math
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

__all__ = ["APIError", "ServerState", "create_app"]

# Sampling defaults for omitted fields: the model's own (llama.cpp's), see Model.generate.
SAMPLING_DEFAULTS: dict[str, Any] = {
    "temperature": 0.8,
    "top_k": 40,
    "top_p": 0.95,
    "min_p": 0.05,
    "repetition_penalty": 1.0,
    "frequency_penalty": 0.0,
    "presence_penalty": 0.0,
    "penalty_last_n": 64,
}
MAX_STOP = 16
"""Most stop strings per request."""
CHAT_ROLES = ("system", "developer", "user", "assistant")
# The engine's finish reasons in OpenAI's words (a full context ends the text like a token limit).
FINISH_REASONS = {"stop": "stop", "length": "length", "context": "length"}
# Fields of OpenAI's API that this server does not implement: accepted only with these values.
UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "logprobs": (None, False, 0),
    "top_logprobs": (None, 0),
    "echo": (None, False),
    "best_of": (None, 1),
    "suffix": (None, ""),
    "logit_bias": (None, {}),
    "tools": (None, []),
    "functions": (None, []),
    "tool_choice": (None, "none"),
    "function_call": (None, "none"),
}


# ----------------------------------------------------------------------------- errors
class APIError(Exception):
    """An error answered as ``{"error": {"message", "type", "param", "code"}}``.

    Args:
        status: the HTTP status.
        message: what is wrong and how to fix it.
        type: OpenAI's error type (``invalid_request_error`` for the client's mistakes,
            ``server_error`` for the server's).
        param: the request field at fault, if any.
        code: a short machine-readable reason (``invalid_type``, ``queue_full``, ...).
        headers: extra response headers (``Retry-After``).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The JSON error body."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        """The error as a JSON response."""
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def _show(v: Any) -> str:
    """A short JSON rendering of a request value for error messages."""
    try:
        s = json.dumps(v, ensure_ascii=False)
    except (TypeError, ValueError):
        s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _bad(param: str, message: str, code: str = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


# ----------------------------------------------------------------------------- field parsing
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int_field(body: Mapping[str, Any], name: str, lo: int, hi: int, default: Any) -> Any:
    """``body[name]`` as an int in [lo, hi]; ``default`` when absent or null."""
    v = body.get(name)
    if v is None:
        return default
    if not _is_int(v):
        raise _bad(name, f"'{name}' must be an integer, got {_show(v)}", "invalid_type")
    if not lo <= v <= hi:
        raise _bad(name, f"'{name}' must be an integer in [{lo}, {hi}], got {v}")
    return v


def _float_field(
    body: Mapping[str, Any],
    name: str,
    lo: float,
    hi: float,
    default: float,
    lo_open: bool = False,
) -> float:
    """``body[name]`` as a finite number in [lo, hi] (``(lo, hi]`` with ``lo_open``)."""
    v = body.get(name)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _bad(name, f"'{name}' must be a number, got {_show(v)}", "invalid_type")
    f = float(v)
    if not math.isfinite(f) or f < lo or f > hi or (lo_open and f == lo):
        if math.isinf(hi):
            rng = f"a finite number {'>' if lo_open else '>='} {lo:g}"
        else:
            rng = f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}]"
        raise _bad(name, f"'{name}' must be {rng}, got {_show(v)}")
    return f


def _bool_field(body: Mapping[str, Any], name: str, default: bool) -> bool:
    v = body.get(name)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise _bad(name, f"'{name}' must be true or false, got {_show(v)}", "invalid_type")
    return v


def _stop_field(body: Mapping[str, Any]) -> list[str]:
    """``stop``: null, a string, or a list of up to :data:`MAX_STOP` non-empty strings."""
    v = body.get("stop")
    if v is None:
        return []
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise _bad(
            "stop", f"'stop' must be a string or a list of strings, got {_show(v)}", "invalid_type"
        )
    if len(items) > MAX_STOP:
        raise _bad("stop", f"'stop' has {len(items)} strings; at most {MAX_STOP} are allowed")
    if any(not s for s in items):
        raise _bad("stop", "'stop' strings must not be empty")
    return list(items)


class _Params:
    """The generation fields common to both endpoints, checked."""

    def __init__(self, body: Mapping[str, Any], default_max_tokens: int | None) -> None:
        n = body.get("n")
        if n is not None and (not _is_int(n) or n != 1):
            raise _bad(
                "n",
                f"'n' must be 1 (this server returns one choice per request), got {_show(n)}",
                "unsupported_value",
            )
        for name, allowed in UNSUPPORTED.items():
            v = body.get(name)
            if not any(v == a and type(v) is type(a) for a in allowed):
                raise _bad(
                    name,
                    f"'{name}' is not supported by this server (got {_show(v)}); leave it out",
                    "unsupported_parameter",
                )
        fmt = body.get("response_format")
        if fmt is not None and fmt != {"type": "text"}:
            raise _bad(
                "response_format",
                f'\'response_format\' {_show(fmt)} is not supported: only {{"type": "text"}}',
                "unsupported_parameter",
            )
        # max_completion_tokens is the chat API's newer name for max_tokens.
        big = 2**31 - 1
        mt = _int_field(body, "max_tokens", 0, big, default_max_tokens)
        self.max_tokens: int | None = _int_field(body, "max_completion_tokens", 0, big, mt)
        d = SAMPLING_DEFAULTS
        inf = math.inf
        self.options: dict[str, Any] = {
            "temperature": _float_field(body, "temperature", 0.0, inf, d["temperature"]),
            "top_k": _int_field(body, "top_k", 0, big, d["top_k"]),
            "top_p": _float_field(body, "top_p", 0.0, 1.0, d["top_p"], lo_open=True),
            "min_p": _float_field(body, "min_p", 0.0, 1.0, d["min_p"]),
            "repetition_penalty": _float_field(
                body, "repetition_penalty", 0.0, inf, d["repetition_penalty"], lo_open=True
            ),
            "frequency_penalty": _float_field(
                body, "frequency_penalty", -2.0, 2.0, d["frequency_penalty"]
            ),
            "presence_penalty": _float_field(
                body, "presence_penalty", -2.0, 2.0, d["presence_penalty"]
            ),
            "penalty_last_n": _int_field(body, "penalty_last_n", -1, big, d["penalty_last_n"]),
            "seed": _int_field(body, "seed", 0, 2**64 - 1, None),
        }
        self.stop = _stop_field(body)
        self.stream = _bool_field(body, "stream", False)
        so = body.get("stream_options")
        self.include_usage = False
        if so is not None:
            if not self.stream:
                raise _bad("stream_options", "'stream_options' is only allowed with stream: true")
            if not isinstance(so, dict):
                raise _bad(
                    "stream_options",
                    f"'stream_options' must be an object, got {_show(so)}",
                    "invalid_type",
                )
            self.include_usage = _bool_field(so, "include_usage", False)


# ----------------------------------------------------------------------------- the worker
class _Job:
    """One generation: made and consumed on the event loop, run on the worker thread."""

    def __init__(self, rid: str, kind: str, stream: Any, incremental: bool) -> None:
        self.id = rid
        self.kind = kind
        self.stream = stream  # a bitnet.generation.TextStream
        self.incremental = incremental
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue[str | None] = asyncio.Queue()
        self.pieces: list[str] = []
        self.cancel_flag = threading.Event()
        self.stopped_early = False
        self.error: BaseException | None = None
        self.future: asyncio.Future[None] | None = None

    def cancel(self) -> None:
        """Asks the worker to stop this generation at its next piece (or skip it)."""
        self.cancel_flag.set()

    def run(self) -> None:
        """The generation, on the worker thread: pieces go to :attr:`events` (streaming) or
        :attr:`pieces`; the stream is always closed, which frees the model."""
        try:
            if self.cancel_flag.is_set():
                self.stopped_early = True
                return
            for piece in self.stream:
                if self.incremental:
                    self.loop.call_soon_threadsafe(self.events.put_nowait, piece)
                else:
                    self.pieces.append(piece)
                if self.cancel_flag.is_set():
                    self.stopped_early = True
                    break
        except RuntimeError as e:  # the event loop is gone (server shut down)
            if self.loop.is_closed():
                self.stopped_early = True
            else:
                self.error = e
        except Exception as e:
            self.error = e
        finally:
            self.stream.close()

    @property
    def prompt_tokens(self) -> int:
        return len(self.stream.prompt_ids)

    @property
    def completion_tokens(self) -> int:
        return len(self.stream.token_ids)

    @property
    def finish_reason(self) -> str | None:
        r = self.stream.finish_reason
        return None if r is None or self.stopped_early else FINISH_REASONS.get(r, r)

    def usage(self) -> dict[str, int]:
        p, c = self.prompt_tokens, self.completion_tokens
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


class ServerState:
    """What one app holds: the model, its single generation thread, the queue bound and
    counters. Available as ``app.state.server``.

    Attributes:
        model: the :class:`bitnet.Model` served.
        model_name: the name clients use (``model`` field, ``/v1/models``).
        max_queue: requests that may wait while one generates; more are refused (503).
        pending: requests admitted and not finished (the running one included).
        peak_pending: the most ``pending`` has been.
        stats: counters ``requests`` (admitted), ``completed``, ``cancelled`` (stopped early or
            skipped because the client went away), ``failed``, ``rejected`` (queue full).
        recent: the last 100 finished generations, newest last, as dicts with ``id``, ``kind``,
            ``prompt_tokens``, ``completion_tokens``, ``finish_reason``, ``cancelled``,
            ``error``.
    """

    def __init__(self, model: Any, model_name: str, max_queue: int, max_body_bytes: int) -> None:
        self.model = model
        self.model_name = model_name
        self.max_queue = max_queue
        self.max_body_bytes = max_body_bytes
        self.created = int(time.time())
        self.pending = 0
        self.peak_pending = 0
        self.stats: collections.Counter[str] = collections.Counter()
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=100)
        self._jobs: set[_Job] = set()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bitnet-serve")
        self._closed = False

    def submit(self, job: _Job) -> None:
        """Queues ``job`` on the worker thread, or raises 503 when the queue is full."""
        if self._closed:
            raise APIError(503, "the server is shutting down", type="server_error")
        if self.pending > self.max_queue:
            self.stats["rejected"] += 1
            raise APIError(
                503,
                f"the server is busy: one generation is running and {self.pending - 1} "
                f"request(s) are waiting (max_queue={self.max_queue}); retry later",
                type="server_error",
                code="queue_full",
                headers={"Retry-After": "1"},
            )
        self.pending += 1
        self.peak_pending = max(self.peak_pending, self.pending)
        self.stats["requests"] += 1
        self._jobs.add(job)
        job.future = job.loop.run_in_executor(self._executor, job.run)
        job.future.add_done_callback(lambda _f: self._finished(job))

    def _finished(self, job: _Job) -> None:
        """On the event loop, after the worker is done with ``job``."""
        self.pending -= 1
        self._jobs.discard(job)
        assert job.future is not None
        if job.future.cancelled():  # dropped from the executor's queue at shutdown
            job.stopped_early = True
        if job.error is not None:
            self.stats["failed"] += 1
        elif job.stopped_early:
            self.stats["cancelled"] += 1
        else:
            self.stats["completed"] += 1
        self.recent.append(
            {
                "id": job.id,
                "kind": job.kind,
                "prompt_tokens": job.prompt_tokens,
                "completion_tokens": job.completion_tokens,
                "finish_reason": job.finish_reason,
                "cancelled": job.stopped_early,
                "error": None if job.error is None else str(job.error),
            }
        )
        job.events.put_nowait(None)

    def close(self) -> None:
        """Cancels every generation and stops the worker (at the app's shutdown)."""
        self._closed = True
        for job in list(self._jobs):
            job.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)


# ----------------------------------------------------------------------------- responses
class _EventStream(StreamingResponse):
    """Server-sent events of one job; however the response ends (done, client gone, error),
    the job is cancelled (a no-op when it has finished)."""

    def __init__(self, content: AsyncIterator[str], job: _Job) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._job = job

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._job.cancel()


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False, separators=(',', ':'))}\n\n"


async def _wait_disconnect(receive: Receive) -> None:
    """Returns when the client disconnects (after the request body has been read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _read_json(request: Request, limit: int) -> dict[str, Any]:
    """The request body as a JSON object, at most ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    too_big = APIError(
        413,
        f"the request body is larger than the server's limit of {limit} bytes",
        code="request_too_large",
    )
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise APIError(400, "the request body is empty: send a JSON object", code="invalid_json")
    try:
        body = json.loads(raw)
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise APIError(
            400, f"the request body is not valid JSON: {e}", code="invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise APIError(
            400,
            f"the request body must be a JSON object, got {type(body).__name__}",
            code="invalid_json",
        )
    return body


# ----------------------------------------------------------------------------- the app
def create_app(
    model: Any,
    model_name: str | None = None,
    max_queue: int = 16,
    *,
    max_body_bytes: int = 4 << 20,
    default_max_tokens: int = 16,
) -> Starlette:
    """The OpenAI-compatible Starlette app serving ``model``.

    Args:
        model: a loaded :class:`bitnet.Model` (with a tokenizer). The app owns its generation
            while it runs: do not generate with the same Model elsewhere meanwhile.
        model_name: the id clients give as ``model`` and ``/v1/models`` lists (default: the
            model file's name without ``.gguf``). Requests may leave ``model`` out.
        max_queue: requests that may wait while one generates (>= 0); beyond that the server
            answers 503 with ``Retry-After: 1``.
        max_body_bytes: largest request body accepted (413 above).
        default_max_tokens: ``max_tokens`` of ``/v1/completions`` when the request omits it
            (OpenAI's default, 16). Chat completions default to the rest of the context.

    Returns:
        The app; ``app.state.server`` is its :class:`ServerState`. Run it with uvicorn.

    Raises:
        ValueError: a bad argument, or a model without a tokenizer.
    """
    if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 0:
        raise ValueError(f"max_queue must be an integer >= 0, got {max_queue!r}")
    if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int):
        raise ValueError(f"max_body_bytes must be a positive integer, got {max_body_bytes!r}")
    if max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be a positive integer, got {max_body_bytes!r}")
    if not _is_int(default_max_tokens) or default_max_tokens < 0:
        raise ValueError(f"default_max_tokens must be an integer >= 0, got {default_max_tokens!r}")
    if getattr(model, "tokenizer", None) is None:
        raise ValueError(f"{model!r}: the model has no tokenizer; the server needs one")
    if model_name is None:
        path = getattr(model, "path", None)
        model_name = path.stem if path is not None else "bitnet"
    if not isinstance(model_name, str) or not model_name:
        raise ValueError(f"model_name must be a non-empty string, got {model_name!r}")
    state = ServerState(model, model_name, max_queue, max_body_bytes)
    tok = model.tokenizer
    n_ctx = int(model.n_ctx)
    vocab = int(model.config.vocab_size)

    # ------------------------------------------------------------------ request pieces
    def check_model(body: Mapping[str, Any]) -> None:
        name = body.get("model")
        if name is None:
            return
        if not isinstance(name, str):
            raise _bad("model", f"'model' must be a string, got {_show(name)}", "invalid_type")
        if name != model_name:
            raise APIError(
                404,
                f"the model '{name}' does not exist on this server; it serves '{model_name}'",
                param="model",
                code="model_not_found",
            )

    def check_length(ids: list[int], param: str) -> list[int]:
        if not ids:
            raise _bad(param, f"'{param}' is empty")
        if len(ids) > n_ctx:
            raise _bad(
                param,
                f"the prompt is {len(ids)} tokens long, more than this model's context of "
                f"{n_ctx} tokens: shorten it (or restart the server with a larger --ctx)",
                "context_length_exceeded",
            )
        return ids

    def prompt_ids(body: Mapping[str, Any]) -> list[int]:
        """``prompt``: a string, a list of one string, token ids, or a list of one list of
        ids; tokenized like Model.generate (BOS as the tokenizer adds it)."""
        if "prompt" not in body or body["prompt"] is None:
            raise _bad("prompt", "'prompt' is required", "missing_required_parameter")
        p = body["prompt"]
        if isinstance(p, list) and len(p) == 1 and isinstance(p[0], (str, list)):
            p = p[0]
        elif isinstance(p, list) and p and all(isinstance(x, (str, list)) for x in p):
            raise _bad(
                "prompt",
                f"'prompt' holds {len(p)} prompts; this server takes one prompt per request",
                "unsupported_value",
            )
        if isinstance(p, str):
            return check_length(tok.encode(p) if p else [], "prompt")
        if isinstance(p, list) and all(_is_int(t) for t in p):
            for i, t in enumerate(p):
                if not 0 <= t < vocab:
                    raise _bad("prompt", f"prompt token {i} = {t} is not in [0, {vocab})")
            return check_length(list(p), "prompt")
        raise _bad(
            "prompt",
            f"'prompt' must be a string, a list of one string, or a list of token ids; got "
            f"{_show(body['prompt'])}",
            "invalid_type",
        )

    def chat_ids(body: Mapping[str, Any]) -> list[int]:
        """``messages`` rendered with the model's chat template and tokenized (as
        Model.chat does)."""
        msgs = body.get("messages")
        if msgs is None:
            raise _bad("messages", "'messages' is required", "missing_required_parameter")
        if not isinstance(msgs, list) or not msgs:
            raise _bad(
                "messages", "'messages' must be a non-empty list of message objects", "invalid_type"
            )
        clean = []
        for i, m in enumerate(msgs):
            where = f"messages[{i}]"
            if not isinstance(m, dict):
                raise _bad("messages", f"{where} must be an object, got {_show(m)}", "invalid_type")
            role = m.get("role")
            if role not in CHAT_ROLES:
                raise _bad(
                    "messages",
                    f"{where}.role must be one of {', '.join(CHAT_ROLES)}, got {_show(role)}",
                )
            content = m.get("content")
            if content is None and role == "assistant":
                content = ""
            if isinstance(content, list):  # content parts: text only
                texts = []
                for part in content:
                    if not (
                        isinstance(part, dict)
                        and part.get("type") == "text"
                        and isinstance(part.get("text"), str)
                    ):
                        raise _bad(
                            "messages",
                            f"{where}.content part {_show(part)} is not supported: only "
                            '{"type": "text", "text": "..."} parts',
                            "unsupported_value",
                        )
                    texts.append(part["text"])
                content = "".join(texts)
            if not isinstance(content, str):
                raise _bad(
                    "messages",
                    f"{where}.content must be a string or a list of text parts, got "
                    f"{_show(content)}",
                    "invalid_type",
                )
            clean.append({"role": "system" if role == "developer" else role, "content": content})
        try:
            text = tok.apply_chat_template(clean, add_generation_prompt=True)
        except ValueError as e:
            raise _bad("messages", f"cannot render the chat template: {e}") from None
        return check_length(tok.encode(text, add_bos=False), "messages")

    def start(kind: str, ids: list[int], params: _Params) -> _Job:
        """Builds the model's stream (checks the rest) and queues it."""
        max_new = n_ctx if params.max_tokens is None else params.max_tokens
        # Generation ends when the context is full, after at most n_ctx - len + 1 tokens: a
        # larger budget changes nothing but the history buffer the sampler allocates.
        max_new = min(max_new, n_ctx - len(ids) + 1)
        try:
            stream = model.stream(
                ids, max_new_tokens=max_new, stop=params.stop or None, **params.options
            )
        except (ValueError, TypeError) as e:
            raise APIError(400, str(e), code="invalid_value") from None
        prefix = "cmpl-" if kind == "completion" else "chatcmpl-"
        job = _Job(prefix + secrets.token_hex(12), kind, stream, incremental=params.stream)
        state.submit(job)
        return job

    async def collect(job: _Job, request: Request) -> None:
        """Waits for a non-streamed job; cancels it when the client goes away."""
        assert job.future is not None
        watcher = asyncio.ensure_future(_wait_disconnect(request.receive))
        try:
            await asyncio.wait({job.future, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
        if not job.future.done():
            job.cancel()
            raise ClientDisconnect()
        if job.future.cancelled():
            raise APIError(503, "the server is shutting down", type="server_error")
        if job.error is not None:
            raise APIError(
                500,
                f"the generation failed: {type(job.error).__name__}: {job.error}",
                type="server_error",
            )

    def envelope(job: _Job, obj: str, created: int) -> dict[str, Any]:
        return {"id": job.id, "object": obj, "created": created, "model": model_name}

    async def events(
        job: _Job,
        params: _Params,
        obj: str,
        choice: Callable[[str | None, str | None], dict[str, Any]],
        first: dict[str, Any] | None,
    ) -> AsyncIterator[str]:
        """The SSE body: (``first``), one chunk per piece, the finish chunk, (usage),
        ``[DONE]``."""
        created = int(time.time())
        if first is not None:
            yield _sse({**envelope(job, obj, created), "choices": [first]})
        while True:
            piece = await job.events.get()
            if piece is None:
                break
            yield _sse({**envelope(job, obj, created), "choices": [choice(piece, None)]})
        if job.error is not None:
            err = APIError(
                500,
                f"the generation failed: {type(job.error).__name__}: {job.error}",
                type="server_error",
            )
            yield _sse(err.body())
        elif job.future is None or job.future.cancelled():
            yield _sse(APIError(503, "the server is shutting down", type="server_error").body())
        else:
            yield _sse(
                {**envelope(job, obj, created), "choices": [choice(None, job.finish_reason)]}
            )
            if params.include_usage:
                yield _sse({**envelope(job, obj, created), "choices": [], "usage": job.usage()})
        yield "data: [DONE]\n\n"

    # ------------------------------------------------------------------ endpoints
    async def completions(request: Request) -> Response:
        body = await _read_json(request, max_body_bytes)
        check_model(body)
        params = _Params(body, default_max_tokens)
        ids = await run_in_threadpool(prompt_ids, body)
        job = start("completion", ids, params)

        def choice(text: str | None, finish: str | None) -> dict[str, Any]:
            return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}

        if params.stream:
            return _EventStream(events(job, params, "text_completion", choice, None), job)
        await collect(job, request)
        return JSONResponse(
            {
                **envelope(job, "text_completion", int(time.time())),
                "choices": [choice("".join(job.pieces), job.finish_reason)],
                "usage": job.usage(),
            }
        )

    async def chat_completions(request: Request) -> Response:
        body = await _read_json(request, max_body_bytes)
        check_model(body)
        params = _Params(body, None)
        ids = await run_in_threadpool(chat_ids, body)
        job = start("chat", ids, params)

        def delta(text: str | None, finish: str | None) -> dict[str, Any]:
            d = {} if text is None else {"content": text}
            return {"index": 0, "delta": d, "logprobs": None, "finish_reason": finish}

        if params.stream:
            first = {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
            return _EventStream(events(job, params, "chat.completion.chunk", delta, first), job)
        await collect(job, request)
        message = {"role": "assistant", "content": "".join(job.pieces)}
        return JSONResponse(
            {
                **envelope(job, "chat.completion", int(time.time())),
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": job.finish_reason,
                    }
                ],
                "usage": job.usage(),
            }
        )

    def model_card() -> dict[str, Any]:
        return {
            "id": model_name,
            "object": "model",
            "created": state.created,
            "owned_by": "bitnet",
            "context_length": n_ctx,
        }

    async def list_models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [model_card()]})

    async def get_model(request: Request) -> Response:
        check_model({"model": request.path_params["model"]})
        return JSONResponse(model_card())

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    # ------------------------------------------------------------------ errors
    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, APIError)
        return exc.response()

    async def on_disconnect(request: Request, exc: Exception) -> Response:
        return Response(status_code=400)  # nobody reads it

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        where = f"{request.method} {request.url.path}"
        if exc.status_code == 404:
            err = APIError(404, f"unknown URL: {where}", code="unknown_url")
        elif exc.status_code == 405:
            allow = (exc.headers or {}).get("Allow", "")
            err = APIError(
                405, f"method not allowed: {where} (allowed: {allow})", code="method_not_allowed"
            )
        else:
            err = APIError(exc.status_code, str(exc.detail))
        err.headers.update(exc.headers or {})
        return err.response()

    async def on_internal_error(request: Request, exc: Exception) -> Response:
        return APIError(
            500, f"internal server error: {type(exc).__name__}: {exc}", type="server_error"
        ).response()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            state.close()

    app = Starlette(
        routes=[
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/models/{model:path}", get_model, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ],
        exception_handlers={
            APIError: on_api_error,
            ClientDisconnect: on_disconnect,
            HTTPException: on_http_error,
            Exception: on_internal_error,
        },
        lifespan=lifespan,
    )
    app.state.server = state
    return app
