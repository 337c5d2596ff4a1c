"""Operations metrics in the Prometheus exposition format (``GET /metrics``).

What the web app applies is counted in its processes (source ``web``): under gunicorn each
worker is a process, and ``rules-engine serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a
fresh directory so that a scrape sees every worker's counts. What the engine applies in
other processes (timer firings from ``tick`` or the worker, source ``timer``; the delivery
worker's ``message.failed``, source ``worker``) is counted in the database by the
transaction that applied it, and read at each scrape into the same metrics.
"""
from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any, ParamSpec

from flask import Blueprint, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from rules_engine import Store
from rules_engine.domain.model import Event
from rules_engine.engine import Result
from rules_engine.people import Role
from rules_engine.trace.counts import LABELS, tally

from .access import access
from .outbox_metrics import OutboxCollector
from .services import engine

_HELP = {
    "events_received": "Events received, by type, channel, status and source",
    "rules_matched": "Rules whose trigger matched an event",
    "rules_fired": "Rules whose conditions held, so they ran",
    "actions": "Actions run, by type and outcome",
}
# what rules_engine.trace.counts tallies, labelled by the source that applied the event
COUNTED = {name: Counter(f"rules_engine_{name}", _HELP[name], [*LABELS[name], "source"])
           for name in LABELS}
SKIPPED = Counter("rules_engine_items_skipped", "Webhook items acknowledged without an event, "
                  "by channel and reason", ["channel", "reason"])
REJECTED = Counter("rules_engine_requests_rejected", "Requests refused, by reason", ["reason"])
LATENCY = Histogram("rules_engine_event_processing_seconds", "Time to apply one event",
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))

blueprint = Blueprint("observability", __name__)
log = logging.getLogger("rules_engine.metrics")
P = ParamSpec("P")


_CHILDREN: dict[tuple[Any, ...], Any] = {}  # (metric, *labels) -> its labelled child


def _child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, looked up once (prometheus_client checks the labels and
    takes a lock on every call; a process sees a bounded set of label values)."""
    key = (metric, *labels)
    child = _CHILDREN.get(key)
    if child is None:
        child = _CHILDREN[key] = metric.labels(*labels)
    return child


def _never_fails(record: Callable[P, None]) -> Callable[P, None]:
    """Counting is never a reason to fail a request (an applied event answered 5xx would
    be a false answer): a failure to count is logged and the request goes on."""

    @functools.wraps(record)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            record(*args, **kwargs)
        except Exception:
            log.exception("metrics: %s failed; the request goes on", record.__name__)

    return guarded


@_never_fails
def record_event(event: Event, result: Result, seconds: float) -> None:
    """Count one event the web app processed and, unless it was a repeat, what its rules
    did (source ``web``)."""
    for (name, labels), count in tally(event, result.status, result.stored_trace).items():
        _child(COUNTED[name], *labels, "web").inc(count)
    LATENCY.observe(seconds)


@_never_fails
def record_skipped(channel: str, reason: str) -> None:
    _child(SKIPPED, channel, reason).inc()


@_never_fails
def record_rejection(reason: str) -> None:
    _child(REJECTED, reason).inc()


class StoredCounts(Collector):
    """What the engine counted in the database (``Engine.fire_due``, the worker's
    ``message.failed``), as the counters of ``COUNTED``, labelled by source."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        families = {name: CounterMetricFamily(f"rules_engine_{name}", _HELP[name],
                                              labels=[*LABELS[name], "source"])
                    for name in LABELS}
        with self.store.read() as tx:
            counted = tx.counts()
        for source, name, labels, count in counted:
            if name in families:  # (rows of a metric a later release dropped: left out)
                families[name].add_metric([*labels, source], count)
        yield from families.values()


class _Merged(Collector):
    """The families of several collectors, those of the same name as one (the exposition
    format allows a name once); their samples must differ by label."""

    def __init__(self, *sources: Collector) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for source in self.sources:
            for family in source.collect():
                kept = families.setdefault(family.name, family)
                if kept is not family:
                    kept.samples.extend(family.samples)
        yield from families.values()


@blueprint.get("/metrics")
@access(Role.VIEWER)
def metrics() -> Response:
    """Counters and the latency histogram (this app's processes and the database's
    counts), and the outbox's state, for Prometheus to scrape."""
    counted_here: Collector = (MultiProcessCollector(None)
                               if os.environ.get("PROMETHEUS_MULTIPROC_DIR") else REGISTRY)
    store = engine().store
    registry = CollectorRegistry()
    registry.register(_Merged(counted_here, StoredCounts(store)))
    registry.register(OutboxCollector(store))
    return Response(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
