"""``bitnet.serve``: an OpenAI-compatible HTTP server for a loaded :class:`bitnet.Model`.

::

    import uvicorn
    import bitnet
    from bitnet.serve import create_app

    app = create_app(bitnet.Model.load(), model_name="default", max_queue=16)
    uvicorn.run(app, host="127.0.0.1", port=8000)

Endpoints: ``POST /v1/completions``, ``POST /v1/chat/completions`` (both with SSE streaming),
``GET /v1/models``, ``GET /v1/models/{model}``, ``GET /health``. The CLI is ``bitnet serve``;
docs/serving.md describes the parameters, errors and limits. Needs the ``serve`` extra
(starlette, uvicorn).
"""

from __future__ import annotations

from .app import APIError, ServerState, create_app

__all__ = ["APIError", "ServerState", "create_app"]
