"""The webhook app as gunicorn's event loop serves it: slow clients cost a coroutine, never a
thread or a worker.

Gunicorn's ASGI worker reads connections on an event loop; ``BufferedRequests`` reads each
request's body whole there (at most ``max_body_bytes``, within ``body_timeout`` seconds),
and only then hands the complete request to the Flask app on a bounded thread pool
(``ThreadedWSGI``). A client that trickles its headers is cut off by ``Worker``
after ``header_timeout`` seconds; one that trickles its body, after ``body_timeout``.
"""
from __future__ import annotations

import asyncio
import contextvars
import functools
import io
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from a2wsgi.wsgi import build_environ
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
    event loop, then run on one of ``threads`` threads."""
    return BufferedRequests(ThreadedWSGI(app, threads=threads),
                            max_body_bytes=max_body_bytes, body_timeout=body_timeout)


class ThreadedWSGI:
    """A WSGI app as an ASGI app, for requests whose body has already arrived whole: the app
    runs on one of ``threads`` threads and its whole response is sent from the event loop
    once it has finished. One hand-over each way per request (a streaming bridge, such as
    a2wsgi's, which this replaces, crosses between the thread and the loop for the body's
    reads and for each part of the answer, several times per request)."""

    def __init__(self, app: Callable[..., Iterable[bytes]], *, threads: int) -> None:
        self.app = app
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="wsgi")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # nothing to start or stop
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        message = await receive()  # the whole body (BufferedRequests)
        body = message.get("body", b"") if message["type"] == "http.request" else b""
        environ = build_environ(scope, io.BytesIO(body))  # type: ignore[arg-type]
        context = contextvars.copy_context()
        status, headers, content = await asyncio.get_running_loop().run_in_executor(
            self.executor, functools.partial(context.run, self._respond, environ))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    def _respond(self, environ: Mapping[str, Any]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Run the app on ``environ``: its status, headers and whole body."""
        started: list[Any] = []
        chunks: list[bytes] = []

        def start_response(status: str, headers: list[tuple[str, str]],
                           exc_info: Any = None) -> Callable[[bytes], None]:
            if exc_info is not None and started:  # PEP 3333: too late to change the answer
                raise exc_info[1].with_traceback(exc_info[2])
            started[:] = [status, headers]
            return chunks.append

        answer = self.app(environ, start_response)
        try:
            chunks.extend(answer)
        finally:
            close = getattr(answer, "close", None)
            if close is not None:
                close()
        status, headers = started
        return (int(status.split(" ", 1)[0]),
                [(name.strip().lower().encode("latin1"), value.strip().encode("latin1"))
                 for name, value in headers],
                b"".join(chunks))


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
