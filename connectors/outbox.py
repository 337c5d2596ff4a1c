"""Delivering the outbox: ``rules-engine worker`` claims due rows and makes the HTTP calls.

At least once: a row is leased just before its own delivery, for longer than the HTTP
timeout, so a slow receiver never causes a second send; only a worker killed mid-delivery
leaves the lease to expire, and then another worker delivers it again with the same
``Idempotency-Key`` so the receiver can drop the repeat. A delivered row is never sent
again. Every attempt ends recorded, whatever went wrong (connectors.delivery says what a
failure means): a retryable failure is tried again with exponential backoff and jitter;
after ``max_attempts``, or at once when trying again cannot help, the row is ``failed``
with the reason (``GET /api/outbox?status=failed``).
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import socket
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

from rules_engine import Engine, RulesEngineError, Store, load_rule_set
from rules_engine.model import OutboxStatus

from .address_guard import AddressGuard
from .channels import adapter_for_channel
from .channels.base import Outbound
from .delivery import DeliveryError, Transport

log = logging.getLogger("rules_engine.worker")


def build_request(row: Mapping[str, Any], environ: Mapping[str, str]) -> Outbound:
    """The HTTP call for an outbox row; channel credentials come from the environment.

    ``http_request`` rows call their URL (the rule's headers never replace the worker's
    ``Idempotency-Key``); ``send_message`` rows go through the send API of the channel's
    adapter, or ``$RULES_ENGINE_SEND_URL`` for a channel without one.
    """
    keyed = {"Idempotency-Key": row["idempotency_key"]}
    if row["target"] == "http":
        return Outbound(row["method"], row["url"],
                        {"Content-Type": "application/json", **row["headers"], **keyed},
                        row["body"], from_rule=True)
    channel = row["body"]["channel"]
    adapter = adapter_for_channel(channel)
    try:
        call = adapter.outbound(row["recipient"], row["body"], environ) if adapter else None
    except LookupError as missing:
        raise DeliveryError(str(missing.args[0])) from None
    if call is not None:
        return replace(call, headers={**call.headers, **keyed})
    url = environ.get("RULES_ENGINE_SEND_URL")
    if not url:
        raise DeliveryError(f"no send API for channel {channel}: set RULES_ENGINE_SEND_URL")
    return Outbound("POST", url, {"Content-Type": "application/json", **keyed},
                    {"channel": channel, "recipient": row["recipient"], "text": row["body"]["text"]})


class OutboxWorker:
    """Claims due rows in batches and delivers them; many may run side by side."""

    def __init__(self, store: Store, *, worker_id: str, lease_seconds: float = 30,
                 max_attempts: int = 8, batch: int = 10, timeout: float = 10,
                 backoff_seconds: float = 2, environ: Mapping[str, str] | None = None) -> None:
        """ValueError for a lease not longer than the timeout, or a bad
        ``RULES_ENGINE_OUTBOUND_ALLOW`` in ``environ`` (default ``os.environ``)."""
        if lease_seconds <= timeout:
            raise ValueError(f"the lease ({lease_seconds} s) must be longer than the HTTP "
                             f"timeout ({timeout} s), or a slow call could be sent twice")
        self.store = store
        self.worker_id = worker_id
        self.lease = timedelta(seconds=lease_seconds)
        self.max_attempts = max_attempts
        self.batch = batch
        self.backoff_seconds = backoff_seconds
        self.environ = os.environ if environ is None else environ
        self.transport = Transport(AddressGuard.from_environ(self.environ), timeout=timeout)

    def run_once(self) -> int:
        """Deliver up to ``batch`` due rows, each claimed just before its own delivery (so a
        lease always covers the call it was taken for); returns how many were claimed."""
        claimed = 0
        while claimed < self.batch:
            now = datetime.now(timezone.utc)
            rows = self.store.run(lambda tx: tx.claim_outbound(
                worker=self.worker_id, now=now, lease_until=now + self.lease, limit=1))
            if not rows:
                break
            self._deliver(rows[0])
            claimed += 1
        return claimed

    def _deliver(self, row: Mapping[str, Any]) -> None:
        if row["attempts"] > self.max_attempts:
            values = {"status": OutboxStatus.FAILED, "last_error": (
                f"attempt {row['attempts'] - 1}, the last of {self.max_attempts}, never finished "
                "(a worker stopped mid-delivery)")}
        else:
            values = self._attempt(row)
        self.store.run(lambda tx: tx.finish_outbound(row["id"], worker=self.worker_id,
                                                     values=values))

    def _attempt(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """Send the row once; the values that record how it went."""
        try:
            self.transport.send(build_request(row, self.environ))
        except DeliveryError as error:
            log.warning("outbox #%s attempt %s failed: %s", row["id"], row["attempts"], error)
            return self._failure(row, error)
        except Exception as error:  # a case nobody foresaw still ends the attempt, recorded
            log.exception("outbox #%s attempt %s failed unexpectedly", row["id"], row["attempts"])
            return self._failure(row, DeliveryError(f"unexpected {type(error).__name__}"))
        return {"status": OutboxStatus.DELIVERED, "delivered_at": datetime.now(timezone.utc)}

    def _failure(self, row: Mapping[str, Any], error: DeliveryError) -> dict[str, Any]:
        if error.permanent:
            return {"status": OutboxStatus.FAILED, "last_error": f"{error} (not retried)"}
        if row["attempts"] >= self.max_attempts:
            return {"status": OutboxStatus.FAILED,
                    "last_error": f"{error} (gave up after {row['attempts']} attempts)"}
        delay = self.backoff_seconds * 2 ** (row["attempts"] - 1)
        delay = min(delay, 3600) * random.uniform(0.5, 1.0)
        return {"last_error": str(error),
                "next_attempt_at": datetime.now(timezone.utc) + timedelta(seconds=delay)}

    def run_forever(self, stop: threading.Event, *, poll_seconds: float = 1.0) -> None:
        """Deliver until ``stop`` is set, waiting ``poll_seconds`` when nothing is due."""
        _poll(self.run_once, stop, poll_seconds, f"outbox worker {self.worker_id}")


class TimerFirer:
    """Fires due timers (idle clocks, waits) with its engine's rules; any number may run on
    any hosts: each firing happens once (see rules_engine.timers)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def run_once(self) -> int:
        """Fire what is due now; how many timers fired."""
        return sum(1 for _ in self.engine.fire_all_due(datetime.now(timezone.utc)))

    def run_forever(self, stop: threading.Event, *, poll_seconds: float = 1.0) -> None:
        """Fire until ``stop`` is set, waiting ``poll_seconds`` when nothing is due."""
        _poll(self.run_once, stop, poll_seconds, "timers")


def _poll(run_once: Callable[[], int], stop: threading.Event, poll_seconds: float,
          what: str) -> None:
    """Call ``run_once`` until ``stop`` is set, waiting ``poll_seconds`` whenever it found
    nothing to do; an error is logged and waited out (a database hiccup must not kill the
    worker)."""
    while not stop.is_set():
        try:
            done = run_once()
        except Exception:
            log.exception("%s: a batch failed", what)
            done = 0
        if not done:
            stop.wait(poll_seconds)


def main(argv: Sequence[str] | None = None) -> int:
    """``rules-engine worker``: deliver the outbox and fire due timers until SIGTERM /
    SIGINT (or once)."""
    parser = argparse.ArgumentParser(prog="rules-engine worker", description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("RULES_ENGINE_DATABASE_URL"))
    parser.add_argument("--threads", type=int, default=4, help="deliveries in parallel")
    parser.add_argument("--lease", type=float, default=30, help="seconds a claimed row is held")
    parser.add_argument("--max-attempts", type=int, default=8)
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between idle polls")
    parser.add_argument("--timeout", type=float, default=10, help="HTTP timeout, seconds")
    parser.add_argument("--rules", default=os.environ.get("RULES_ENGINE_RULES_DIR", "rules"),
                        help="the rules directory, for the timers' rules "
                             "($RULES_ENGINE_RULES_DIR, else rules/)")
    parser.add_argument("--once", action="store_true",
                        help="deliver and fire what is due now, then exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    store = Store(args.database_url) if args.database_url else Store()
    firer: TimerFirer | None = None
    if os.path.isdir(args.rules):
        try:
            firer = TimerFirer(Engine(store, load_rule_set([args.rules])))
        except RulesEngineError as error:
            parser.error(f"cannot load the rules for the timers: {error}")
    else:
        log.warning("no rules directory at %s: this worker delivers the outbox and fires no "
                    "timers (pass --rules)", args.rules)
    name = f"{socket.gethostname()}:{os.getpid()}"
    try:
        workers = [OutboxWorker(store, worker_id=f"{name}:{n}", lease_seconds=args.lease,
                                max_attempts=args.max_attempts, timeout=args.timeout)
                   for n in range(args.threads)]
    except ValueError as error:
        parser.error(str(error))
    if args.once:
        while sum(worker.run_once() for worker in workers) + (firer.run_once() if firer else 0):
            pass
        return 0
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    threads = [threading.Thread(target=w.run_forever, args=(stop,), kwargs={"poll_seconds": args.poll})
               for w in [*workers, *([firer] if firer else [])]]
    for thread in threads:
        thread.start()
    log.info("worker %s: %d threads delivering, %d firing timers", name, len(workers),
             1 if firer else 0)
    for thread in threads:
        thread.join()
    store.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
