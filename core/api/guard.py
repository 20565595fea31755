"""What every request passes before routing: the API key and the body's size.

A pure ASGI middleware, not Starlette's BaseHTTPMiddleware (which runs each request
through a task and memory streams): one pass over the headers, and a count of the
body's bytes as the app reads them, so a body over MAX_BODY_BYTES is never held whole;
what the app leaves of a body unread is drained before its answer ends (Body).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Open without the key: a load balancer's probe and Prometheus's scrape.
OPEN_PATHS = frozenset({"/health", "/metrics"})
KEY_HEADER = b"x-api-key"

# An answer waits at most this long while the part of the body the app left unread is
# read and dropped (nginx's lingering close); a body over Guard.drain bytes in all
# (4 x MAX_BODY_BYTES, at least DRAIN_MIN_BYTES) is cut instead.
DRAIN_SECONDS = 3.0
DRAIN_MIN_BYTES = 8 * 2**20


class Guard:
    def __init__(self, app: ASGIApp, *, api_key: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.key = api_key.encode() if api_key else None
        self.limit = max_body_bytes
        self.drain = max(4 * max_body_bytes, DRAIN_MIN_BYTES)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length: bytes | None = None
        given = b""
        chunked = waits = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == KEY_HEADER:
                given = value
            elif name == b"transfer-encoding":
                chunked = value.lower() == b"chunked"
            elif name == b"expect":  # the client sends the body only once told to go on
                waits = value.lower() == b"100-continue"
        # (The HTTP server has refused a Content-Length that is not a number.)
        declared = int(length) if length is not None and length.isdigit() else 0
        body = Body(self, receive, send,
                    unread=not waits and (chunked or 0 < declared <= self.drain))
        if self.key is not None and scope["path"] not in OPEN_PATHS and not hmac.compare_digest(
                given, self.key):
            return await _answer(body.send, 401, "missing or wrong X-API-Key header",
                                 (b"www-authenticate", b"X-API-Key"))
        if declared > self.limit:
            return await _answer(body.send, 413, self.too_large())
        await self.app(scope, body.receive, body.send)

    def too_large(self) -> str:
        return f"request body over MAX_BODY_BYTES ({self.limit} bytes)"


class Body:
    """One request's body between the server and the app. Past the limit (a chunked
    body has no Content-Length to check first) the app's read raises an HTTPException,
    which FastAPI answers as a 413. Whatever the answer, the part of the body the app
    left unread is read and dropped before the answer's last bytes go, within
    DRAIN_SECONDS and Guard.drain bytes: a server that closes the connection (as it does
    after answering a client that asked for Connection: close, like urllib) with bytes
    unread has its kernel reset it, and a client that writes its whole body before
    reading then gets that reset instead of the answer. A body larger or slower than
    that is still cut; one whose client awaits 100 Continue was never sent."""

    def __init__(self, guard: Guard, receive: Receive, send: Send, *, unread: bool) -> None:
        self.guard = guard
        self._receive = receive
        self._send = send
        self.unread = unread
        self.seen = 0

    async def receive(self) -> Message:
        message = await self._receive()
        self.unread = message["type"] == "http.request" and message.get("more_body", False)
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if self.seen > self.guard.limit:
                raise HTTPException(413, self.guard.too_large())
        return message

    async def send(self, message: Message) -> None:
        if self.unread and message["type"] == "http.response.body" and not message.get(
                "more_body", False):
            await self._drained()
        await self._send(message)

    async def _drained(self) -> None:
        self.unread = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_SECONDS):
                while self.seen <= self.guard.drain:
                    message = await self._receive()
                    if message["type"] != "http.request" or not message.get("more_body"):
                        return
                    self.seen += len(message.get("body", b""))


async def _answer(send: Send, status: int, detail: str, *headers: tuple[bytes, bytes]) -> None:
    body = json.dumps({"detail": detail}).encode()
    head: list[Any] = [(b"content-type", b"application/json"),
                       (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})
