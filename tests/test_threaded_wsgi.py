"""The bridge from gunicorn's event loop to the Flask app (connectors.asgi.ThreadedWSGI):
the environ a WSGI app is given, and the answer it makes, sent whole."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from connectors.asgi import ThreadedWSGI

SCOPE = {"type": "http", "method": "POST", "path": "/webhooks/événements", "root_path": "",
         "query_string": b"a=1&b=%C3%A9", "http_version": "1.1", "scheme": "https",
         "server": ("127.0.0.1", 8000), "client": ("10.0.0.7", 51234),
         "headers": [(b"content-type", b"application/json"), (b"content-length", b"13"),
                     (b"x-signature-256", b"sha256=ab"), (b"x-forwarded-for", b"1.2.3.4"),
                     (b"x-forwarded-for", b"5.6.7.8")]}


def serve(app: Any, scope: dict[str, Any], body: bytes = b"") -> list[dict[str, Any]]:
    """What the bridge sends for one request whose whole ``body`` has arrived."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(ThreadedWSGI(app, threads=2)(scope, receive, send))
    return sent


def test_the_app_sees_the_request_as_wsgi_describes_it_and_its_answer_is_sent_whole():
    seen: dict[str, Any] = {}

    def app(environ, start_response):
        seen.update(environ, body=environ["wsgi.input"].read())
        write = start_response("201 Created", [("Content-Type", "text/plain"), ("X-One", " 1 ")])
        write(b"first ")  # the legacy write() callable comes before the iterable
        return [b"second ", b"third"]

    sent = serve(app, SCOPE, b'{"id": "e-1"}')
    assert seen["REQUEST_METHOD"] == "POST"
    assert seen["PATH_INFO"] == "/webhooks/événements".encode().decode("latin1")
    assert seen["QUERY_STRING"] == "a=1&b=%C3%A9"
    assert seen["wsgi.url_scheme"] == "https"
    assert (seen["SERVER_NAME"], seen["SERVER_PORT"]) == ("127.0.0.1", "8000")
    assert seen["REMOTE_ADDR"] == "10.0.0.7"
    assert seen["CONTENT_TYPE"] == "application/json" and seen["CONTENT_LENGTH"] == "13"
    assert seen["HTTP_X_SIGNATURE_256"] == "sha256=ab"
    assert seen["HTTP_X_FORWARDED_FOR"] == "1.2.3.4,5.6.7.8"  # repeated headers joined
    assert seen["body"] == b'{"id": "e-1"}'
    assert sent == [
        {"type": "http.response.start", "status": 201,
         "headers": [(b"content-type", b"text/plain"), (b"x-one", b"1")]},
        {"type": "http.response.body", "body": b"first second third"},
    ]


def test_the_answers_iterable_is_closed_even_when_reading_it_fails():
    closed = []

    class Answer:
        def __iter__(self):
            yield b"part"
            raise RuntimeError("broken while streaming")

        def close(self):
            closed.append(True)

    def app(environ, start_response):
        start_response("200 OK", [])
        return Answer()

    with pytest.raises(RuntimeError, match="broken while streaming"):
        serve(app, SCOPE)
    assert closed == [True]


def test_an_error_after_the_answer_began_cannot_change_it():
    """PEP 3333: start_response with exc_info once headers are set re-raises that error."""
    def app(environ, start_response):
        start_response("200 OK", [])
        try:
            raise ValueError("late")
        except ValueError as error:
            start_response("500 Internal Server Error", [], (type(error), error, error.__traceback__))
        return [b""]

    with pytest.raises(ValueError, match="late"):
        serve(app, SCOPE)


def test_a_lifespan_is_acknowledged_and_nothing_else_runs_the_app():
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    def app(environ, start_response):  # pragma: no cover - must not run
        raise AssertionError("the app ran for a lifespan")

    asyncio.run(ThreadedWSGI(app, threads=1)({"type": "lifespan"}, receive, send))
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]
