"""``bitnet serve``: the OpenAI-compatible server, run for real (uvicorn on 127.0.0.1, a free
port, a background thread) over the packaged default model and talked to with httpx.

Every generated text is compared with :class:`bitnet.Model` called directly on a second
instance of the same model file (same weights, so greedy and seeded sampling give the same
tokens): non-streamed, streamed, concurrent. Queue-full and disconnect-while-queued cases use a
model wrapper whose streams wait on a gate, so "one is generating, one is waiting" is a fact of
the test, not of timing.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")
uvicorn = pytest.importorskip("uvicorn")

from bitnet.cli import build_parser  # noqa: E402
from bitnet.commands import serve as serve_cmd  # noqa: E402
from bitnet.model import Model  # noqa: E402
from bitnet.serve import create_app  # noqa: E402

PROMPT = "To be, or not to be"
NAME = "default"
BODY_LIMIT = 64 * 1024


# ----------------------------------------------------------------------------- harness
class Server:
    """A uvicorn server for ``app`` on 127.0.0.1 (a free port) in a daemon thread."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.state = app.state.server
        sock = serve_cmd.bind("127.0.0.1", 0)
        self.url = serve_cmd.url(sock)
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class GatedModel:
    """The real model, except that its streams wait for :attr:`gate` before their first
    piece (and say when a stream has reached it, :attr:`entered`)."""

    def __init__(self, model: Model) -> None:
        self._model = model
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.fail = False  # streams raise instead (an engine failure)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def stream(self, *args: Any, **kwargs: Any) -> Any:
        owner = self
        inner = self._model.stream(*args, **kwargs)

        class Gated:
            def __iter__(self) -> Iterator[str]:
                return self

            def __next__(self) -> str:
                owner.entered.set()
                assert owner.gate.wait(20)
                if owner.fail:
                    raise RuntimeError("the engine exploded")
                return next(inner)

            def __getattr__(self, name: str) -> Any:
                return getattr(inner, name)

        return Gated()


def sse(lines: Iterable[str]) -> list[Any]:
    """The payloads of an SSE body: JSON objects, and the final ``"[DONE]"``."""
    out: list[Any] = []
    for line in lines:
        if not line:
            continue
        assert line.startswith("data: "), line
        data = line[len("data: ") :]
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def finished(state: Any, rid: str) -> dict[str, Any] | None:
    return next((r for r in state.recent if r["id"] == rid), None)


@pytest.fixture(scope="module")
def ref() -> Model:
    """The reference: the same model file, a separate instance (its own KV cache and lock)."""
    return Model.load()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    s = Server(create_app(Model.load(), model_name=NAME, max_queue=8, max_body_bytes=BODY_LIMIT))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[Any]:
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def gated() -> Iterator[tuple[Server, GatedModel]]:
    model = GatedModel(Model.load())
    s = Server(create_app(model, model_name=NAME, max_queue=1))
    yield s, model
    model.gate.set()
    s.stop()


def check_error(r: Any, status: int, param: str | None, code: str | None, match: str) -> None:
    """An OpenAI-style error body with these fields."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["param"] == param and err["code"] == code, err
    assert err["type"] == ("server_error" if status >= 500 else "invalid_request_error")
    assert re.search(match, err["message"]), err["message"]


# ----------------------------------------------------------------------------- basics
def test_health_and_models(client: Any) -> None:
    r = client.get("/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = client.get("/v1/models")
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list" and [m["id"] for m in body["data"]] == [NAME]
    card = body["data"][0]
    assert card["object"] == "model" and isinstance(card["created"], int)
    assert client.get(f"/v1/models/{NAME}").json() == card
    check_error(client.get("/v1/models/gpt-4"), 404, "model", "model_not_found", "gpt-4")


def test_completion_greedy(client: Any, ref: Model) -> None:
    t0 = int(time.time())
    r = client.post(
        "/v1/completions",
        json={"model": NAME, "prompt": PROMPT, "max_tokens": 24, "temperature": 0},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    want = ref.stream(PROMPT, max_new_tokens=24, temperature=0)
    text = "".join(want)
    assert body["id"].startswith("cmpl-") and body["object"] == "text_completion"
    assert body["model"] == NAME and t0 <= body["created"] <= time.time() + 1
    (choice,) = body["choices"]
    assert choice["index"] == 0 and choice["text"] == text and text
    assert choice["finish_reason"] == {"context": "length"}.get(
        want.finish_reason, want.finish_reason
    )
    p, c = len(want.prompt_ids), len(want.token_ids)
    assert body["usage"] == {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
    # The other prompt forms: a list of one string, token ids, a list of one list of ids.
    for prompt in ([PROMPT], want.prompt_ids, [want.prompt_ids]):
        r = client.post(
            "/v1/completions", json={"prompt": prompt, "max_tokens": 24, "temperature": 0}
        )
        assert r.status_code == 200 and r.json()["choices"][0]["text"] == text


def test_completion_sampling_options(client: Any, ref: Model) -> None:
    opts = dict(
        temperature=1.1,
        top_k=20,
        top_p=0.9,
        min_p=0.02,
        repetition_penalty=1.15,
        frequency_penalty=0.3,
        presence_penalty=0.2,
        seed=11,
    )
    body = {"prompt": PROMPT, "max_tokens": 40, "stop": ["\n"], **opts}
    got = [client.post("/v1/completions", json=body).json() for _ in range(2)]
    want = ref.generate(PROMPT, max_new_tokens=40, stop=["\n"], **opts)
    assert got[0]["choices"][0]["text"] == got[1]["choices"][0]["text"] == want
    assert "\n" not in want
    # Omitted fields take the model's defaults; max_tokens defaults to 16 (OpenAI's).
    r = client.post("/v1/completions", json={"prompt": PROMPT, "seed": 3}).json()
    assert r["choices"][0]["text"] == ref.generate(PROMPT, max_new_tokens=16, seed=3)
    assert r["usage"]["completion_tokens"] <= 16


def test_chat_completion(client: Any, ref: Model) -> None:
    messages = [
        {"role": "system", "content": "Speak as the Prince."},
        {"role": "user", "content": "Who art thou?"},
    ]
    r = client.post(
        "/v1/chat/completions",
        json={"model": NAME, "messages": messages, "max_tokens": 30, "temperature": 0},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    want = ref.chat(messages, max_new_tokens=30, temperature=0, reuse_cache=False)
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"
    (choice,) = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": want}
    assert choice["finish_reason"] in ("stop", "length")
    tok = ref.tokenizer
    assert tok is not None
    n_prompt = len(tok.encode(tok.apply_chat_template(messages), add_bos=False))
    assert body["usage"]["prompt_tokens"] == n_prompt
    assert body["usage"]["total_tokens"] == n_prompt + body["usage"]["completion_tokens"]
    # Text content parts, "developer" (= system) and max_completion_tokens mean the same.
    parts = [
        {"role": "developer", "content": [{"type": "text", "text": "Speak as the Prince."}]},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Who art "}, {"type": "text", "text": "thou?"}],
        },
    ]
    r = client.post(
        "/v1/chat/completions",
        json={"messages": parts, "max_completion_tokens": 30, "temperature": 0},
    )
    assert r.json()["choices"][0]["message"]["content"] == want


# ----------------------------------------------------------------------------- streaming
def test_stream_completion(client: Any) -> None:
    body = {"prompt": PROMPT, "max_tokens": 32, "temperature": 0.7, "seed": 5}
    whole = client.post("/v1/completions", json=body).json()
    with client.stream(
        "POST",
        "/v1/completions",
        json={**body, "stream": True, "stream_options": {"include_usage": True}},
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse(r.iter_lines())
    assert events[-1] == "[DONE]"
    chunks, usage = events[:-2], events[-2]
    assert usage["choices"] == [] and usage["usage"] == whole["usage"]
    assert len({c["id"] for c in events[:-1]}) == 1 and chunks[0]["id"].startswith("cmpl-")
    assert all(c["object"] == "text_completion" and c["model"] == NAME for c in chunks)
    assert len(chunks) > 2  # pieces arrive one by one
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    text = "".join(c["choices"][0]["text"] for c in chunks)
    assert text == whole["choices"][0]["text"]


def test_stream_chat(client: Any) -> None:
    body = {"messages": [{"role": "user", "content": "Good morrow!"}], "max_tokens": 24}
    body |= {"temperature": 0}
    whole = client.post("/v1/chat/completions", json=body).json()
    with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
        assert r.status_code == 200
        events = sse(r.iter_lines())
    assert events[-1] == "[DONE]"
    chunks = events[:-1]  # no usage chunk unless asked
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0]["delta"] == {}
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == whole["choices"][0]["message"]["content"]


# ----------------------------------------------------------------------------- bad requests
C, CHAT = "/v1/completions", "/v1/chat/completions"
BAD: list[tuple[str, Any, int, str | None, str | None, str]] = [
    # (path, body (bytes: sent raw), status, param, code, message pattern)
    (C, b"{not json", 400, None, "invalid_json", "not valid JSON"),
    (C, b"", 400, None, "invalid_json", "empty"),
    (C, b"\xff\xfe\x00", 400, None, "invalid_json", "not valid JSON"),
    (C, [1, 2], 400, None, "invalid_json", "must be a JSON object, got list"),
    (C, {}, 400, "prompt", "missing_required_parameter", "'prompt' is required"),
    (C, {"prompt": 5}, 400, "prompt", "invalid_type", "'prompt' must be a string"),
    (C, {"prompt": ""}, 400, "prompt", "invalid_value", "'prompt' is empty"),
    (C, {"prompt": ["a", "b"]}, 400, "prompt", "unsupported_value", "holds 2 prompts"),
    (C, {"prompt": [1, 99999]}, 400, "prompt", "invalid_value", r"token 1 = 99999 is not in"),
    (C, {"prompt": "x", "max_tokens": "9"}, 400, "max_tokens", "invalid_type", "integer"),
    (C, {"prompt": "x", "max_tokens": -1}, 400, "max_tokens", "invalid_value", r"\[0, "),
    (C, {"prompt": "x", "n": 2}, 400, "n", "unsupported_value", "'n' must be 1"),
    (C, {"prompt": "x", "temperature": -0.5}, 400, "temperature", "invalid_value", ">= 0"),
    (C, {"prompt": "x", "temperature": "hot"}, 400, "temperature", "invalid_type", "number"),
    (C, {"prompt": "x", "top_p": 0}, 400, "top_p", "invalid_value", r"\(0, 1\]"),
    (C, {"prompt": "x", "top_k": 1.5}, 400, "top_k", "invalid_type", "integer"),
    (C, {"prompt": "x", "presence_penalty": 3}, 400, "presence_penalty", "invalid_value", "2"),
    (C, {"prompt": "x", "seed": -1}, 400, "seed", "invalid_value", "seed"),
    (C, {"prompt": "x", "stop": [1]}, 400, "stop", "invalid_type", "list of strings"),
    (C, {"prompt": "x", "stop": [""]}, 400, "stop", "invalid_value", "empty"),
    (C, {"prompt": "x", "stream": "yes"}, 400, "stream", "invalid_type", "true or false"),
    (C, {"prompt": "x", "stream_options": {}}, 400, "stream_options", "invalid_value", "stream"),
    (C, {"prompt": "x", "logprobs": 5}, 400, "logprobs", "unsupported_parameter", "not supp"),
    (C, {"prompt": "x", "echo": True}, 400, "echo", "unsupported_parameter", "not supported"),
    (C, {"prompt": "x", "model": "gpt-4"}, 404, "model", "model_not_found", "'gpt-4' does not"),
    (C, {"prompt": "x", "model": 7}, 400, "model", "invalid_type", "string"),
    (C, {"prompt": "word " * 3000}, 400, "prompt", "context_length_exceeded", "context of"),
    (C, {"prompt": "a" * BODY_LIMIT}, 413, None, "request_too_large", str(BODY_LIMIT)),
    (CHAT, {}, 400, "messages", "missing_required_parameter", "'messages' is required"),
    (CHAT, {"messages": []}, 400, "messages", "invalid_type", "non-empty list"),
    (CHAT, {"messages": ["hi"]}, 400, "messages", "invalid_type", r"messages\[0\] must be"),
    (
        CHAT,
        {"messages": [{"role": "robot", "content": "x"}]},
        400,
        "messages",
        "invalid_value",
        "role",
    ),
    (
        CHAT,
        {"messages": [{"role": "user", "content": 5}]},
        400,
        "messages",
        "invalid_type",
        "content",
    ),
    (
        CHAT,
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
        400,
        "messages",
        "unsupported_value",
        "only",
    ),
    (
        CHAT,
        {"messages": [{"role": "user", "content": "x"}], "tools": [{}]},
        400,
        "tools",
        "unsupported_parameter",
        "tools",
    ),
    (
        CHAT,
        {"messages": [{"role": "user", "content": "word " * 3000}]},
        400,
        "messages",
        "context_length_exceeded",
        "tokens long",
    ),
]


@pytest.mark.parametrize(("path", "body", "status", "param", "code", "match"), BAD)
def test_bad_request(
    client: Any,
    server: Server,
    path: str,
    body: Any,
    status: int,
    param: str | None,
    code: str | None,
    match: str,
) -> None:
    before = dict(server.state.stats)
    if isinstance(body, bytes):
        r = client.post(path, content=body, headers={"content-type": "application/json"})
    else:
        r = client.post(path, json=body)
    check_error(r, status, param, code, match)
    assert dict(server.state.stats) == before  # rejected before reaching the model


def test_unknown_route_and_method(client: Any) -> None:
    check_error(client.post("/v1/embeddings", json={}), 404, None, "unknown_url", "/v1/embeddings")
    r = client.get("/v1/completions")
    check_error(r, 405, None, "method_not_allowed", "GET /v1/completions")
    assert "POST" in r.headers["allow"]


# ----------------------------------------------------------------------------- concurrency
def test_concurrent_requests(client: Any, server: Server, ref: Model) -> None:
    jobs = [(PROMPT, 1), ("Now is the winter", 2), ("My lord", 3), ("O Romeo", 4)]
    barrier = threading.Barrier(len(jobs))
    results: dict[int, Any] = {}

    def one(i: int) -> None:
        prompt, seed = jobs[i]
        body = {"prompt": prompt, "max_tokens": 24, "seed": seed, "temperature": 0.9}
        barrier.wait()
        if i % 2:  # half of them streamed
            with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
                results[i] = (
                    r.status_code,
                    "".join(e["choices"][0]["text"] for e in sse(r.iter_lines())[:-1]),
                )
        else:
            r = client.post("/v1/completions", json=body)
            results[i] = (r.status_code, r.json()["choices"][0]["text"])

    rejected = server.state.stats["rejected"]
    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for i, (prompt, seed) in enumerate(jobs):
        want = ref.generate(prompt, max_new_tokens=24, seed=seed, temperature=0.9)
        assert results[i] == (200, want), i
    assert server.state.stats["rejected"] == rejected and server.state.pending == 0
    assert server.state.peak_pending >= 2  # they did overlap: some waited in the queue


def test_queue_full(gated: tuple[Server, GatedModel], ref: Model) -> None:
    srv, model = gated
    state = srv.state
    body = {"prompt": PROMPT, "max_tokens": 12, "temperature": 0}
    want = ref.generate(PROMPT, max_new_tokens=12, temperature=0)
    model.gate.clear()
    model.entered.clear()
    results: list[Any] = []
    with httpx.Client(base_url=srv.url, timeout=60) as c:

        def post() -> None:
            r = c.post("/v1/completions", json=body)
            results.append((r.status_code, r.json()["choices"][0]["text"]))

        running = threading.Thread(target=post)
        running.start()
        wait_for(model.entered.is_set, "the first generation to start")
        waiting = threading.Thread(target=post)
        waiting.start()
        wait_for(lambda: state.pending == 2, "the second request to queue")
        # max_queue=1: one generating + one waiting; the next ones are refused, streamed or not.
        for extra in ({}, {"stream": True}):
            r = c.post("/v1/completions", json={**body, **extra})
            check_error(r, 503, None, "queue_full", r"busy.*max_queue=1")
            assert r.headers["retry-after"] == "1"
        # Bad requests are still told so while the queue is full.
        check_error(
            c.post("/v1/completions", json={"n": 3, "prompt": "x"}),
            400,
            "n",
            "unsupported_value",
            "",
        )
        model.gate.set()
        running.join(30)
        waiting.join(30)
        assert results == [(200, want), (200, want)]
        assert state.stats["rejected"] == 2 and state.pending == 0
        r = c.post("/v1/completions", json=body)  # the queue has drained
        assert r.status_code == 200 and r.json()["choices"][0]["text"] == want


def test_client_disconnects_mid_stream(client: Any, server: Server, ref: Model) -> None:
    n_ctx = ref.n_ctx
    prompt_ids = ref.tokenizer.encode(PROMPT)  # type: ignore[union-attr]
    budget = n_ctx - len(prompt_ids)
    body = {"prompt": PROMPT, "max_tokens": budget, "temperature": 1.0, "seed": 4, "top_k": 0}
    body |= {"min_p": 0.0, "top_p": 1.0}
    # Precondition: undisturbed, this generation runs to its full budget (no early EOS).
    full = ref.stream(
        PROMPT, max_new_tokens=budget, temperature=1.0, seed=4, top_k=0, min_p=0.0, top_p=1.0
    )
    "".join(full)
    assert len(full.token_ids) == budget and budget > 100
    t0 = time.perf_counter()
    with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
        lines = r.iter_lines()
        first = json.loads(next(line for line in lines if line)[len("data: ") :])
        rid = first["id"]
    # Leaving the block closed the connection mid-stream: the server stops that generation.
    wait_for(lambda: finished(server.state, rid) is not None, "the generation to end")
    took = time.perf_counter() - t0
    rec = finished(server.state, rid)
    assert rec is not None and rec["cancelled"] and rec["finish_reason"] is None
    assert rec["completion_tokens"] < budget // 2, (rec, took)  # stopped within ~1 token
    # The model is free: the next request is served at once and gives the reference text.
    assert client.get("/health").json() == {"status": "ok"}
    r = client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 16, "temperature": 0})
    assert r.json()["choices"][0]["text"] == ref.generate(PROMPT, max_new_tokens=16, temperature=0)


def test_client_gone_while_waiting(gated: tuple[Server, GatedModel]) -> None:
    """A non-streamed request whose client times out is cancelled: its generation stops at
    the first piece, and the model serves the next request."""
    srv, model = gated
    model.gate.clear()
    model.entered.clear()
    body = {"prompt": PROMPT, "max_tokens": 50, "temperature": 0}
    with httpx.Client(base_url=srv.url, timeout=0.3) as c, pytest.raises(httpx.ReadTimeout):
        c.post("/v1/completions", json=body)
    before = srv.state.stats["cancelled"]
    assert model.entered.wait(5)
    # The server notices the closed connection and cancels the job (still held at the gate).
    wait_for(lambda: any(j.cancel_flag.is_set() for j in srv.state._jobs), "the cancel request")
    model.gate.set()
    wait_for(lambda: srv.state.stats["cancelled"] == before + 1, "the cancellation")
    rec = srv.state.recent[-1]
    assert rec["cancelled"] and rec["completion_tokens"] <= 1
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        r = c.post("/v1/completions", json={**body, "max_tokens": 4})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1


def test_generation_failure(gated: tuple[Server, GatedModel]) -> None:
    """A failure inside the model is a 500 (non-streamed) or an error event before [DONE]
    (streamed, the 200 already sent); the server carries on."""
    srv, model = gated
    model.gate.set()
    model.fail = True
    failed = srv.state.stats["failed"]
    body = {"prompt": PROMPT, "max_tokens": 4}
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            r = c.post("/v1/completions", json=body)
            check_error(r, 500, None, None, "generation failed: RuntimeError: the engine exploded")
            with c.stream(
                "POST",
                "/v1/chat/completions",
                json={"messages": [{"role": "user", "content": "hi"}], "stream": True},
            ) as r:
                assert r.status_code == 200
                events = sse(r.iter_lines())
            assert events[0]["choices"][0]["delta"]["role"] == "assistant"
            assert events[-1] == "[DONE]"
            err = events[-2]["error"]
            assert err["type"] == "server_error" and "the engine exploded" in err["message"]
            assert srv.state.stats["failed"] == failed + 2
            model.fail = False
            r = c.post("/v1/completions", json=body)
            assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1
    finally:
        model.fail = False


# ----------------------------------------------------------------------------- CLI
def test_cli_parser() -> None:
    a = build_parser().parse_args(["serve"])
    assert (a.model, a.host, a.port, a.max_queue, a.model_name) == (
        None,
        "127.0.0.1",
        8000,
        16,
        None,
    )
    assert a.func is serve_cmd.run
    a = build_parser().parse_args(
        ["serve", "-m", "x.gguf", "--host", "0.0.0.0", "--port", "0", "--threads", "2"]
        + ["--ctx", "128", "--max-queue", "0", "--model-name", "mine"]
    )
    assert (a.model, a.host, a.port, a.threads, a.ctx, a.max_queue) == (
        "x.gguf",
        "0.0.0.0",
        0,
        2,
        128,
        0,
    )
    assert serve_cmd.model_name(a, None) == "mine"
    a.model_name = None
    a.model = "owner/repo"
    assert serve_cmd.model_name(a, None) == "owner/repo"
    for bad in (["--port", "70000"], ["--port", "x"], ["--max-queue", "-1"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["serve", *bad])


def test_create_app_arguments(ref: Model) -> None:
    with pytest.raises(ValueError, match="max_queue must be an integer >= 0"):
        create_app(ref, max_queue=-1)
    with pytest.raises(ValueError, match="max_body_bytes"):
        create_app(ref, max_body_bytes=0)
    with pytest.raises(ValueError, match="model_name"):
        create_app(ref, model_name="")
    assert create_app(ref).state.server.model_name == "default"  # the file's stem


def test_cli_serves() -> None:
    """``bitnet serve --port 0`` prints its URL and answers there until terminated."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), HF_HUB_OFFLINE="1")
    env.pop("BITNET_DEBUG", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bitnet.cli", "serve", "--port", "0", "--log-level", "warning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"at (http://127\.0\.0\.1:\d+) ", line)
        assert m, line + (proc.stderr.read() if proc.stderr else "")
        with httpx.Client(base_url=m.group(1), timeout=30) as c:
            wait_for(lambda: _up(c), "the CLI server", 30)
            assert c.get("/v1/models").json()["data"][0]["id"] == "default"
            r = c.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 4})
            assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: a graceful stop, exit status 0
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "stopped" in out


def _up(c: Any) -> bool:
    try:
        return c.get("/health").status_code == 200
    except httpx.TransportError:
        return False


def test_cli_port_in_use() -> None:
    sock = serve_cmd.bind("127.0.0.1", 0)
    try:
        port = sock.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            serve_cmd.bind("127.0.0.1", port)
    finally:
        sock.close()
