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
the API and rule tests read. The shapes of both forms are in ``shapes``.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol, cast

from rules_engine.trace.shapes import (
    ActionLine,
    Catalog,
    CatalogEntry,
    ConditionLine,
    Outcome,
    RuleEntry,
    Step,
    StoredCondition,
    StoredOutcome,
    StoredRule,
    StoredTrace,
    Trace,
)

LEDGER_KEYS = ("event_id", "type", "channel", "contact_id", "received_at")


class TraceReader(Protocol):
    """What ``read_trace`` needs of a unit of work (the store's provides it)."""

    def stored_trace(self, event_id: str) -> dict[str, Any] | None: ...

    def rule_set_catalog(self, version: str | None) -> dict[str, Any] | None: ...


def to_store(trace: StoredTrace) -> dict[str, Any]:
    """The trace as stored beside its ledger row (without what that row holds)."""
    return {key: value for key, value in trace.items() if key not in LEDGER_KEYS}


def stored_conditions(log: Mapping[str, StoredCondition]) -> dict[str, StoredCondition]:
    """A rule's condition results as stored: paths under ``conditions`` without that
    prefix ("/all/0"; "" for the one condition), a wait's ``if`` as it is."""
    return {path[10:] if path.startswith("conditions") else path: value
            for path, value in log.items()}


def stored_choice(log: Mapping[str, StoredCondition]) -> dict[str, StoredCondition]:
    """A choose's condition results as its line keeps them: ``branches/1/conditions/all/0``
    (a path under the choose) as ``1/all/0``."""
    return {path.removeprefix("branches/").replace("/conditions", "", 1): value
            for path, value in log.items()}


def _branch_condition_path(choose: str, key: str) -> str:
    """The full path of a choose's condition kept as ``key`` (see ``stored_choice``)."""
    branch, _, rest = key.partition("/")
    return f"{choose}/choose/branches/{branch}/conditions" + (f"/{rest}" if rest else "")


def _choice_detail(line: StoredOutcome, branches: int | None) -> str:
    """Why a choose ran what it did: the branch that ran, each branch tried before it
    (false, or failed with its error), and the later ones, not tried. ``branches``: how
    many it has (from the catalog), None when unknown."""
    chosen = line.get("branch")
    tried: dict[int, str] = {}
    for key, logged in line.get("conditions", {}).items():
        branch = int(key.partition("/")[0])
        if isinstance(logged, dict) and "error" in logged:
            tried[branch] = f"branch {branch} failed, counted false: {logged['error']}"
        else:
            tried.setdefault(branch, f"branch {branch} false")
    head = ("no branch held and there is no default" if chosen is None
            else "default ran" if chosen == "default" else f"branch {chosen} ran")
    later = range(chosen + 1, branches) if isinstance(chosen, int) and branches else ()
    return "; ".join([head, *(note for branch, note in sorted(tried.items()) if branch != chosen),
                      *(f"branch {branch} not tried" for branch in later)])


def result_of(entry: StoredRule) -> str:
    """A stored rule entry's result, the implied ones included."""
    return entry.get("result") or ("fired" if "actions" in entry else "conditions_false")


def _condition_path(key: str) -> str:
    return key if key.startswith("actions/") else f"conditions{key}"


def outcome_line(outcome: Mapping[str, Any], action: str | None = None) -> StoredOutcome:
    """The stored form of what a built-in operation (or, with ``action``, an action) did."""
    line: StoredOutcome = {"outcome": outcome["outcome"], "detail": outcome["detail"]}
    if action is not None:
        line["action"] = action
    if outcome["operation"] != action:
        line["operation"] = outcome["operation"]
    if outcome["conversation_id"] is not None:
        line["conversation_id"] = outcome["conversation_id"]
    return line


def _outcome(line: StoredOutcome) -> Outcome:
    return {"operation": line.get("operation", line.get("action")), "outcome": line["outcome"],
            "detail": line.get("detail", ""), "conversation_id": line.get("conversation_id")}


def _condition(path: str, logged: StoredCondition, sources: Mapping[str, str]) -> ConditionLine:
    if isinstance(logged, bool):
        return {"path": path, "expr": sources.get(path, "?"), "result": logged, "value": logged}
    return {"path": path, "expr": sources.get(path, "?"), **logged}


# a step into a choose's branch in an action's path, e.g. /choose/branches/0/actions/1
_INTO_BRANCH = re.compile(r"/choose/(?:branches/(\d+)/actions|(default))/(\d+)")


def _arguments_at(arguments: list[dict[str, Any]], path: str) -> dict[str, Any]:
    """The catalog's arguments of the action at ``path``: ``actions/2``, or inside a
    choose (whose arguments list each branch's actions as ``{name: arguments}``);
    {} when the catalog does not have it."""
    top, _, inside = path.removeprefix("actions/").partition("/")
    try:
        found: Any = arguments[int(top)]
        for branch, default, index in _INTO_BRANCH.findall(f"/{inside}"):
            actions = found["default"] if default else found["branches"][int(branch)]["actions"]
            (found,) = actions[int(index)].values()
    except (LookupError, TypeError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _top_level(start: int | str) -> int:
    """The index of the first top-level action a rule's lines without a ``path`` begin
    at: ``from`` itself, or for a rule resumed inside a choose, the action after it."""
    if isinstance(start, int):
        return start
    top = start.removeprefix("actions/").partition("/")[0]
    return int(top) + 1 if top.isdigit() else 0


def _action_lines(entry: StoredRule, known: CatalogEntry | None,
                  conditions: list[ConditionLine]) -> list[ActionLine]:
    """The rule's action lines, paths and arguments restored; a choose's line is worded
    and its conditions go to ``conditions``."""
    arguments = known["args"] if known else []
    sources = known["conditions"] if known else {}
    lines: list[ActionLine] = []
    index = _top_level(entry.get("from", 0))
    for line in entry.get("actions", ()):
        path = line.get("path")
        if path is None:
            path, index = f"actions/{index}", index + 1
        args, outcome = _arguments_at(arguments, path), _outcome(line)
        expanded: ActionLine = {
            "path": path, "action": line.get("action", "?"), "args": args,
            "operation": outcome["operation"], "outcome": outcome["outcome"],
            "detail": outcome["detail"], "conversation_id": outcome["conversation_id"]}
        if "conditions" in line:  # a choose
            branches = args.get("branches")
            expanded["detail"] = _choice_detail(
                line, len(branches) if isinstance(branches, list) else None)
            conditions.extend(_condition(_branch_condition_path(path, key), logged, sources)
                              for key, logged in line["conditions"].items())
        if "branch" in line:
            expanded["branch"] = line["branch"]
        lines.append(expanded)
    return lines


def _expand_rule(entry: StoredRule, known: CatalogEntry | None,
                 changes: list[Outcome]) -> RuleEntry:
    sources = known["conditions"] if known else {}
    conditions = [_condition(_condition_path(key), logged, sources)
                  for key, logged in entry.get("conditions", {}).items()]
    actions = _action_lines(entry, known, conditions)
    changes.extend(_outcome(line) for line in entry.get("actions", ())
                   if line["outcome"] == "applied")
    result = result_of(entry)
    expanded: RuleEntry = {
        "rule_id": entry["rule_id"], "file": known["file"] if known else "?",
        "line": known["line"] if known else "?", "priority": known["priority"] if known else "?",
        "conditions": conditions, "actions": actions, "result": result}
    detail = entry.get("detail")
    if detail is None and result == "conditions_false":
        failed = [c["path"] for c in conditions if not c["result"]]
        detail = f"false: {', '.join(failed)}" if failed else "conditions false"
    if detail is not None:
        expanded["detail"] = detail
    return expanded


def expand(trace: Mapping[str, Any], catalog: Catalog | None) -> Trace:
    """The full trace of a compact one (a ``StoredTrace``, with or without its ledger
    keys), with its rule set's ``catalog`` (None when that catalog is not known: file,
    line, priority and texts then read "?"). A trace stored whole, as releases before the
    compact form wrote them, is returned as it is."""
    if "depth_bound" in trace:
        return cast(Trace, trace)
    stored = cast(StoredTrace, trace)
    catalog = catalog or {}
    changes: list[Outcome] = []
    if "created_contact" in stored:
        changes.append({"operation": "create_contact", "outcome": "applied",
                        "detail": f"created contact {stored['created_contact']}",
                        "conversation_id": None})
    steps: list[Step] = []
    for step in stored["steps"]:
        builtin = [_outcome(line) for line in step.get("builtin", ())]
        changes.extend(line for line in builtin if line["outcome"] == "applied")
        rules = [_expand_rule(rule, catalog.get(rule["rule_id"]), changes)
                 for rule in step["rules"]]
        expanded: Step = {"event": step["event"], "depth": step["depth"],
                          "channel": step.get("channel", stored.get("channel")),
                          "contact_id": step.get("contact_id", stored.get("contact_id")),
                          "conversation_id": step.get("conversation_id"), "rules": rules}
        if "params" in step:
            expanded["params"] = step["params"]
        if "builtin" in step:
            expanded["builtin"] = builtin
        steps.append(expanded)
    dropped = stored.get("dropped", [])
    top = {key: value for key, value in stored.items()
           if key not in ("steps", "created_contact", "max_depth", "dropped")}
    return cast(Trace, {**top, "steps": steps, "changes": changes, "depth_bound": {
        "max_depth": stored.get("max_depth"), "reached": bool(dropped), "dropped": dropped}})


def read_trace(tx: TraceReader, event_id: str) -> Trace | None:
    """An event's trace as readers see it: the stored one (``tx.stored_trace``, a store's
    unit of work) expanded with its rule set's catalog."""
    stored = tx.stored_trace(event_id)
    if stored is None:
        return None
    catalog = tx.rule_set_catalog(stored.get("ruleset_version"))
    return expand(stored, cast(Catalog | None, catalog))
