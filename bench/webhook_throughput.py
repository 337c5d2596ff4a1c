"""Benchmark: webhook requests/s of the engine against a bare Flask endpoint, side by side.

Three servers run under the same gunicorn configuration (as ``rules-engine serve`` runs the
engine: gunicorn's asyncio worker, each request read whole before one of 4 threads runs it;
``--workers``, loopback, an access log line per request) and
receive the same signed channel-neutral events from the same light client (``http.client``
threads, one keep-alive connection each, so that the client is not the bottleneck), in
alternating rounds; the engine's requests each verify the HMAC signature, apply one event
(contact lookup, lifecycle, rules, trace) and commit to a SQLite file. The third, the floor
(``floor_app.py``), is the same webhook written by hand over ``sqlite3`` with no rules
engine: signature, JSON, and one
transaction that records the event, finds or creates the contact, opens or closes its
conversation, restarts its idle clock and stores a short trace. Prints each round's
requests/s of each server, and the median over the rounds of each round's ratios.

    python bench/webhook_throughput.py [--requests 2000] [--clients 8] [--workers 2] [--rounds 5]
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SECRET = "bench-secret-0123456789abcdefghijklmnopq"  # at least 32 characters


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(command: list[str], port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.post(f"http://127.0.0.1:{port}/webhooks/events", json={}, timeout=5)
            return process
        except (requests.ConnectionError, requests.Timeout):
            time.sleep(0.2)
    os.killpg(process.pid, signal.SIGTERM)
    raise SystemExit(f"server on port {port} did not start: {' '.join(command)}")


def stop(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


def bodies(count: int, run: str) -> list[bytes]:
    return [json.dumps({"id": f"{run}-{n}", "type": "message.received", "channel": "webchat",
                        "contact": {"external_id": f"visitor-{n % 200}"},
                        "message": {"text": "thanks" if n % 5 == 4 else "hello"}}).encode()
            for n in range(count)]


def drive(port: int, payloads: list[bytes], clients: int) -> float:
    """Send ``payloads`` from ``clients`` threads, each on its own keep-alive connection."""
    signed = [(body, "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest())
              for body in payloads]
    shares = [signed[n::clients] for n in range(clients)]

    def send_share(share: list[tuple[bytes, str]]) -> list[int]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        statuses = []
        for body, signature in share:
            connection.request("POST", "/webhooks/events", body=body, headers={
                "Content-Type": "application/json", "X-Signature-256": signature})
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
            if response.getheader("Connection", "").lower() == "close":
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        connection.close()
        return statuses

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        statuses = [s for share in pool.map(send_share, shares) for s in share]
    elapsed = time.perf_counter() - started
    failures = [s for s in statuses if s != 200]
    if failures:
        raise SystemExit(f"{len(failures)} requests failed (e.g. HTTP {failures[0]})")
    return len(payloads) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        env = {**os.environ, "RULES_ENGINE_WEBHOOK_SECRET": SECRET}
        floor_url = f"sqlite:///{Path(temp) / 'floor.db'}"
        subprocess.run([sys.executable, "-m", "rules_engine.cli", "--database-url", floor_url,
                        "db", "upgrade"], check=True, capture_output=True)
        gunicorn = [sys.executable, "-m", "gunicorn", "--workers", str(args.workers),
                    "--worker-class", "connectors.asgi.Worker", "--keep-alive", "10",
                    "--chdir", str(BENCH), "--access-logfile", "-"]  # as `serve` runs and logs
        ports = {name: free_port() for name in ("bare", "floor", "ours")}
        servers = {
            "bare": start([*gunicorn, "--bind", f"127.0.0.1:{ports['bare']}", "bare_app:asgi"],
                          ports["bare"], env),
            "floor": start([*gunicorn, "--bind", f"127.0.0.1:{ports['floor']}", "floor_app:asgi"],
                           ports["floor"], {**env, "RULES_ENGINE_DATABASE_URL": floor_url}),
            "ours": start([sys.executable, "-m", "rules_engine.cli", "--rules", str(REPO / "rules"),
                           "--database-url", f"sqlite:///{Path(temp) / 'bench.db'}", "serve",
                           "--port", str(ports["ours"]), "--workers", str(args.workers)],
                          ports["ours"], env),
        }
        print(f"gunicorn's asyncio worker as `serve` runs it, {args.workers} workers, "
              f"{args.clients} http.client threads, {args.requests} requests a round, "
              f"{args.rounds} alternating rounds; engine: SQLite, example rules")
        print(f"{'round':<7}{'bare req/s':>11}{'floor req/s':>12}{'engine req/s':>13}"
              f"{'engine/floor':>13}{'engine/bare':>12}")
        try:
            for name in servers:
                drive(ports[name], bodies(100, f"warm-{name}"), args.clients)
            rounds = []
            for round_ in range(1, args.rounds + 1):  # alternating
                rates = {name: drive(ports[name], bodies(args.requests, f"{name}{round_}"),
                                     args.clients) for name in servers}
                rounds.append(rates)
                print(f"{round_:<7}{rates['bare']:>11,.0f}{rates['floor']:>12,.0f}"
                      f"{rates['ours']:>13,.0f}{rates['ours'] / rates['floor']:>13.2f}"
                      f"{rates['ours'] / rates['bare']:>12.2f}")
        finally:
            for process in servers.values():
                stop(process)

    def median(ratio: Callable[[dict[str, float]], float]) -> float:
        return statistics.median(ratio(rates) for rates in rounds)

    print(f"median of the rounds: engine / floor {median(lambda r: r['ours'] / r['floor']):.2f}, "
          f"engine / bare {median(lambda r: r['ours'] / r['bare']):.2f}, "
          f"floor / bare {median(lambda r: r['floor'] / r['bare']):.2f}")


if __name__ == "__main__":
    main()
