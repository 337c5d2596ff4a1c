"""Rendering a stored trace as a readable tree: what fired, and why each other rule did not."""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Protocol

from rules_engine.domain.model import AnyEventType, event_type
from rules_engine.trace.shapes import ConditionLine, RuleEntry, Trace


class FilteredRule(Protocol):
    """A rule that a trigger's channel filter left out (``rules.ruleset.Rule`` is one)."""

    @property
    def id(self) -> str: ...
    @property
    def file(self) -> str: ...
    @property
    def line(self) -> int: ...
    @property
    def channels(self) -> frozenset[str] | None: ...


class ChannelFilters(Protocol):
    """What rendering needs of a rule set (``rules.ruleset.RuleSet`` is one): its version,
    and the rules a step's channel left out."""

    @property
    def version(self) -> str: ...

    def excluded_by_channel(self, event: AnyEventType,
                            channel: str | None) -> Iterable[FilteredRule]: ...

_MARKS = {"fired": "FIRED", "conditions_false": "no", "condition_error": "ERROR",
          "disabled": "off", "skipped_by_stop": "skip", "skipped_once": "once",
          "skipped_cooldown": "cooldown"}


def _condition_line(condition: ConditionLine, indent: str) -> str:
    verdict = f"error: {condition['error']}" if "error" in condition else str(condition["result"]).lower()
    return f"{indent}{condition['path']}: {condition['expr']}  -> {verdict}"


def _rule_lines(rule: RuleEntry) -> list[str]:
    mark = _MARKS.get(rule["result"], rule["result"])
    where = f"{rule['file']}:{rule['line']}, priority {rule['priority']}"
    head = f"    [{mark}] {rule['rule_id']} ({where})"
    if rule.get("detail"):
        head += f": {rule['detail']}"
    lines = [head]
    shown = {action["path"] for action in rule.get("actions", [])}
    under: dict[str | None, list[ConditionLine]] = {}  # a choose's path -> its branches' conditions
    for condition in rule.get("conditions", []):
        under.setdefault(_choose_of(condition["path"], shown), []).append(condition)
    lines.extend(_condition_line(condition, "        ") for condition in under.get(None, []))
    for action in rule.get("actions", []):
        lines.append(f"        {action['path']} {action['action']}: {action['outcome']} ({action['detail']})")
        lines.extend(_condition_line(condition, "            ")
                     for condition in under.get(action["path"], []))
    return lines


_BRANCH_CONDITION = re.compile(r"(.*)/choose/branches/\d+/conditions(?:/.*)?")


def _choose_of(path: str, shown: set[str]) -> str | None:
    """The path of the choose (among ``shown``) a branch condition belongs to, if any."""
    found = _BRANCH_CONDITION.fullmatch(path)
    return found.group(1) if found and found.group(1) in shown else None


def _shown(value: Any) -> str:
    """A value as a person reads it: ``{name=plan, value=gold}``, what is None (unset)
    left out."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}={_shown(item)}" for key, item in value.items()
                               if item is not None) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_shown(item) for item in value if item is not None) + "]"
    return str(value)


def render_trace(trace: Trace, rules: ChannelFilters | None = None) -> str:
    """The trace of one event as indented text.

    With the rule set that processed it, rules left out by their channel filter are listed too.
    """
    if rules is not None and rules.version != trace["ruleset_version"]:
        rules = None  # the rules changed since: do not guess
    head = [f"{trace['type']}" + (f" on {trace['channel']}" if trace["channel"] else ""),
            *([f"contact {trace['contact_id']}"] if trace["contact_id"] is not None else []),
            f"rules version {trace['ruleset_version']}"]
    lines = [f"event {trace['event_id']}: {', '.join(head)}"]
    for step in trace["steps"]:
        params = _shown(step.get("params") or {})
        lines.append(f"  {step['event']} (depth {step['depth']})"
                     + (f" {params}" if params != "{}" else ""))
        for builtin in step.get("builtin", []):
            lines.append(f"    built-in {builtin['operation']}: {builtin['outcome']} ({builtin['detail']})")
        if not step["rules"]:
            lines.append("    no rule triggers on this event")
        for rule in step["rules"]:
            lines.extend(_rule_lines(rule))
        if rules is not None:
            channel = step.get("channel", trace["channel"])  # traces stored whole may lack it
            for excluded in rules.excluded_by_channel(event_type(step["event"]), channel):
                lines.append(f"    [not considered] {excluded.id} ({excluded.file}:{excluded.line}): "
                             f"its trigger channels ({', '.join(sorted(excluded.channels or ()))}) "
                             f"leave out {channel or 'events with no channel'}")
    bound = trace["depth_bound"]
    if bound["reached"]:
        dropped = ", ".join(f"{d['event']} at depth {d['depth']}" for d in bound["dropped"])
        lines.append(f"  depth bound {bound['max_depth']} reached: not processed: {dropped}")
    fired = ", ".join(trace["fired"]) or "none"
    lines.append(f"  rules fired: {fired}; changes: {len(trace['changes'])}")
    return "\n".join(lines) + "\n"
