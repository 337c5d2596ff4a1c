"""Fuzz campaign against the real server: structure-aware mutations of every real-format
body and of the users' API, correctly signed, sent by light ``http.client`` threads to
``rules-engine serve`` (gunicorn, SQLite by default or ``--database-url``).

Prints the answers by status, the 5xx (with their first bodies), dropped connections,
answers slower than ``--slow`` seconds, and checks afterwards that the server is healthy
and that the store's invariants hold.

    python bench/fuzz_campaign.py [--requests 100000] [--clients 8] [--workers 2] [--seed 1]
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import create_engine, text  # noqa: E402

from connectors.config import environment  # noqa: E402
from tests import fuzzing  # noqa: E402
from tests import webhook_payloads as p  # noqa: E402

AUDIT = {
    "contacts with two open conversations": "SELECT count(*) FROM (SELECT contact_id FROM "
    "conversations WHERE closed_at IS NULL GROUP BY contact_id HAVING count(*) > 1) AS twice",
    "identities on merged-away contacts": "SELECT count(*) FROM contact_identities i JOIN "
    "contacts c ON c.id = i.contact_id WHERE c.merged_into IS NOT NULL",
    "open conversations on merged-away contacts": "SELECT count(*) FROM conversations v JOIN "
    "contacts c ON c.id = v.contact_id WHERE c.merged_into IS NOT NULL AND v.closed_at IS NULL",
    "merge chains or cycles": "SELECT count(*) FROM contacts a JOIN contacts b "
    "ON a.merged_into = b.id WHERE b.merged_into IS NOT NULL",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(database_url: str, workers: int, port: int, log: Path) -> subprocess.Popen:
    names = environment()
    env = {**os.environ, **{names[name]: value for name, value in p.SECRETS.items()}}
    process = subprocess.Popen(
        [sys.executable, "-m", "rules_engine.cli", "--rules", str(REPO / "rules"),
         "--database-url", database_url, "serve", "--port", str(port),
         "--workers", str(workers)],
        env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.3)
    os.killpg(process.pid, signal.SIGTERM)
    raise SystemExit(f"the server did not start; see {log}")


def requests_for(rng: random.Random, bodies: list, api: list) -> tuple[str, str, bytes, dict]:
    """One mutated, signed request: (method, path, body, headers)."""
    if rng.random() < 0.8:
        route, body = rng.choice(bodies)
        if rng.random() < 0.5:  # new ids, so that the engine applies it rather than a repeat
            body = fuzzing.fresh_ids(body, rng.randrange(10**9))
        raw = fuzzing.apply(body, fuzzing.random_mutations(body, rng))
        return "POST", route, raw, {"Content-Type": "application/json",
                                    **p.signed_headers(route, raw)}
    method, url, body = rng.choice(api)
    headers = {"Authorization": f"Bearer {p.SECRETS['api_token']}"}
    url = fuzzing.mutate_url(url, rng)
    if body is None:
        return method, url, b"", headers
    raw = fuzzing.apply(body, fuzzing.random_mutations(body, rng))
    return method, url, raw, {**headers, "Content-Type": "application/json"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--slow", type=float, default=1.0, help="an answer slower than this is slow")
    parser.add_argument("--database-url", help="default: a SQLite file in a temporary folder")
    args = parser.parse_args()
    bodies = fuzzing.channel_bodies() + fuzzing.event_bodies()
    api = fuzzing.api_requests()
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    slow: list[float] = []
    dropped = Counter()
    lock = threading.Lock()
    counter = iter(range(args.requests))

    with tempfile.TemporaryDirectory() as temp:
        database_url = args.database_url or f"sqlite:///{Path(temp) / 'fuzz.db'}"
        port = free_port()
        log = Path(temp) / "server.log"
        server = start_server(database_url, args.workers, port, log)

        def client(number: int) -> None:
            rng = random.Random(args.seed * 1000 + number)
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            for _ in counter:
                method, path, body, headers = requests_for(rng, bodies, api)
                started = time.perf_counter()
                try:
                    connection.request(method, path, body=body or None, headers=headers)
                    response = connection.getresponse()
                    answer = response.read()
                except (OSError, http.client.HTTPException) as error:
                    with lock:
                        dropped[type(error).__name__] += 1
                    connection.close()
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                    continue
                seconds = time.perf_counter() - started
                with lock:
                    statuses[response.status] += 1
                    if seconds > args.slow:
                        slow.append(seconds)
                    if response.status >= 500 and len(failures) < 5:
                        failures.append(f"{method} {path} {body[:300]!r} -> {answer[:200]!r}")
                if response.getheader("Connection", "").lower() == "close":
                    connection.close()
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

        started = time.perf_counter()
        threads = [threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        health = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        health.request("GET", "/healthz")
        healthy = health.getresponse().status == 200
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
        engine = create_engine(database_url)
        with engine.connect() as connection:
            audit = {name: connection.execute(text(sql)).scalar_one() for name, sql in AUDIT.items()}
            events = connection.execute(text("SELECT count(*) FROM processed_events")).scalar_one()
        engine.dispose()

    total = sum(statuses.values()) + sum(dropped.values())
    server_errors = sum(n for status, n in statuses.items() if status >= 500)
    print(f"{total:,} requests in {elapsed:.0f} s ({total / elapsed:,.0f}/s), "
          f"{args.clients} clients, {args.workers} gunicorn workers, seed {args.seed}")
    print("answers: " + ", ".join(f"{status}: {n:,}" for status, n in sorted(statuses.items())))
    print(f"5xx: {server_errors}   dropped connections: {sum(dropped.values())} {dict(dropped)}   "
          f"slower than {args.slow:g} s: {len(slow)}"
          + (f" (slowest {max(slow):.2f} s)" if slow else ""))
    print(f"events recorded: {events:,}   server healthy afterwards: {healthy}")
    print("invariants: " + json.dumps(audit))
    for failure in failures:
        print("  5xx:", failure)
    if server_errors or dropped or not healthy or any(audit.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
