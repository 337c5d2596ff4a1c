"""What one event counts for in the operations metrics (``/metrics``), read from its trace.

The same tally feeds the web app's in-process counters and the counts the engine keeps in
the database for the events it applies elsewhere (timer firings, the delivery worker's
``message.failed``), so both count alike.
"""
from __future__ import annotations

from collections import Counter

from rules_engine.domain.model import Event
from rules_engine.trace.forms import result_of
from rules_engine.trace.shapes import StoredTrace

# Each metric's label names, in the order of the label values a tally gives it.
LABELS: dict[str, tuple[str, ...]] = {
    "events_received": ("type", "channel", "status"),
    "rules_matched": ("rule_id",),
    "rules_fired": ("rule_id",),
    "actions": ("action", "outcome"),
}

CountKey = tuple[str, tuple[str, ...]]  # a metric of LABELS, and its label values


def tally(event: Event, status: str, trace: StoredTrace | None) -> Counter[CountKey]:
    """What an event processed with ``status`` counts for: the event itself and, when it
    has a trace (not a repeat), every rule its trigger matched (a disabled rule is not
    counted), every rule that fired, and every action run, by outcome."""
    counts: Counter[CountKey] = Counter()
    counts["events_received", (str(event.type), event.channel or "", status)] += 1
    for step in trace["steps"] if trace is not None else ():
        for rule in step["rules"]:
            result = result_of(rule)
            if result == "disabled":
                continue
            counts["rules_matched", (rule["rule_id"],)] += 1
            if result == "fired":
                counts["rules_fired", (rule["rule_id"],)] += 1
            for action in rule.get("actions", []):
                counts["actions", (action.get("action", "?"), action["outcome"])] += 1
    return counts
