"""Delivering the outbox: ``rules-engine worker`` claims due rows and makes the calls.

At least once: a row is leased just before its own delivery, for longer than the HTTP
timeout and a pacing wait, so a slow receiver never causes a second send; only a worker
killed mid-delivery leaves the lease to expire, and then another worker delivers it again
with the same ``Idempotency-Key`` so the receiver can drop the repeat. A sent row is never
sent again.

Every attempt ends recorded, with what the platform answered as its channel reads it
(``connectors.channels.base.Verdict``):

- ``sent``: the row is ``sent``, the platform's message id kept (its status callbacks move
  it on to ``delivered`` and ``read``, see rules_engine.domain.message_status);
- ``transient``: tried again with exponential backoff and jitter until the row is
  ``max_age`` old (default 24 hours), then ``failed``;
- ``rate_limited``: deferred, never failed: by the platform's ``retry_after`` /
  ``Retry-After`` when it gives one, else by the backoff;
- ``permanent``: ``failed`` with the platform's code and words;
- ``auth``: the channel pauses (no more calls on it, an ERROR line, the
  ``rules_engine_channel_paused`` metric) until ``rules-engine outbox resume CHANNEL``;
  the row waits.

Before a message is sent: a contact who opted out on that channel is not called (the row
is ``suppressed``, reason ``opted_out``); free text outside the channel's reply window
(WhatsApp and Messenger: 24 hours after the contact's latest message; a Messenger tag may
lift it) is not called either (``failed``, kind ``outside_window``). Calls are paced per
recipient and per channel by the platforms' documented limits, across every thread and
process (the turns are rows in the database). A message that fails raises
``message.failed`` for rules, in the same transaction as the row's failure.
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
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from rules_engine import (
    Engine,
    Event,
    EventType,
    Result,
    RulesEngineError,
    RuleSet,
    Store,
    load_rule_set,
)
from rules_engine.cli import DATABASE_PROBLEMS, HelpFormatter, database_problem
from rules_engine.domain.model import ContactRef, OutboxStatus
from rules_engine.domain.timers import Timer, duration_option
from rules_engine.engine import counted, firings_summary
from rules_engine.store import DEFAULT_DATABASE_URL, database_url

from .address_guard import AddressGuard
from .channels import adapter_for_channel
from .channels.base import AnswerKind, ChannelAdapter, Outbound, Unsendable, Verdict
from .delivery import Transport

log = logging.getLogger("rules_engine.worker")

DEFAULT_MAX_AGE = timedelta(hours=24)
MAX_BACKOFF = 3600.0  # seconds between two attempts at most (unless the platform asks more)
PACE_WAIT = 1.0  # seconds a delivery waits for its pacing turn before deferring the row
# How a row's turn ends: its new status; ``deferred`` (due again later: backoff, rate limit,
# pacing, a paused channel); ``taken over`` (the lease ran out and another worker has it).
TURN_ENDS = ("sent", "failed", "suppressed", "deferred", "taken over")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def build_request(row: Mapping[str, Any], environ: Mapping[str, str]) -> Outbound:
    """The HTTP call for an outbox row; channel credentials come from the environment.

    ``http_request`` rows call their URL (the rule's headers never replace the worker's
    ``Idempotency-Key``); messages go through the send API of the channel's adapter, or
    ``$RULES_ENGINE_SEND_URL`` for a channel without one. LookupError names a missing
    credential; Unsendable, content the channel cannot carry.
    """
    keyed = {"Idempotency-Key": row["idempotency_key"]}
    if row["target"] == "http":
        return Outbound(row["method"], row["url"],
                        {"Content-Type": "application/json", **row["headers"], **keyed},
                        row["body"], from_rule=True)
    content = row["body"]
    adapter = adapter_for_channel(content["channel"])
    call = adapter.outbound(row["recipient"], content, environ) if adapter else None
    if call is not None:
        return replace(call, headers={**call.headers, **keyed})
    url = environ.get("RULES_ENGINE_SEND_URL")
    if not url:
        raise LookupError(f"no send API for channel {content['channel']}: "
                          "set RULES_ENGINE_SEND_URL")
    if "text" not in content:
        raise Unsendable(f"{content['channel']} takes text only, not a template")
    return Outbound("POST", url, {"Content-Type": "application/json", **keyed},
                    {"channel": content["channel"], "recipient": row["recipient"],
                     "text": content["text"]})


def reply_window(adapter: ChannelAdapter | None, content: Mapping[str, Any]) -> timedelta | None:
    """How long after the contact's latest message ``content`` may be sent (None: any time)."""
    if adapter is None or "template" in content:
        return None
    tag = content.get("tag")
    if isinstance(tag, str) and tag in adapter.tag_windows:
        return adapter.tag_windows[tag]
    return adapter.reply_window


def _error(verdict: Verdict, kind: str | None = None) -> dict[str, Any]:
    """The row's error columns for a verdict (``kind``: ours instead of the verdict's)."""
    return {"error_kind": kind or str(verdict.kind), "error_code": verdict.code,
            "error_message": verdict.message}


def _failure(values: Mapping[str, Any]) -> dict[str, Any]:
    """The error ``message.failed`` carries, from the row's error columns."""
    return {"kind": values["error_kind"], "code": values["error_code"],
            "message": values["error_message"]}


@dataclass
class _Finish:
    """How one claimed row's turn ends."""

    values: dict[str, Any]  # written on the row
    outcome: str | None = None  # counted in rules_engine_outbound_deliveries (None: no call)
    failed: dict[str, Any] | None = None  # raises message.failed with this error
    pause: Verdict | None = None  # pauses the row's channel


def check_lease(lease_seconds: float, timeout: float) -> None:
    """ValueError unless a lease outlasts the HTTP call it is taken for."""
    if lease_seconds <= timeout:
        raise ValueError(f"the lease ({lease_seconds} s) must be longer than the HTTP "
                         f"timeout ({timeout} s), or a slow call could be sent twice")


class OutboxWorker:
    """Claims due rows in batches and delivers them; many may run side by side."""

    def __init__(self, store: Store, *, worker_id: str, engine: Engine | None = None,
                 lease_seconds: float = 30, max_age: timedelta = DEFAULT_MAX_AGE,
                 batch: int = 10, timeout: float = 10, backoff_seconds: float = 2,
                 environ: Mapping[str, str] | None = None, guard: AddressGuard | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        """ValueError for a lease not longer than the HTTP timeout, or a bad
        ``RULES_ENGINE_OUTBOUND_ALLOW`` in ``environ`` (default ``os.environ``) when no
        ``guard`` is given. ``engine`` runs the rules on ``message.failed``; without one,
        rows fail all the same."""
        check_lease(lease_seconds, timeout)
        self.store = store
        self.engine = engine
        self.worker_id = worker_id
        self.lease = timedelta(seconds=lease_seconds)
        # a pacing wait and the call fit in the lease together
        self.pace_wait = min(PACE_WAIT, (lease_seconds - timeout) / 2)
        self.max_age = max_age
        self.batch = batch
        self.backoff_seconds = backoff_seconds
        self.environ = os.environ if environ is None else environ
        self.clock = clock
        guard = guard or AddressGuard.from_environ(self.environ)
        self.transport = Transport(guard, timeout=timeout)

    def run_once(self) -> int:
        """Deliver up to ``batch`` due rows (``deliver_due``); how many rows were claimed."""
        return len(self.deliver_due())

    def deliver_due(self) -> dict[int, str]:
        """Deliver up to ``batch`` due rows, each claimed just before its own delivery (so a
        lease always covers the call it was taken for); what became of each row, by id:
        one of ``TURN_ENDS``."""
        ends: dict[int, str] = {}
        for _ in range(self.batch):
            now = self.clock()
            rows = self.store.run(lambda tx: tx.outbound.claim(worker=self.worker_id,
                now=now, lease_until=now + self.lease, limit=1))  # noqa: B023 (called at once)
            if not rows:
                break
            ends[rows[0]["id"]] = self._deliver(rows[0])
        return ends

    def _deliver(self, row: Mapping[str, Any]) -> str:
        try:
            finish = self._turn(row)
        except Exception as error:  # a case nobody foresaw still ends the attempt, recorded
            log.exception("outbox #%s attempt %s failed unexpectedly", row["id"], row["attempts"])
            finish = self._retry(row, Verdict(AnswerKind.TRANSIENT,
                                              message=f"unexpected {type(error).__name__}"))
        if not self._record(row, finish):
            return "taken over"
        return str(finish.values.get("status", "deferred"))

    def _turn(self, row: Mapping[str, Any]) -> _Finish:
        """What comes of the row's turn: refused before any call, deferred, or called."""
        adapter = adapter_for_channel(row["channel"]) if row["channel"] else None
        age = self.clock() - row["queued_at"]
        if row["attempts"] > 1 and age > self.max_age and row["error_kind"] != "rate_limited":
            # tried before, and never finished (a worker stopped mid-delivery) or still failing
            gave_up = Verdict(AnswerKind.TRANSIENT, row["error_code"], (
                f"{row['error_message'] or 'an attempt never finished'} (gave up: not sent "
                f"after {counted(row['attempts'] - 1, 'attempt')} over {age})"))
            values = {"status": OutboxStatus.FAILED, "attempts": row["attempts"] - 1,
                      **_error(gave_up)}
            return _Finish(values, None, failed=_failure(values))
        if row["target"] == "message":
            refused = self._refusal(row, adapter)
            if refused is not None:
                return refused
        try:
            request = build_request(row, self.environ)
        except LookupError as missing:
            return self._answered(row, Verdict(AnswerKind.AUTH, message=str(missing.args[0])))
        except Unsendable as unsendable:
            return self._answered(row, Verdict(AnswerKind.PERMANENT, message=str(unsendable)))
        if adapter is not None:
            free_at = self._take_turn(row, adapter)
            if free_at is not None:  # not an attempt: it waits for its turn
                return _Finish({"next_attempt_at": free_at, "attempts": row["attempts"] - 1})
            if self._paused(row["channel"]):
                # paused by another worker since the claim (or during the pacing wait)
                return _Finish({"next_attempt_at": self.clock(), "attempts": row["attempts"] - 1})
        return self._answered(row, self.transport.send(request))

    def _paused(self, channel: str) -> bool:
        with self.store.read() as tx:
            return tx.outbound.is_paused(channel)

    def _refusal(self, row: Mapping[str, Any], adapter: ChannelAdapter | None) -> _Finish | None:
        """Why a message must not be sent now (the contact opted out; outside the reply
        window), or None."""
        with self.store.read() as tx:
            identity = tx.identity(row["channel"], row["recipient"])
        if identity is None:
            return None
        if identity["opted_out_at"] is not None:
            return _Finish({"status": OutboxStatus.SUPPRESSED, "error_kind": "opted_out",
                            "error_code": None, "error_message": (
                                f"the contact opted out on {row['channel']} at "
                                f"{identity['opted_out_at']:%Y-%m-%d %H:%M:%S} UTC")},
                           "suppressed")
        window = reply_window(adapter, row["body"])
        wrote = identity["last_inbound_at"]
        if window is None or wrote is None or self.clock() - wrote <= window:
            return None
        hours = window / timedelta(hours=1)
        verdict = Verdict(AnswerKind.PERMANENT, message=(
            f"outside the {hours:g}-hour window: the contact last wrote at "
            f"{wrote:%Y-%m-%d %H:%M:%S} UTC; send a template (WhatsApp) or a tag (Messenger)"))
        values = {"status": OutboxStatus.FAILED, **_error(verdict, "outside_window")}
        return _Finish(values, "outside_window", failed=_failure(values))

    def _take_turn(self, row: Mapping[str, Any], adapter: ChannelAdapter) -> datetime | None:
        """Wait (up to ``pace_wait``) for the channel's and the recipient's pacing turn: None
        once taken, else when to come back."""
        channel, pace = row["channel"], adapter.pace
        intervals = {key: seconds for key, seconds in (
            (channel, pace.channel_interval),
            (f"{channel}:{row['recipient']}", pace.recipient_interval)) if seconds > 0}
        if not intervals:
            return None
        deadline = time.monotonic() + self.pace_wait
        while True:
            now = self.clock()
            free_at = self.store.run(
                lambda tx: tx.outbound.take_turn(intervals, now))  # noqa: B023 (called at once)
            if free_at is None:
                return None
            wait = (free_at - now).total_seconds()
            if time.monotonic() + wait > deadline:
                return free_at
            time.sleep(max(wait, 0.001))

    def _answered(self, row: Mapping[str, Any], verdict: Verdict) -> _Finish:
        """The row's values after an answer (or a failure to get one)."""
        kind = verdict.kind
        if kind is AnswerKind.SENT:
            return _Finish({"status": OutboxStatus.SENT, "sent_at": self.clock(),
                            "platform_message_id": verdict.platform_message_id,
                            "error_kind": None, "error_code": None, "error_message": None},
                           str(kind))
        if kind is AnswerKind.AUTH and row["channel"]:
            log.error("channel %s paused: its send API refused the credential (%s%s). Fix it, "
                      "then run `rules-engine outbox resume %s`", row["channel"],
                      f"code {verdict.code}: " if verdict.code else "", verdict.message,
                      row["channel"])
            return _Finish({"next_attempt_at": self.clock(), "attempts": row["attempts"] - 1,
                            **_error(verdict)}, str(kind), pause=verdict)
        if kind in (AnswerKind.TRANSIENT, AnswerKind.RATE_LIMITED):
            return self._retry(row, verdict)
        log.warning("outbox #%s failed: %s %s", row["id"], verdict.code or "", verdict.message)
        values = {"status": OutboxStatus.FAILED, **_error(verdict)}
        return _Finish(values, str(kind), failed=_failure(values))

    def _retry(self, row: Mapping[str, Any], verdict: Verdict) -> _Finish:
        """Try again later: a rate-limited row when the platform allows (never failed), a
        transient failure with backoff until the row is ``max_age`` old."""
        backoff = min(self.backoff_seconds * 2 ** (row["attempts"] - 1), MAX_BACKOFF)
        if verdict.kind is AnswerKind.RATE_LIMITED and verdict.retry_after is not None:
            delay = verdict.retry_after * random.uniform(1.0, 1.1)
        else:
            delay = backoff * random.uniform(0.5, 1.0)
        now = self.clock()
        due = now + timedelta(seconds=delay)
        if verdict.kind is AnswerKind.TRANSIENT and due - row["queued_at"] > self.max_age:
            gave_up = replace(verdict, message=f"{verdict.message} (gave up after "
                              f"{counted(row['attempts'], 'attempt')} over {now - row['queued_at']})")
            values = {"status": OutboxStatus.FAILED, **_error(gave_up)}
            return _Finish(values, str(verdict.kind), failed=_failure(values))
        log.info("outbox #%s attempt %s: %s, again at %s", row["id"], row["attempts"],
                 verdict.kind, due.isoformat(timespec="seconds"))
        return _Finish({"next_attempt_at": due, **_error(verdict)}, str(verdict.kind))

    def _record(self, row: Mapping[str, Any], finish: _Finish) -> bool:
        """Write the turn's end: the row, the count, a pause, and ``message.failed`` for the
        rules, all in one transaction; False when the lease was lost (nothing written)."""
        at = self.clock()

        def write(tx: Any) -> bool:
            if not tx.outbound.finish(row["id"], worker=self.worker_id, values=finish.values):
                return False  # the lease was lost: the row's new holder records it
            if finish.outcome is not None:
                tx.outbound.count(row["channel"] or "", finish.outcome)
            if finish.pause is not None:
                tx.outbound.pause(row["channel"], at=at, code=finish.pause.code,
                                  message=finish.pause.message)
            return True

        if finish.failed is None or self.engine is None or row["target"] != "message":
            return self.store.run(write)
        return self.engine.process_after(write, failed_event(row, finish.failed, at),
                                         counted_as="worker") is not None

    def run_forever(self, stop: threading.Event, *, poll_seconds: float = 1.0) -> None:
        """Deliver until ``stop`` is set, waiting ``poll_seconds`` when nothing is due."""
        _poll(self.run_once, stop, poll_seconds, f"outbox worker {self.worker_id}")


def failed_event(row: Mapping[str, Any], error: Mapping[str, Any], at: datetime) -> Event:
    """``message.failed`` for a row the worker failed: its params name the row, the rule
    that queued it and the error (the same shape a platform's failed callback has)."""
    contact = (ContactRef(id=row["contact_id"]) if row["contact_id"] is not None
               else ContactRef(external_id=row["recipient"]))
    return Event(
        id=f"outbox:{row['id']}:failed:{row['queued_at']:%Y%m%dT%H%M%S%f}",
        type=EventType.MESSAGE_FAILED, channel=row["channel"], contact=contact, timestamp=at,
        params={"outbox_id": row["id"], "rule_id": row["rule_id"], "action": row["action"],
                "platform_message_id": row["platform_message_id"],
                "error": dict(error)})


class TimerFirer:
    """Fires due timers (idle clocks, waits, dates, schedules) with its engine's rules; any
    number may run on any hosts: each firing happens once (see rules_engine.domain.timers)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def run_once(self) -> int:
        """Fire what is due now; how many timers fired."""
        return len(self.fire_due())

    def fire_due(self) -> list[tuple[Timer, Result | RulesEngineError]]:
        """Fire what is due now; each timer with what its firing did."""
        return list(self.engine.fire_all_due(datetime.now(timezone.utc)))

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


def _above_zero(kind: type[int] | type[float]) -> Callable[[str], float]:
    """An argparse type: a whole (``int``) or any (``float``) number above zero."""
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text} is not above zero")
        return value

    parse.__name__ = "number above zero"
    return parse


def build_parser() -> argparse.ArgumentParser:
    """``rules-engine worker``'s options (the environment's settings as their defaults)."""
    parser = argparse.ArgumentParser(
        prog="rules-engine worker", formatter_class=HelpFormatter,
        description="Deliver the outbox (send_message, http_request) and fire due timers,\n"
                    "until SIGTERM or SIGINT; with --once, what is due now, then exit.")
    parser.add_argument("--database-url", metavar="URL",
                        help="SQLAlchemy URL ($RULES_ENGINE_DATABASE_URL, else "
                             f"{DEFAULT_DATABASE_URL})")
    parser.add_argument("--threads", type=_above_zero(int), default=4, metavar="N",
                        help="deliveries in parallel")
    parser.add_argument("--lease", type=_above_zero(float), default=30, metavar="SECONDS",
                        help="how long a claimed row is held (longer than --timeout)")
    parser.add_argument("--max-age", type=duration_option, metavar="DURATION",
                        default=os.environ.get("RULES_ENGINE_OUTBOX_MAX_AGE", "24h"),
                        help="how long a message that keeps failing for a transient reason is "
                             "tried before it fails: 30m, 24h, 2d (default: "
                             "$RULES_ENGINE_OUTBOX_MAX_AGE, else 24h)")
    parser.add_argument("--poll", type=_above_zero(float), default=1.0, metavar="SECONDS",
                        help="the wait between two looks at an idle outbox")
    parser.add_argument("--timeout", type=_above_zero(float), default=10, metavar="SECONDS",
                        help="HTTP timeout")
    parser.add_argument("--rules", metavar="DIR",
                        default=os.environ.get("RULES_ENGINE_RULES_DIR", "rules"),
                        help="the rules directory, for the timers' and message.failed's rules "
                             "(default: $RULES_ENGINE_RULES_DIR, else rules/)")
    parser.add_argument("--once", action="store_true",
                        help="deliver and fire what is due now, say what was done, then exit")
    return parser


def _rules_for_timers(parser: argparse.ArgumentParser, folder: str) -> RuleSet | None:
    """The rules the timers and ``message.failed`` run (None: no such folder, said once)."""
    if not os.path.isdir(folder):
        log.warning("no rules directory at %s: this worker delivers the outbox, fires no "
                    "timers and runs no rules on message.failed (pass --rules)", folder)
        return None
    try:
        return load_rule_set([folder])
    except RulesEngineError as error:
        parser.error(f"cannot load the rules for the timers: {error}")


def _configure_logging() -> None:
    """Our own lines from INFO up; other libraries' (Alembic's migration notes, ...) only
    from WARNING up."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("rules_engine").setLevel(logging.INFO)


def run_until_idle(workers: Sequence[OutboxWorker], firer: TimerFirer | None) -> str:
    """Deliver and fire until nothing is due (``worker --once``); what was done, in one
    line: what became of the rows due (each counted once, by how its last turn ended) and
    the timers fired."""
    ends: dict[int, str] = {}
    firings: list[tuple[Timer, Result | RulesEngineError]] = []
    while True:
        delivered = [worker.deliver_due() for worker in workers]
        fired = firer.fire_due() if firer else []
        for each in delivered:
            ends.update(each)
        firings += fired
        if not fired and not any(delivered):
            break
    counts = Counter(ends.values())
    said = ", ".join(f"{counts[end]} {end}" for end in TURN_ENDS if counts[end])
    rows = f"{counted(len(ends), 'outbox row')} due" + (f": {said}" if ends else "; nothing sent")
    timers = firings_summary(firings) if firer else "timers not fired (no rules directory)"
    return f"worker: {rows}; {timers}"


def main(argv: Sequence[str] | None = None) -> int:
    """``rules-engine worker``: deliver the outbox and fire due timers until SIGTERM /
    SIGINT (or once). Every option and setting is checked before the database is opened."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging()
    try:
        check_lease(args.lease, args.timeout)
        guard = AddressGuard.from_environ(os.environ)
    except ValueError as error:
        parser.error(str(error))
    rules = _rules_for_timers(parser, args.rules)
    url = database_url(args.database_url)
    try:
        store = Store(url)
    except DATABASE_PROBLEMS as error:
        print(f"rules-engine worker: {database_problem(error, url)}", file=sys.stderr)
        return 2
    engine = Engine(store, rules) if rules is not None else None
    firer = TimerFirer(engine) if engine is not None else None
    name = f"{socket.gethostname()}:{os.getpid()}"
    workers = [OutboxWorker(store, worker_id=f"{name}:{n}", engine=engine,
                            lease_seconds=args.lease, max_age=args.max_age,
                            timeout=args.timeout, guard=guard)
               for n in range(args.threads)]
    if args.once:
        print(run_until_idle(workers, firer))
        store.dispose()
        return 0
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    runners: list[OutboxWorker | TimerFirer] = [*workers, *([firer] if firer else [])]
    threads = [threading.Thread(target=w.run_forever, args=(stop,), kwargs={"poll_seconds": args.poll})
               for w in runners]
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
