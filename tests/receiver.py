"""Local receivers on loopback for the outbox worker: an HTTP one that records what it is
sent, and a raw one that answers whatever bytes a test gives it."""
from __future__ import annotations

import json
import socketserver
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

OUTBOUND = Path(__file__).parent / "fixtures" / "outbound"
# What a platform's send API answers when it accepts, by the end of its path (a published
# body, tests/fixtures/outbound); any other URL is answered {"ok": true}.
ACCEPTED = {"/sendMessage": OUTBOUND / "telegram" / "send_success.json",
            "/send_message": OUTBOUND / "viber" / "send_success_docs.json"}


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: Any
    at: float = field(default_factory=time.monotonic)  # when it arrived
    answered: int = 0  # the status it was answered with


# (status, body, delay) or (status, body, delay, headers)
Reply = tuple[int, Any, float] | tuple[int, Any, float, dict[str, str]]


def accepted(delivery: Delivery, count: int) -> Reply:
    """The answer of a platform that accepts the call (the default ``respond``)."""
    path = delivery.path.split("?")[0]
    found = next((body for end, body in ACCEPTED.items() if path.endswith(end)), None)
    return 200, json.loads(found.read_bytes()) if found else {"ok": True}, 0


@dataclass
class Receiver:
    """Records deliveries; ``respond(delivery, count_for_key)`` picks the Reply."""

    url: str = ""
    deliveries: list[Delivery] = field(default_factory=list)
    respond: Callable[[Delivery, int], Reply] = accepted
    lock: threading.Lock = field(default_factory=threading.Lock)

    def keys(self) -> Counter[str]:
        with self.lock:
            return Counter(d.headers.get("Idempotency-Key", "") for d in self.deliveries)


@contextmanager
def receiving(respond: Callable[[Delivery, int], Reply] | None = None, *,
              tls: ssl.SSLContext | None = None) -> Iterator[Receiver]:
    """A receiver on 127.0.0.1 (over TLS with ``tls``, a server context)."""
    receiver = Receiver()
    if respond is not None:
        receiver.respond = respond

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            delivery = Delivery(self.path, dict(self.headers), json.loads(raw) if raw else None)
            with receiver.lock:
                receiver.deliveries.append(delivery)
                seen = sum(1 for d in receiver.deliveries
                           if d.headers.get("Idempotency-Key") == delivery.headers.get("Idempotency-Key"))
            status, body, delay, *more = receiver.respond(delivery, seen)
            delivery.answered = status
            time.sleep(delay)
            payload = body if isinstance(body, bytes) else json.dumps(body).encode()
            try:
                self.send_response(status)
                for name, value in (more[0] if more else {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:
                pass  # the sender went away (killed mid-delivery)

        do_POST = do_PUT = do_PATCH = do_DELETE = do_GET = _handle

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    receiver.url = f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def answering(raw: bytes) -> Iterator[str]:
    """A server that reads a request's head, writes ``raw`` and hangs up; yields its URL."""

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            self.wfile.write(raw)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def said(row: dict[str, Any]) -> str | None:
    """What an outbox row's error says (a row as the API shows it, or as stored)."""
    if "error" in row:
        return row["error"]["message"] if row["error"] else None
    return row["error_message"]
