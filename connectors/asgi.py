"""The webhook app as gunicorn's event loop serves it: slow clients cost a coroutine, never a
thread or a worker.

Gunicorn's ASGI worker reads connections on an event loop; ``BufferedRequests`` reads each
request's body whole there (at most ``max_body_bytes``, within ``body_timeout`` seconds),
and only then hands the complete request to the Flask app on a bounded thread pool
(a2wsgi's WSGI bridge). A client that trickles its headers is cut off by ``Worker``
after ``header_timeout`` seconds; one that trickles its body, after ``body_timeout``.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from gunicorn.asgi.protocol import ASGIProtocol
from gunicorn.workers import gasgi

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]  # (scope, receive, send)


def buffered_wsgi(app: Any, *, threads: int, max_body_bytes: int,
                  body_timeout: float) -> BufferedRequests:
    """The WSGI ``app`` as the ASGI app ``Worker`` serves: each request read whole on the
    event loop, then run on one of ``threads`` threads (a2wsgi)."""
    from a2wsgi import WSGIMiddleware

    return BufferedRequests(WSGIMiddleware(app, workers=threads),
                            max_body_bytes=max_body_bytes, body_timeout=body_timeout)


class BufferedRequests:
    """An ASGI middleware that reads a request's body whole before ``app`` sees it: 413
    past ``max_body_bytes`` (declared or counted), 408 past ``body_timeout`` seconds."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, body_timeout: float) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            return await _refuse(send, 413, "request_entity_too_large",
                                 f"the body is larger than {self.max_body_bytes} bytes")
        try:
            async with asyncio.timeout(self.body_timeout):
                body = await self._read(receive)
        except TimeoutError:
            return await _refuse(send, 408, "request_timeout",
                                 f"the body did not arrive within {self.body_timeout:g} s")
        except _TooLarge:
            return await _refuse(send, 413, "request_entity_too_large",
                                 f"the body is larger than {self.max_body_bytes} bytes")
        if body is None:  # the client went away: nothing to answer
            return None
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()  # only a disconnect is left to hear
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    async def _read(self, receive: Receive) -> bytes | None:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _TooLarge()
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


class _TooLarge(Exception):
    pass


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


async def _refuse(send: Send, status: int, code: str, message: str) -> None:
    """A JSON error, in the app's own shape, sent before the app ever ran."""
    import orjson

    body = orjson.dumps({"error": {"code": code, "message": message}})
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class _HeadTimeoutProtocol(ASGIProtocol):
    """Gunicorn's HTTP/1 protocol with a deadline on every request's head.

    Gunicorn arms its keep-alive timer only between requests; armed here from the moment
    a connection opens as well, it gives a client ``keepalive`` seconds to send a complete
    head, first request or next (the timer is cancelled once the head is in).
    """

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        if self._request_ready is not None:  # an HTTP/1 connection
            self._arm_keepalive_timer()


class Worker(gasgi.ASGIWorker):
    """Gunicorn's asyncio worker, serving with ``_HeadTimeoutProtocol``."""

    def init_process(self) -> None:
        gasgi.ASGIProtocol = _HeadTimeoutProtocol  # the class its server factory builds
        super().init_process()
