"""Making one outbound call, and what came of it (a ``Verdict``): the answer as the channel
reads it, or what the failure to get one means (permanent, or worth another attempt).

URLs the operator configures (channel send APIs, ``RULES_ENGINE_SEND_URL``) are called as
they are, through the environment's proxy if one is set; a URL written in a rule connects
directly, and only to an address the AddressGuard accepts. Neither kind follows a redirect:
a call is a POST with a body that a redirect would either turn into a bodiless GET (301,
302, 303) or carry, with its credentials, to a place nobody configured. A 3xx answer
fails the call for good, naming where it pointed.
"""
from __future__ import annotations

import http.client
import json
import re
import ssl
import urllib.error
import urllib.request
from dataclasses import replace
from functools import partial
from typing import Any
from urllib.parse import urljoin, urlsplit

from rules_engine.domain.redaction import redact_url

from .address_guard import AddressGuard, AddressRefused
from .channels.base import Answer, AnswerKind, Outbound, Verdict, http_verdict, one_line

ANSWER_LIMIT = 65536  # bytes of an answer read
EXCERPT_LIMIT = 200  # characters of an odd answer kept in the reason
_NOT_IN_A_REQUEST_LINE = re.compile(r"[\x00-\x20\x7f]")


def origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL: where a call went, safe to record and log."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "a URL that cannot be read"
    host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}{port}"


class _GuardedConnection(http.client.HTTPConnection):
    """An HTTP connection that resolves and checks its host as it connects."""

    def __init__(self, host: str, *, guard: AddressGuard, **options: Any) -> None:
        super().__init__(host, **options)
        self.guard = guard

    def connect(self) -> None:
        self.sock = self.guard.connect(self.host, self.port, self.timeout)


class _GuardedTLSConnection(_GuardedConnection, http.client.HTTPSConnection):
    """The same over TLS, the certificate checked against the URL's host name."""

    def __init__(self, host: str, *, guard: AddressGuard, context: ssl.SSLContext,
                 **options: Any) -> None:
        super().__init__(host, guard=guard, context=context, **options)
        self.tls = context

    def connect(self) -> None:
        super().connect()
        self.sock = self.tls.wrap_socket(self.sock, server_hostname=self.host)


class _GuardedHandler(urllib.request.AbstractHTTPHandler):
    """Opens http and https URLs through guarded connections."""

    def __init__(self, guard: AddressGuard) -> None:
        super().__init__()
        self.guard = guard
        self.tls = ssl.create_default_context()

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(partial(_GuardedConnection, guard=self.guard), req)

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(partial(_GuardedTLSConnection, guard=self.guard, context=self.tls), req)

    http_request = https_request = urllib.request.AbstractHTTPHandler.do_request_


def _opener(*handlers: urllib.request.BaseHandler) -> urllib.request.OpenerDirector:
    """An opener with these handlers, and none that follows redirects: a 3xx is an error."""
    opener = urllib.request.OpenerDirector()
    for handler in (*handlers, urllib.request.HTTPDefaultErrorHandler(),
                    urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener


class Transport:
    """Makes the worker's calls; ``send`` says what became of one, never raises."""

    def __init__(self, guard: AddressGuard, *, timeout: float) -> None:
        self.timeout = timeout
        self._configured = _opener(urllib.request.ProxyHandler(), urllib.request.HTTPHandler(),
                                   urllib.request.HTTPSHandler())
        self._guarded = _opener(_GuardedHandler(guard))

    def send(self, request: Outbound) -> Verdict:
        """Make the call: the platform's answer as the request's ``classify`` reads it, or
        what the failure to get one means."""
        bad = _NOT_IN_A_REQUEST_LINE.search(request.url)
        if bad:
            return _permanent(f"the URL cannot be sent: it holds {bad.group()!r} at character "
                              f"{bad.start()}")
        opener = self._guarded if request.from_rule else self._configured
        data = None if request.body is None else json.dumps(request.body).encode()
        try:
            call = urllib.request.Request(request.url, data=data, method=request.method,
                                          headers=request.headers)
            with opener.open(call, timeout=self.timeout) as response:
                answer = Answer(response.status, response.headers, response.read(ANSWER_LIMIT))
        except urllib.error.HTTPError as error:
            return _answered(error, request)
        except (AddressRefused, OSError, http.client.HTTPException, ValueError) as error:
            return _failure(error, request)
        return _read(answer, request)


def _read(answer: Answer, request: Outbound) -> Verdict:
    """The answer as the request's ``classify`` reads it; an answer read by its status
    alone names where it came from."""
    verdict = request.classify(answer)
    if verdict.kind is AnswerKind.SENT or request.classify is not http_verdict:
        return verdict
    said = f": {verdict.message}" if verdict.message else ""
    return replace(verdict, message=f"HTTP {answer.status} from {origin(request.url)}{said}")


def _permanent(message: str) -> Verdict:
    return Verdict(AnswerKind.PERMANENT, message=message)


def _transient(message: str) -> Verdict:
    return Verdict(AnswerKind.TRANSIENT, message=message)


def _failure(error: Exception, request: Outbound) -> Verdict:
    """What a call that got no answer means for its row."""
    where = origin(request.url)
    if isinstance(error, AddressRefused):
        return _permanent(f"refused: {error}")
    if isinstance(error, urllib.error.URLError) and isinstance(error.reason, Exception):
        error = error.reason  # could not connect or send: the cause says why
    if isinstance(error, ssl.SSLCertVerificationError):
        return _permanent(f"the TLS certificate of {where} is not valid: {error.verify_message}")
    if isinstance(error, TimeoutError):
        return _transient(f"{where} timed out")
    if isinstance(error, http.client.RemoteDisconnected):
        return _transient(f"{where} closed the connection without an answer")
    if isinstance(error, http.client.IncompleteRead):
        return _transient(f"the answer from {where} was cut short")
    if isinstance(error, OSError):
        return _transient(f"cannot reach {where}: {error}")
    if isinstance(error, http.client.InvalidURL | ValueError):
        return _permanent(f"the call to {where} cannot be written ({type(error).__name__}): "
                          "its URL or a header holds what HTTP cannot carry")
    return _permanent(f"{where} does not answer HTTP ({type(error).__name__}: "
                      f"{one_line(str(error), EXCERPT_LIMIT)})")


def _answered(error: urllib.error.HTTPError, request: Outbound) -> Verdict:
    """A non-2xx answer: a redirect (never followed, named by its origin unless it answers a
    rule's URL, as the path of a channel's may hold the token), else what the request's
    ``classify`` makes of it."""
    try:
        if 300 <= error.code < 400:
            location = error.headers.get("Location")
            target = urljoin(request.url, location or "")
            shown = redact_url(target)[:300] if request.from_rule else origin(target)
            to = f" to {shown}" if location else ""
            return Verdict(AnswerKind.PERMANENT, str(error.code),
                           f"HTTP {error.code} from {origin(request.url)}: a redirect{to}, "
                           "not followed")
        try:
            body = error.read(ANSWER_LIMIT)
        except (OSError, http.client.HTTPException):
            body = b""
    finally:
        error.close()
    return _read(Answer(error.code, error.headers, body), request)
