"""Benchmark: the CPU time of one webhook request inside the app, without a server, side
by side with a bare Flask endpoint.

Calls each WSGI app directly (no gunicorn, no socket, no client) with the same signed
channel-neutral events as ``webhook_throughput.py`` and measures the thread's CPU time per
request: what our own code costs a worker, apart from what the server and the network cost
every endpoint alike. The engine writes to a fresh SQLite file with the example rules.
Prints microseconds per request (the best of ``--rounds``) and the difference.

    python bench/request_cost.py [--requests 3000] [--rounds 4]
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

from webhook_throughput import SECRET, bodies  # noqa: E402 (found through the path set above)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Any]


def environ(body: bytes) -> dict[str, Any]:
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"REQUEST_METHOD": "POST", "PATH_INFO": "/webhooks/events", "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "127.0.0.1",
            "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
            "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": "application/json",
            "HTTP_X_SIGNATURE_256": signature}


def cpu_per_request(app: WSGIApp, count: int, run: str) -> float:
    """Microseconds of this thread's CPU time per request; every answer must be a 200."""
    requests = [environ(body) for body in bodies(count, run)]
    statuses: list[str] = []
    started = time.thread_time()
    for request in requests:
        b"".join(app(request, lambda status, headers, exc_info=None: statuses.append(status)))
    elapsed = time.thread_time() - started
    if any(not status.startswith("200") for status in statuses):
        raise SystemExit(f"a request failed: {next(s for s in statuses if not s.startswith('200'))}")
    return 1e6 * elapsed / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        os.environ.update({"RULES_ENGINE_WEBHOOK_SECRET": SECRET,
                           "RULES_ENGINE_DATABASE_URL": f"sqlite:///{Path(temp) / 'bench.db'}",
                           "RULES_ENGINE_RULES_DIR": str(REPO / "rules")})
        from bare_app import app as bare

        from connectors.app import create_app
        ours = create_app()
        apps: dict[str, WSGIApp] = {"bare": bare, "ours": ours}
        for name, app in apps.items():
            cpu_per_request(app, 300, f"warm-{name}")
        best = dict.fromkeys(apps, float("inf"))
        for round_ in range(args.rounds):  # alternating, the best of each
            for name, app in apps.items():
                best[name] = min(best[name], cpu_per_request(app, args.requests, f"{name}{round_}"))
    print(f"in process, no server: {args.requests} requests a round, "
          f"best of {args.rounds} alternating rounds, CPU time per request")
    print(f"  {'bare Flask endpoint':<36}{best['bare']:8.0f} us")
    print(f"  {'rules-engine /webhooks/events':<36}{best['ours']:8.0f} us (SQLite, example rules)")
    print(f"  {'our own work per request':<36}{best['ours'] - best['bare']:8.0f} us")


if __name__ == "__main__":
    main()
