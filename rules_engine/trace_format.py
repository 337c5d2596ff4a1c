"""The trace as stored (compact) and as read (expanded).

An event's stored trace keeps only what the event decided. Each rule is named by id and
each condition by path (under ``conditions``, without that prefix), with its result (and a
preview of its value when the value is not just true or false); each action keeps what it
did. What every event of a rule set would
repeat (a rule's file, line and priority, its conditions' text, its actions' arguments,
secrets redacted) is kept once per rule-set version, as that version's catalog. Anything
that can be derived is left out: what the event's ledger row holds (``LEDGER_KEYS``), the
list of changes (the applied lines of the steps), a step's channel and contact when they
are the event's, a rule's result when it is implied (conditions and nothing else: they
were false; actions: it fired), the depth bound unless it was reached, an empty or null
field.

``expand`` joins a compact trace and its catalog back into the full trace that ``explain``,
the API and rule tests read.
"""
from __future__ import annotations

from typing import Any

Catalog = dict[str, dict[str, Any]]
LEDGER_KEYS = ("event_id", "type", "channel", "contact_id", "received_at")


def to_store(trace: dict[str, Any]) -> dict[str, Any]:
    """The trace as stored beside its ledger row (without what that row holds)."""
    return {key: value for key, value in trace.items() if key not in LEDGER_KEYS}


def stored_conditions(log: dict[str, Any]) -> dict[str, Any]:
    """A rule's condition results as stored: paths under ``conditions`` without that
    prefix ("/all/0"; "" for the one condition), a wait's ``if`` as it is."""
    return {path[10:] if path.startswith("conditions") else path: value
            for path, value in log.items()}


def result_of(entry: dict[str, Any]) -> str:
    """A stored rule entry's result, the implied ones included."""
    return entry.get("result") or ("fired" if "actions" in entry else "conditions_false")


def _condition_path(key: str) -> str:
    return key if key.startswith("actions/") else f"conditions{key}"


def outcome_line(outcome: dict[str, Any], action: str | None = None) -> dict[str, Any]:
    """The stored form of what a built-in operation (or, with ``action``, an action) did."""
    line = {"outcome": outcome["outcome"], "detail": outcome["detail"]}
    if action is not None:
        line["action"] = action
    if outcome["operation"] != action:
        line["operation"] = outcome["operation"]
    if outcome["conversation_id"] is not None:
        line["conversation_id"] = outcome["conversation_id"]
    return line


def _outcome(line: dict[str, Any]) -> dict[str, Any]:
    return {"operation": line.get("operation", line.get("action")), "outcome": line["outcome"],
            "detail": line["detail"], "conversation_id": line.get("conversation_id")}


def _condition(path: str, logged: Any, sources: dict[str, str]) -> dict[str, Any]:
    entry = {"path": path, "expr": sources.get(path, "?")}
    if isinstance(logged, bool):
        return {**entry, "result": logged, "value": logged}
    return {**entry, **logged}


def _expand_rule(entry: dict[str, Any], known: dict[str, Any] | None,
                 changes: list[dict[str, Any]]) -> dict[str, Any]:
    known = known or {}
    sources = known.get("conditions", {})
    conditions = [_condition(_condition_path(key), logged, sources)
                  for key, logged in entry.get("conditions", {}).items()]
    arguments = known.get("args", [])
    actions = []
    for index, line in enumerate(entry.get("actions", ()), start=entry.get("from", 0)):
        outcome = _outcome(line)
        actions.append({"path": f"actions/{index}", "action": line["action"],
                        "args": arguments[index] if index < len(arguments) else {}, **outcome})
        if outcome["outcome"] == "applied":
            changes.append(outcome)
    result = result_of(entry)
    expanded = {"rule_id": entry["rule_id"], "file": known.get("file", "?"),
                "line": known.get("line", "?"), "priority": known.get("priority", "?"),
                "conditions": conditions, "actions": actions, "result": result}
    detail = entry.get("detail")
    if detail is None and result == "conditions_false":
        failed = [c["path"] for c in conditions if not c["result"]]
        detail = f"false: {', '.join(failed)}" if failed else "conditions false"
    if detail is not None:
        expanded["detail"] = detail
    return expanded


def expand(trace: dict[str, Any], catalog: Catalog | None) -> dict[str, Any]:
    """The full trace of a compact one, with its rule set's ``catalog`` (None when that
    catalog is not known: file, line, priority and texts then read "?"). A trace stored
    whole, as releases before the compact form wrote them, is returned as it is."""
    if "depth_bound" in trace:
        return trace
    catalog = catalog or {}
    changes: list[dict[str, Any]] = []
    if "created_contact" in trace:
        changes.append({"operation": "create_contact", "outcome": "applied",
                        "detail": f"created contact {trace['created_contact']}"})
    steps = []
    for step in trace["steps"]:
        builtin = [_outcome(line) for line in step.get("builtin", ())]
        changes.extend(line for line in builtin if line["outcome"] == "applied")
        rules = [_expand_rule(rule, catalog.get(rule["rule_id"]), changes)
                 for rule in step["rules"]]
        expanded = {"event": step["event"], "depth": step["depth"],
                    "channel": step.get("channel", trace.get("channel")),
                    "contact_id": step.get("contact_id", trace.get("contact_id")),
                    "conversation_id": step.get("conversation_id"), "rules": rules}
        if "params" in step:
            expanded["params"] = step["params"]
        if "builtin" in step:
            expanded["builtin"] = builtin
        steps.append(expanded)
    dropped = trace.get("dropped", [])
    top = {key: value for key, value in trace.items()
           if key not in ("steps", "created_contact", "max_depth", "dropped")}
    return {**top, "steps": steps, "changes": changes,
            "depth_bound": {"max_depth": trace.get("max_depth"), "reached": bool(dropped),
                            "dropped": dropped}}


def read_trace(tx: Any, event_id: str) -> dict[str, Any] | None:
    """An event's trace as readers see it: the stored one (``tx.stored_trace``, a store's
    unit of work) expanded with its rule set's catalog."""
    stored = tx.stored_trace(event_id)
    if stored is None:
        return None
    return expand(stored, tx.rule_set_catalog(stored.get("ruleset_version")))
