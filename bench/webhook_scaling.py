"""Benchmark: events per second through the webhook with 1, 2 and 4 worker processes on PostgreSQL.

Each configuration is the real server (``rules-engine serve``: gunicorn's asyncio worker,
``--threads`` requests at once in each) over the same PostgreSQL database, driven by the
same client on loopback with the same signed events (new contacts and returning ones, the
example rules). Printed side by side.

    .ci/with-postgres .venv/bin/python bench/webhook_scaling.py [--requests 2000] [--threads 4]

(``.ci/with-postgres`` starts a throwaway PostgreSQL and sets RULES_ENGINE_TEST_DATABASE_URL;
or set RULES_ENGINE_BENCH_DATABASE_URL to a database of your own, already upgraded.)
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

from webhook_throughput import REPO, SECRET, bodies, drive, free_port, start, stop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--threads", type=int, default=4,
                        help="requests each worker runs at once (serve's --threads)")
    args = parser.parse_args()
    url = (os.environ.get("RULES_ENGINE_BENCH_DATABASE_URL")
           or os.environ.get("RULES_ENGINE_TEST_DATABASE_URL"))
    if not url or not url.startswith("postgresql"):
        raise SystemExit("set RULES_ENGINE_BENCH_DATABASE_URL (or run under .ci/with-postgres)")
    subprocess.run([sys.executable, "-m", "rules_engine.cli", "--database-url", url, "db",
                    "upgrade"], check=True, stdout=subprocess.DEVNULL)
    env = {**os.environ, "RULES_ENGINE_WEBHOOK_SECRET": SECRET}
    rates = {}
    for workers in (1, 2, 4):
        port = free_port()
        server = start([sys.executable, "-m", "rules_engine.cli", "--rules", str(REPO / "rules"),
                        "--database-url", url, "serve", "--port", str(port),
                        "--workers", str(workers), "--threads", str(args.threads)], port, env)
        try:
            drive(port, bodies(100, f"warm-{workers}"), args.clients)
            rates[workers] = drive(port, bodies(args.requests, f"run-{workers}"), args.clients)
        finally:
            stop(server)
    print(f"PostgreSQL, {args.requests} signed events per run, {args.clients} clients, "
          f"{args.threads} threads per worker, {os.cpu_count()} cores")
    for workers, rate in rates.items():
        print(f"  {workers} worker process(es): {rate:8,.0f} events/s  "
              f"({rate / rates[1]:.2f}x one worker)")


if __name__ == "__main__":
    main()
