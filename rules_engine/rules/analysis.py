"""Static checks over a whole rule set, at validation time.

- cycles: rule A's actions emit an event that triggers rule B ... that triggers A again.
  A cycle is a warning when some rule on it has conditions that may break it, and an
  error when none has (it would run until the depth bound every time);
- rules that can never fire: conditions that are constant false, a welcome trigger limited
  to channels that have no welcome event, a trigger on a fact nothing emits;
- rules that open and close a conversation in the same pass;
- idle rules: a ``wait`` in one (its conversation is the idle one: the wait outlives the
  point), one whose actions do nothing to the conversation (it fires once, then the
  conversation stays idle until the next message), one whose ``for`` is shorter than its
  ``cooldown`` (the cooldown swallows firings).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import TypedDict

from rules_engine.domain.channels import reply_windows, welcome_channels
from rules_engine.domain.errors import RulesEngineError, RuleValidationError, RuleWarning
from rules_engine.domain.model import CHANNEL_INPUT_TYPES, MESSAGE_STATUS_TYPES, EventType
from rules_engine.rules.ruleset import Rule

# Facts the engine itself emits while handling inputs (before or without any rule), and
# what its timers fire.
BUILT_IN_FACTS = frozenset({
    EventType.CONVERSATION_OPENED, EventType.CONVERSATION_CLOSED, EventType.CONTACT_CREATED,
    EventType.CONTACTS_MERGED, EventType.CONTACT_TAG_ADDED, EventType.CONTACT_TAG_REMOVED,
    EventType.BOT_STATUS_CHANGED, EventType.CONVERSATION_IDLE,
})
# Actions that act on the conversation itself (close it, route it, write in it).
_ACTS_ON_CONVERSATION = frozenset({"close_conversation", "assign", "send_message",
                                   "send_template"})


def _emits(rule: Rule) -> set[EventType]:
    return {event for action in rule.actions for event in action.emits}


def _channels_meet(first: frozenset[str] | None, second: frozenset[str] | None) -> bool:
    return first is None or second is None or bool(first & second)


def _triggers(source: Rule, target: Rule) -> bool:
    """Whether running ``source`` can start ``target`` (facts keep the event's channel)."""
    return target.event in _emits(source) and _channels_meet(source.channels, target.channels)


def _cycles(rules: Sequence[Rule]) -> list[list[Rule]]:
    """Strongly connected groups of rules that can start one another (Tarjan)."""
    edges = {rule.id: [t for t in rules if _triggers(rule, t)] for rule in rules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[Rule] = []
    on_stack: set[str] = set()
    groups: list[list[Rule]] = []

    def visit(rule: Rule) -> None:
        index[rule.id] = low[rule.id] = len(index)
        stack.append(rule)
        on_stack.add(rule.id)
        for target in edges[rule.id]:
            if target.id not in index:
                visit(target)
                low[rule.id] = min(low[rule.id], low[target.id])
            elif target.id in on_stack:
                low[rule.id] = min(low[rule.id], index[target.id])
        if low[rule.id] == index[rule.id]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member.id)
                group.append(member)
                if member is rule:
                    break
            if len(group) > 1 or rule in edges[rule.id]:
                groups.append(sorted(group, key=rules.index))

    for rule in rules:
        if rule.id not in index:
            visit(rule)
    return groups


class _Where(TypedDict):
    """Where a finding is: the location fields of ``RulesEngineError``."""

    file: str
    line: int
    column: int
    rule_id: str
    path: str | None


def _where(rule: Rule, path: str | None = None) -> _Where:
    return {"file": rule.file, "line": rule.line, "column": rule.column, "rule_id": rule.id,
            "path": path}


def _cycle_findings(rules: Sequence[Rule]) -> Iterable[RulesEngineError]:
    for group in _cycles(rules):
        names = " -> ".join(rule.id for rule in group) + f" -> {group[0].id}"
        if all(rule.condition is None or rule.condition.constant() is True for rule in group):
            yield RuleValidationError(
                f"these rules trigger one another with no condition to stop them: {names}",
                hint="add a condition that breaks the loop (e.g. on params.tag), or remove an action",
                **_where(group[0]))
        else:
            yield RuleWarning(
                f"these rules may trigger one another in a loop: {names} (their conditions "
                f"must break it, or the depth bound will)", **_where(group[0]))


def _never_fires(rules: Sequence[Rule]) -> Iterable[RulesEngineError]:
    emitted = BUILT_IN_FACTS | {event for rule in rules for event in _emits(rule)}
    for rule in rules:
        if rule.condition is not None and rule.condition.constant() is False:
            yield RuleWarning("this rule can never fire: its conditions are always false",
                              hint="fix the condition, or set `enabled: false` to park the rule",
                              **_where(rule, "conditions"))
        if rule.event is EventType.WELCOME and rule.channels is not None:
            without = sorted(rule.channels - welcome_channels())
            if without:
                what = "this rule can never fire" if len(without) == len(rule.channels) else "never fires on"
                yield RuleWarning(
                    f"{what}: {', '.join(without)} send no welcome event",
                    hint=f"welcome events come from: {', '.join(sorted(welcome_channels()))}",
                    **_where(rule, "trigger/channels"))
        if (rule.event not in CHANNEL_INPUT_TYPES | MESSAGE_STATUS_TYPES
                and rule.event not in emitted):
            yield RuleWarning(f"this rule can never fire: nothing emits {rule.event}",
                              hint=f"{rule.event} is emitted by a rule action; no enabled rule has one",
                              **_where(rule, "trigger/event"))


def _open_and_close(rules: Sequence[Rule]) -> Iterable[RulesEngineError]:
    def opens(rule: Rule) -> bool:
        return EventType.CONVERSATION_OPENED in _emits(rule)

    def closes(rule: Rule) -> bool:
        return EventType.CONVERSATION_CLOSED in _emits(rule)

    reachable = {rule.id: _reachable(rule, rules) for rule in rules}
    for rule in rules:
        if opens(rule) and closes(rule):
            yield RuleWarning("this rule opens and closes a conversation in the same pass",
                              hint="keep one of the two actions", **_where(rule, "actions"))
    for opener in filter(opens, rules):
        for closer in filter(closes, rules):
            if closer is opener:
                continue
            same_event = (closer.event == opener.event
                          and _channels_meet(opener.channels, closer.channels))
            if same_event or closer.id in reachable[opener.id]:
                how = f"both on {opener.event}" if same_event else f"through events {opener.id} emits"
                yield RuleWarning(
                    f"'{opener.id}' opens and '{closer.id}' closes a conversation in the same "
                    f"pass ({how})", hint="give them conditions that exclude each other",
                    **_where(closer, "actions"))


def _reachable(start: Rule, rules: Sequence[Rule]) -> set[str]:
    seen: set[str] = set()
    frontier = [start]
    while frontier:
        current = frontier.pop()
        for target in rules:
            if target.id not in seen and _triggers(current, target):
                seen.add(target.id)
                frontier.append(target)
    return seen


def _idle_rules(rules: Sequence[Rule]) -> Iterable[RulesEngineError]:
    for rule in rules:
        if rule.idle is None:
            continue
        for index, action in enumerate(rule.actions):
            if action.name == "wait":
                yield RuleWarning(
                    "a wait in an idle rule: the conversation is already idle, and a message "
                    "that ends the idleness does not stop the wait",
                    hint="use a longer `for` instead, or a second idle rule",
                    **_where(rule, f"actions/{index}"))
        if not any(action.name in _ACTS_ON_CONVERSATION for action in rule.actions):
            yield RuleWarning(
                "this idle rule does nothing to the conversation: it fires once, and the "
                "conversation stays idle until someone writes",
                hint="close, assign or write in the conversation (close_conversation, assign, "
                     "send_message)", **_where(rule, "actions"))
        if rule.cooldown is not None and rule.cooldown > rule.idle.after:
            yield RuleWarning(
                f"the cooldown ({rule.cooldown}) is longer than the idle time "
                f"({rule.idle.text}): firings in between are skipped",
                hint="shorten the cooldown or drop it (an idle rule fires once per quiet spell)",
                **_where(rule, "cooldown"))


def _reply_windows(rules: Sequence[Rule]) -> Iterable[RulesEngineError]:
    """Free text a rule sends a day or more after the contact last wrote (an idle clock on
    the contact's messages, then waits) fails on channels with a reply window."""
    windows = reply_windows()
    for rule in rules:
        quiet = rule.idle.after if rule.idle is not None and rule.idle.of != "agent" else timedelta()
        for index, action in enumerate(rule.actions):
            if action.name == "wait":
                quiet += getattr(action, "duration", timedelta())
                continue
            if action.name != "send_message" or "tag" in action.arguments:
                continue
            named = action.arguments.get("channel")
            channels = {named} if named else rule.channels if rule.channels is not None else set(windows)
            closed = sorted(c for c in channels if c in windows and quiet >= windows[c])
            if closed:
                yield RuleWarning(
                    f"send_message runs at least {_hours(quiet)} after the contact's latest "
                    f"message: on {', '.join(closed)} free text is refused after "
                    f"{_hours(min(windows[c] for c in closed))} (the row fails outside_window)",
                    hint="on WhatsApp use send_template; on Messenger add tag: HUMAN_AGENT "
                         "(7 days); or limit the trigger's channels",
                    **_where(rule, f"actions/{index}/send_message"))


def _hours(duration: timedelta) -> str:
    hours = duration / timedelta(hours=1)
    return f"{hours:g}h"


def analyse(rules: Sequence[Rule]) -> tuple[list[RulesEngineError], list[RuleWarning]]:
    """(errors, warnings) about how the enabled rules work together."""
    enabled = [rule for rule in rules if rule.enabled]
    findings = [*_cycle_findings(enabled), *_never_fires(enabled), *_open_and_close(enabled),
                *_idle_rules(enabled), *_reply_windows(enabled)]
    errors = [f for f in findings if not isinstance(f, RuleWarning)]
    warnings = [f for f in findings if isinstance(f, RuleWarning)]
    return errors, warnings
