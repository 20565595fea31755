"""What every request passes before routing: the API key and the body's size.

A pure ASGI middleware, not Starlette's BaseHTTPMiddleware (which runs each request
through a task and memory streams): one pass over the headers, and a count of the
body's bytes as the app reads them, so a body over MAX_BODY_BYTES is never held whole.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Open without the key: a load balancer's probe and Prometheus's scrape.
OPEN_PATHS = frozenset({"/health", "/metrics"})
KEY_HEADER = b"x-api-key"


class Guard:
    def __init__(self, app: ASGIApp, *, api_key: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.key = api_key.encode() if api_key else None
        self.limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length: bytes | None = None
        given = b""
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == KEY_HEADER:
                given = value
        if self.key is not None and scope["path"] not in OPEN_PATHS and not hmac.compare_digest(
                given, self.key):
            return await _answer(send, 401, "missing or wrong X-API-Key header",
                                 (b"www-authenticate", b"X-API-Key"))
        # (The HTTP server has refused a Content-Length that is not a number.)
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await _answer(send, 413, self._too_large())
        await self.app(scope, self._counted(receive), send)

    def _too_large(self) -> str:
        return f"request body over MAX_BODY_BYTES ({self.limit} bytes)"

    def _counted(self, receive: Receive) -> Receive:
        """`receive`, refusing the body once more than the limit has come (a chunked
        body has no Content-Length to check first): the app's body read raises an
        HTTPException, which FastAPI answers as a 413."""
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise HTTPException(413, self._too_large())
            return message

        return counted


async def _answer(send: Send, status: int, detail: str, *headers: tuple[bytes, bytes]) -> None:
    body = json.dumps({"detail": detail}).encode()
    head: list[Any] = [(b"content-type", b"application/json"),
                       (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})
