"""A local HTTP receiver on loopback that records what the outbox worker delivers."""
from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Receiver:
    """Records deliveries; ``respond(delivery, count_for_key)`` picks (status, body, delay)."""

    url: str = ""
    deliveries: list[Delivery] = field(default_factory=list)
    respond: Callable[[Delivery, int], tuple[int, Any, float]] = lambda d, n: (200, {"ok": True}, 0)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def keys(self) -> Counter[str]:
        with self.lock:
            return Counter(d.headers.get("Idempotency-Key", "") for d in self.deliveries)


@contextmanager
def receiving(respond: Callable[[Delivery, int], tuple[int, Any, float]] | None = None
              ) -> Iterator[Receiver]:
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
            status, body, delay = receiver.respond(delivery, seen)
            time.sleep(delay)
            payload = json.dumps(body).encode()
            try:
                self.send_response(status)
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
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
