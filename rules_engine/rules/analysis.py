"""Static checks over a whole rule set, at validation time.

- cycles: rule A's actions emit an event that triggers rule B ... that triggers A again.
  A cycle is a warning when some rule on it has conditions that may break it, and an
  error when none has (it would run until the depth bound every time);
- rules that can never fire: conditions that are constant false, a welcome trigger limited
  to channels that have no welcome event, a trigger on a fact nothing emits;
- rules that open and close a conversation in the same pass;
- dead rules: a condition the trigger makes false (``not conversation.is_open`` on a new
  message: the engine has opened it), an action the built-in handling has already done
  (open_conversation on a message, close_conversation on ``RB_MARKDONE``);
- two rules that set the same assignee, team or field in one event's chain (the later
  one wins);
- a tag looked for in another case than the rules write it (``'VIP' in contact.tags``
  when the rules add ``vip``);
- idle rules: a ``wait`` in one (its conversation is the idle one: the wait outlives the
  point), one whose actions do nothing to the conversation (it fires once, then the
  conversation stays idle until the next message), one whose ``for`` is shorter than its
  ``cooldown`` (the cooldown swallows firings);
- ``choose`` branches that never run: after a branch whose conditions always hold (the
  later branches and the default), or whose own conditions are always false.

What a rule's actions emit, add or wait for counts the actions inside its choose branches.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, TypedDict

from rules_engine.domain.channels import reply_windows, welcome_channels
from rules_engine.domain.errors import (
    RulesEngineError,
    RuleValidationError,
    RuleWarning,
    did_you_mean,
)
from rules_engine.domain.inputs import BUILT_IN_FACTS, MARKDONE
from rules_engine.domain.model import (
    INPUT_TYPES,
    ONE_RULE_TYPES,
    AnyEventType,
    CustomEventType,
    EventType,
)
from rules_engine.domain.timers import as_date
from rules_engine.formats.events import Declared, params_problems
from rules_engine.language.conditions import AllOf, Condition, ExpressionCondition, NotOf
from rules_engine.language.expressions import ExpressionRuntimeError
from rules_engine.language.types import chain_of
from rules_engine.rules.actions import Action, Choose, Emit, walk
from rules_engine.rules.ruleset import Rule

# Facts the engine itself emits while handling inputs (before or without any rule), and
# what its timers fire.
TIMER_FACTS = frozenset({EventType.CONVERSATION_IDLE, EventType.DATE, EventType.SCHEDULE})
ENGINE_FACTS = frozenset().union(*BUILT_IN_FACTS.values()) | TIMER_FACTS
# Actions that act on the conversation itself (close it, route it, write in it).
_ACTS_ON_CONVERSATION = frozenset({"close_conversation", "assign", "send_message",
                                   "send_template"})


def _emits(rule: Rule) -> set[AnyEventType]:
    """What the rule's actions may emit (in any branch)."""
    return {event for _, action in walk(rule.actions) for event in action.emits}


def _channels_meet(first: frozenset[str] | None, second: frozenset[str] | None) -> bool:
    return first is None or second is None or bool(first & second)


def _by_trigger(rules: Sequence[Rule]) -> dict[AnyEventType, list[tuple[int, Rule]]]:
    """The rules on each trigger, with their places, in the rules' order."""
    by_event: dict[AnyEventType, list[tuple[int, Rule]]] = defaultdict(list)
    for place, rule in enumerate(rules):
        by_event[rule.event].append((place, rule))
    return by_event


Edges = dict[str, list[Rule]]  # rule id -> the rules running it can start, in the rules' order


def _edges(rules: Sequence[Rule]) -> Edges:
    """For each rule, the rules running it can start (on an event it emits, on a channel
    they share: facts keep the event's channel). Found through an index by trigger, so
    thousands of rules cost the edges there are, not every pair."""
    by_event = _by_trigger(rules)
    edges: Edges = {}
    for rule in rules:
        targets = sorted((place, target) for event in _emits(rule)
                         for place, target in by_event.get(event, ())
                         if _channels_meet(rule.channels, target.channels))
        edges[rule.id] = [target for _, target in targets]
    return edges


def _cycles(rules: Sequence[Rule], edges: Edges) -> list[list[Rule]]:
    """Strongly connected groups of rules that can start one another (Tarjan)."""
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


def _cycle_findings(rules: Sequence[Rule], edges: Edges) -> Iterable[RulesEngineError]:
    for group in _cycles(rules, edges):
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
    emitted = ENGINE_FACTS | {event for rule in rules for event in _emits(rule)}
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
        if isinstance(rule.event, CustomEventType):
            continue  # see _custom_events
        if rule.event not in INPUT_TYPES and rule.event not in emitted:
            yield RuleWarning(f"this rule can never fire: nothing emits {rule.event}",
                              hint=f"{rule.event} is emitted by a rule action; no enabled rule has one",
                              **_where(rule, "trigger/event"))


def _open_and_close(rules: Sequence[Rule], edges: Edges) -> Iterable[RulesEngineError]:
    def opens(rule: Rule) -> bool:
        return EventType.CONVERSATION_OPENED in _emits(rule)

    def closes(rule: Rule) -> bool:
        return EventType.CONVERSATION_CLOSED in _emits(rule)

    for rule in rules:
        if opens(rule) and closes(rule):
            yield RuleWarning("this rule opens and closes a conversation in the same pass",
                              hint="keep one of the two actions", **_where(rule, "actions"))
    closers = list(filter(closes, rules))
    for opener in filter(opens, rules):
        reachable = _reachable(opener, edges)
        for closer in closers:
            if closer is opener:
                continue
            same_event = (closer.event == opener.event
                          and _channels_meet(opener.channels, closer.channels))
            if same_event or closer.id in reachable:
                how = f"both on {opener.event}" if same_event else f"through events {opener.id} emits"
                yield RuleWarning(
                    f"'{opener.id}' opens and '{closer.id}' closes a conversation in the same "
                    f"pass ({how})", hint="give them conditions that exclude each other",
                    **_where(closer, "actions"))


def _reachable(start: Rule, edges: Edges) -> set[str]:
    """The rules that running ``start`` can start, directly or through others."""
    seen: set[str] = set()
    frontier = [start]
    while frontier:
        current = frontier.pop()
        for target in edges[current.id]:
            if target.id not in seen:
                seen.add(target.id)
                frontier.append(target)
    return seen


def _idle_rules(rules: Sequence[Rule]) -> Iterable[RulesEngineError]:
    for rule in rules:
        if rule.idle is None:
            continue
        for path, action in walk(rule.actions):
            if action.name == "wait":
                yield RuleWarning(
                    "a wait in an idle rule: the conversation is already idle, and a message "
                    "that ends the idleness does not stop the wait",
                    hint="use a longer `for` instead, or a second idle rule",
                    **_where(rule, path))
        if not any(action.name in _ACTS_ON_CONVERSATION for _, action in walk(rule.actions)):
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


def _dates_set_to_non_dates(rules: Sequence[Rule]) -> Iterable[RulesEngineError]:
    """A rule that sets a date rule's field to a literal that is not a date drops that
    contact's date timer: the date rule never fires for them."""
    dated = {rule.date.field: rule for rule in rules if rule.date is not None}
    for rule in rules:
        for path, action in walk(rule.actions):
            arguments = action.arguments
            if action.name != "set_field" or arguments["name"] not in dated \
                    or "value" not in arguments or as_date(arguments["value"]) is not None:
                continue
            yield RuleWarning(
                f"this sets {arguments['name']} to {arguments['value']!r}, which is not a date, "
                f"but rule '{dated[arguments['name']].id}' fires on the date in that field: "
                "for this contact it will not fire", hint="set an ISO date such as 2027-01-31, "
                "or keep the date in a field of its own", **_where(rule, f"{path}/set_field/value"))


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


# What the conversation in a trigger's context is known to be, and why.
_KNOWN_CONVERSATION: dict[AnyEventType, tuple[dict[str, Any], str]] = {
    **dict.fromkeys((EventType.MESSAGE_RECEIVED, EventType.WELCOME), (
        {"is_open": True, "status": "open"},
        "the engine opens the conversation of every incoming message before rules run")),
    EventType.CONVERSATION_OPENED: ({"is_open": True, "status": "open"},
                                    "the conversation has just opened"),
    EventType.CONVERSATION_IDLE: ({"is_open": True, "status": "open"},
                                  "an idle conversation is an open one"),
    EventType.CONVERSATION_CLOSED: ({"is_open": False, "status": "closed"},
                                    "the conversation has just closed"),
}
_ALWAYS = datetime(2026, 1, 1, tzinfo=timezone.utc)  # the partial checks read no clock


def _conjuncts(condition: Condition | None) -> Iterable[ExpressionCondition]:
    """The expressions that must all hold for the rule to fire."""
    if isinstance(condition, ExpressionCondition):
        yield condition
    elif isinstance(condition, AllOf):
        for child in condition.children:
            yield from _conjuncts(child)


def _must_fail(condition: Condition | None) -> set[str]:
    """The expressions (their text) that must be false for the rule to fire (``not:``)."""
    if isinstance(condition, NotOf) and isinstance(condition.child, ExpressionCondition):
        return {condition.child.expression.source}
    if isinstance(condition, AllOf):
        return set().union(*(_must_fail(child) for child in condition.children))
    return set()


def _exclusive(first: Rule, second: Rule) -> bool:
    """Whether one rule needs true what the other needs false."""
    def needs(rule: Rule) -> set[str]:
        return {leaf.expression.source for leaf in _conjuncts(rule.condition)}
    return bool(needs(first) & _must_fail(second.condition)
                or needs(second) & _must_fail(first.condition))


def _cannot_hold(rules: Sequence[Rule]) -> Iterable[RulesEngineError]:
    """A condition that what the trigger guarantees makes false (evaluated on that alone:
    a condition that needs anything else is left alone)."""
    for rule in rules:
        known = _KNOWN_CONVERSATION.get(rule.event)
        if known is None:
            continue
        conversation, why = known
        for leaf in _conjuncts(rule.condition):
            if leaf.expression.warnings or leaf.constant() is not None:
                continue  # already said why it is never true, or it reads nothing
            try:
                holds = leaf.expression.evaluate({"conversation": conversation}, now=_ALWAYS)
            except ExpressionRuntimeError:
                continue  # it reads more than the trigger guarantees
            if not holds:
                yield RuleWarning(
                    f"this rule can never fire on {rule.event}: '{leaf.expression.source}' is "
                    f"always false there ({why})",
                    hint="trigger on conversation.opened to act when a conversation opens "
                         "(params.open_source says how)" if conversation["is_open"] else
                         "drop the condition", **_where(rule, leaf.path))


def _already_done(rules: Sequence[Rule]) -> Iterable[RulesEngineError]:
    """Actions the engine's built-in handling of the trigger has already done."""
    for rule in rules:
        for path, action in walk(rule.actions):
            if action.name == "open_conversation" and rule.event in (
                    EventType.MESSAGE_RECEIVED, EventType.WELCOME):
                yield RuleWarning(
                    f"open_conversation does nothing here: on {rule.event} the engine has "
                    "opened the conversation before rules run",
                    hint="route it with assign, or trigger on conversation.opened to act "
                         "when one opens", **_where(rule, path))
            if action.name == "close_conversation" and rule.event is \
                    EventType.DIALOGFLOW_FULFILLMENT and any(
                    MARKDONE in text for _, text in rule.expressions()):
                yield RuleWarning(
                    f"close_conversation does nothing here: when {MARKDONE} is true the "
                    "engine has already closed the conversation (close source dialogflow)",
                    hint="drop the rule; to act after such a close, trigger on "
                         "conversation.closed with conditions: [\"conversation.close_source "
                         "== 'dialogflow'\"]", **_where(rule, path))


def _before_a_wait(rule: Rule) -> list[Action]:
    """The actions that run in the triggering event (those after a wait run later)."""
    ran: list[Action] = []
    for action in rule.actions:
        if action.name == "wait":
            break
        ran.append(action)
    return ran


def _sets(rule: Rule) -> dict[str, str]:
    """What the rule sets in the triggering event that another rule could set too:
    {what: how}."""
    found: dict[str, str] = {}
    for action in _before_a_wait(rule):
        arguments = action.arguments
        if action.name == "assign":
            found.update({what: f"{what} {arguments[what]}"
                          for what in ("user", "team") if what in arguments})
            if "strategy" in arguments:
                found["user"] = f"user a member of team {arguments['team']}"
        elif action.name == "set_field":
            found[f"field {arguments['name']}"] = f"field {arguments['name']}"
    return found


_Fact = tuple[AnyEventType, tuple[tuple[str, Any], ...]]  # a fact and what its params are known to be


def _facts(rule: Rule) -> set[_Fact]:
    """The facts the rule's actions raise in the triggering event (a tag fact with its tag)."""
    found: set[_Fact] = set()
    for action in _before_a_wait(rule):
        tags = getattr(action, "tags", None)
        for event in action.emits:
            if tags is not None:
                found.update((event, (("tag", tag),)) for tag in tags)
            else:
                found.add((event, ()))
    return found


def _may_run(rule: Rule, fact: _Fact) -> bool:
    """Whether ``rule`` may run on ``fact``: its trigger, and no condition that the fact's
    known params make false."""
    event, params = fact
    if rule.event != event:
        return False
    for leaf in _conjuncts(rule.condition):
        try:
            if not leaf.expression.evaluate({"params": dict(params)}, now=_ALWAYS):
                return False
        except ExpressionRuntimeError:
            continue  # it reads more than the fact's params
    return True


def _chains(rules: Sequence[Rule]) -> Iterable[tuple[AnyEventType, list[tuple[int, Rule]]]]:
    """For each input (custom events included), the rules one event of it can run, with
    the depth each runs at, in the order the engine runs them (by depth, then priority,
    then place)."""
    custom = {rule.event for rule in rules if isinstance(rule.event, CustomEventType)}
    by_event = _by_trigger(rules)
    for start in sorted(INPUT_TYPES | TIMER_FACTS | custom):
        depth_of: dict[str, int] = {}
        facts: set[_Fact] = {(start, ())}
        depth = 0
        while facts and depth <= 5:  # the engine's default depth bound
            running = {rule.id: rule for fact in facts for _, rule in by_event.get(fact[0], ())
                       if rule.id not in depth_of and _may_run(rule, fact)}
            depth_of.update(dict.fromkeys(running, depth))
            facts = {fact for rule in running.values() for fact in _facts(rule)}
            if depth == 0:
                facts |= {(event, ()) for event in BUILT_IN_FACTS.get(start, ())}
            depth += 1
        chain = [(depth_of[rule.id], rule) for rule in rules if rule.id in depth_of]
        chain.sort(key=lambda item: (item[0], -item[1].priority))  # stable: then by place
        yield start, chain


def _add_and_remove_one_tag(first: Rule, second: Rule) -> bool:
    """Rules on a tag's adding and on its removal, with the same condition (the same tag):
    one event does not add and remove one tag, so they never both run."""
    tag_facts = {EventType.CONTACT_TAG_ADDED, EventType.CONTACT_TAG_REMOVED}
    if {first.event, second.event} != tag_facts:
        return False
    def sources(rule: Rule) -> set[str]:
        return {leaf.expression.source for leaf in _conjuncts(rule.condition)}
    return bool(sources(first) & sources(second))


def _run_by_name(first: Rule, second: Rule) -> bool:
    """Two rules run by hand, two idle rules, two date rules or two schedules: a manual
    run, a clock's, a date's or a schedule's firing runs the one rule it names, never both."""
    return first.event is second.event and first.event in ONE_RULE_TYPES


def _overwritten(rules: Sequence[Rule]) -> Iterable[RulesEngineError]:
    """A rule that sets what a rule before it in one event's chain set: the later one wins.
    Each is told of the nearest such rule before it (the one whose value it replaces), so
    thousands of rules setting one thing cost one look back each, not every pair."""
    sets = {rule.id: _sets(rule) for rule in rules}
    seen: set[tuple[str, str, str]] = set()
    for start, chain in _chains(rules):
        setters: dict[str, list[Rule]] = defaultdict(list)  # what -> the rules setting it so far
        for _, later in chain:
            for what in sets[later.id]:
                earlier = next((rule for rule in reversed(setters[what])
                                if _channels_meet(rule.channels, later.channels)
                                and not _exclusive(rule, later)
                                and not _add_and_remove_one_tag(rule, later)
                                and not _run_by_name(rule, later)), None)
                setters[what].append(later)
                if earlier is None or (earlier.id, later.id, what) in seen:
                    continue
                seen.add((earlier.id, later.id, what))
                yield RuleWarning(
                    f"'{later.id}' ({later.event}) sets the {what} after "
                    f"'{earlier.id}' ({earlier.event}) set it ({sets[earlier.id][what]}) "
                    f"in the chain of one {start}: the later one wins",
                    hint="give the two rules conditions that exclude each other, or set "
                         "it in one of them", **_where(later, "actions"))


def _tag_literals(tree: ast.AST) -> Iterable[str]:
    """Tags an expression looks for: ``'x' in contact.tags``, ``contains(contact.tags, 'x')``,
    ``params.tag == 'x'``."""
    for node in ast.walk(tree):
        pairs: list[tuple[ast.AST, ast.AST]] = []
        if isinstance(node, ast.Compare):
            pairs = [(node.left, node.comparators[0]), (node.comparators[0], node.left)]
            if not isinstance(node.ops[0], ast.In | ast.NotIn | ast.Eq | ast.NotEq):
                continue
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id == "contains" and len(node.args) == 2:
            pairs = [(node.args[1], node.args[0])]
        for literal, place in pairs:
            if isinstance(literal, ast.Constant) and isinstance(literal.value, str) \
                    and chain_of(place) in (["contact", "tags"], ["params", "tag"]):
                yield literal.value


def _tag_case(rules: Sequence[Rule]) -> Iterable[RulesEngineError]:
    """A tag looked for in a case no rule writes it in (tags are compared exactly)."""
    added = {tag for rule in rules for _, action in walk(rule.actions)
             if action.name == "add_tag" for tag in getattr(action, "tags", [])}
    by_lower = {tag.lower(): tag for tag in added}
    for rule in rules:
        for path, expression in rule.compiled():
            for tag in _tag_literals(expression.tree):
                written = by_lower.get(tag.lower())
                if tag not in added and written is not None:
                    yield RuleWarning(
                        f"'{tag}' is never a tag the rules add: they add '{written}' (tags "
                        "are compared exactly)", hint=f"write '{written}'",
                        **_where(rule, path))


def _unreachable_branches(rules: Sequence[Rule]) -> Iterable[RulesEngineError]:
    """Choose branches that never run: their conditions are always false, or an earlier
    branch's always hold (which also leaves the default unused)."""
    for rule in rules:
        for path, action in walk(rule.actions):
            if not isinstance(action, Choose):
                continue
            for index, branch in enumerate(action.branches):
                place = f"{path}/choose/branches/{index}"
                if branch.condition.constant() is False:
                    yield RuleWarning(
                        f"branch {index} never runs: its conditions are always false",
                        hint="fix its conditions, or drop the branch",
                        **_where(rule, f"{place}/conditions"))
                if branch.condition.constant() is not True:
                    continue
                later = [f"branch {n}" for n in range(index + 1, len(action.branches))]
                later += ["the default"] if action.default is not None else []
                if later:
                    yield RuleWarning(
                        f"what follows branch {index} never runs (its conditions always "
                        f"hold): {', '.join(later)}", hint=f"fix the conditions of branch "
                        f"{index}, or drop what follows it", **_where(rule, place))
                break


def _custom_events(rules: Sequence[Rule], declared: Declared) -> Iterable[RulesEngineError]:
    """A rule on a custom event that no rule file declares and no rule emits (a typo, or
    an event nobody posts); an emit whose params break the event's declared schema."""
    emitted = {event for rule in rules for event in _emits(rule)}
    known = sorted({*declared, *map(str, emitted)})
    for rule in rules:
        if isinstance(rule.event, CustomEventType) and rule.event not in declared \
                and rule.event not in emitted:
            yield RuleWarning(
                f"nothing declares or emits {rule.event}: only an event posted with this "
                "exact type starts the rule",
                hint=did_you_mean(rule.event, known) or "declare it in a rule file (events: "
                f"{{{rule.event}: {{params: ...}}}}) or emit it from a rule",
                **_where(rule, "trigger/event"))
        for path, action in walk(rule.actions):
            validator = declared.get(action.event) if isinstance(action, Emit) else None
            if not isinstance(action, Emit) or validator is None:
                continue
            for problem in params_problems(validator, action.arguments.get("params", {}),
                                           templated=True):
                yield RuleValidationError(
                    f"the params of {action.event} break its declared schema: "
                    f"{problem.message}", hint=problem.hint,
                    **_where(rule, f"{path}/emit/{problem.path}"))


def analyse(rules: Sequence[Rule], declared: Declared | None = None
            ) -> tuple[list[RulesEngineError], list[RuleWarning]]:
    """(errors, warnings) about how the enabled rules work together (``declared``: the
    custom events the rule files declare, with their params' validators)."""
    enabled = [rule for rule in rules if rule.enabled]
    edges = _edges(enabled)
    findings = [*_custom_events(enabled, declared or {}), *_cycle_findings(enabled, edges),
                *_never_fires(enabled), *_open_and_close(enabled, edges), *_idle_rules(enabled),
                *_dates_set_to_non_dates(enabled),
                *_reply_windows(enabled), *_cannot_hold(enabled), *_already_done(enabled),
                *_overwritten(enabled), *_tag_case(enabled), *_unreachable_branches(enabled)]
    errors = [f for f in findings if not isinstance(f, RuleWarning)]
    warnings = [f for f in findings if isinstance(f, RuleWarning)]
    return errors, warnings
