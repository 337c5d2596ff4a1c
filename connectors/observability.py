"""Operations metrics in the Prometheus exposition format (``GET /metrics``).

Under gunicorn each worker is a process: ``rules-engine serve`` points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory so that a scrape sees every worker's counts.
"""
from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
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
from prometheus_client.multiprocess import MultiProcessCollector

from rules_engine.domain.model import Event
from rules_engine.engine import Result
from rules_engine.people import Role
from rules_engine.trace.forms import result_of

from .access import access
from .outbox_metrics import OutboxCollector
from .services import engine

EVENTS = Counter("rules_engine_events_received", "Events received, by type, channel and status",
                 ["type", "channel", "status"])
RULES_MATCHED = Counter("rules_engine_rules_matched", "Rules whose trigger matched an event",
                        ["rule_id"])
RULES_FIRED = Counter("rules_engine_rules_fired", "Rules whose conditions held, so they ran",
                      ["rule_id"])
ACTIONS = Counter("rules_engine_actions", "Actions run, by type and outcome", ["action", "outcome"])
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
    """Count one processed event and, unless it was a repeat, what its rules did."""
    _child(EVENTS, str(event.type), event.channel or "", result.status).inc()
    LATENCY.observe(seconds)
    if result.stored_trace is None:  # a repeat, or a status callback aimed at no message
        return
    for step in result.stored_trace["steps"]:
        for rule in step["rules"]:
            outcome = result_of(rule)  # the stored (compact) trace: see trace.shapes
            if outcome == "disabled":
                continue
            _child(RULES_MATCHED, rule["rule_id"]).inc()
            if outcome == "fired":
                _child(RULES_FIRED, rule["rule_id"]).inc()
            for action in rule.get("actions", []):
                _child(ACTIONS, action.get("action", "?"), action["outcome"]).inc()


@_never_fails
def record_skipped(channel: str, reason: str) -> None:
    _child(SKIPPED, channel, reason).inc()


@_never_fails
def record_rejection(reason: str) -> None:
    _child(REJECTED, reason).inc()


@blueprint.get("/metrics")
@access(Role.VIEWER)
def metrics() -> Response:
    """Counters and the latency histogram, and the outbox's state, for Prometheus to scrape."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    stored = CollectorRegistry()
    stored.register(OutboxCollector(engine().store))
    return Response(generate_latest(registry) + generate_latest(stored),
                    headers={"Content-Type": CONTENT_TYPE_LATEST})
