"""Compiled rules, and the rule set that indexes them by trigger."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from rules_engine.domain.errors import EventError, RulesEngineError, RuleWarning
from rules_engine.domain.model import AnyEventType, CustomEventType, Event
from rules_engine.domain.schedules import Schedule
from rules_engine.domain.timers import DateTrigger, IdleClock, Timer, date_timer
from rules_engine.formats.events import Declared, params_problems
from rules_engine.language.conditions import Condition
from rules_engine.language.expressions import CompiledExpression
from rules_engine.rules.actions import Action, Choose, Wait, walk
from rules_engine.trace.shapes import Catalog, CatalogEntry

if TYPE_CHECKING:
    from rules_engine.language.business_hours import BusinessHours


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule, built from validated config with its expressions already compiled."""

    id: str
    name: str
    description: str
    enabled: bool
    priority: int
    stop: bool
    event: AnyEventType
    channels: frozenset[str] | None
    condition: Condition | None
    actions: tuple[Action, ...]
    file: str
    line: int
    column: int = 1
    once_per: str | None = None  # "contact" or "conversation"
    cooldown: timedelta | None = None  # per contact
    idle: IdleClock | None = None  # conversation.idle rules: the trigger's for / of
    date: DateTrigger | None = None  # date rules: the trigger's field / offset / at
    schedule: Schedule | None = None  # schedule rules: the trigger's cron / applies_to
    digest: str = ""  # its actions' fingerprint (timers.actions_digest): a wait resumes only it

    def catalog_entry(self) -> CatalogEntry:
        """What traces leave out of every event for this rule (see trace.shapes)."""
        return {"file": self.file, "line": self.line, "priority": self.priority,
                "conditions": dict(self.expressions()),  # a wait's ``if`` is a condition too
                "args": [action.shown_arguments() for action in self.actions]}

    def expression_warnings(self) -> Iterator[RuleWarning]:
        """What the rule's conditions (its own, its choose branches', its waits' ``if``)
        evaluate but can never make true, each at its path, with the column inside the
        expression."""
        for path, expression in self.compiled():
            for warning in expression.warnings:
                yield RuleWarning(warning.message, column=warning.column, path=path,
                                  hint=warning.hint)

    def compiled(self) -> Iterator[tuple[str, CompiledExpression]]:
        """(path, expression) of every expression the rule evaluates as a condition."""
        if self.condition is not None:
            yield from self.condition.compiled()
        for path, action in walk(self.actions):
            if isinstance(action, Wait) and action.condition is not None:
                yield f"{path}/wait/if", action.condition
            elif isinstance(action, Choose):
                for branch in action.branches:
                    yield from ((f"{path}/choose/{place}", expression)
                                for place, expression in branch.condition.compiled())

    def expressions(self) -> Iterator[tuple[str, str]]:
        """(path, text) of every condition the rule evaluates: each leaf of its conditions
        and of its choose branches' conditions, and each wait's ``if``."""
        if self.condition is not None:
            yield from self.condition.sources()
        for path, action in walk(self.actions):
            if isinstance(action, Wait) and "if" in action.arguments:
                yield f"{path}/wait/if", action.arguments["if"]
            elif isinstance(action, Choose):
                for branch in action.branches:
                    yield from ((f"{path}/choose/{place}", text)
                                for place, text in branch.condition.sources())


class RuleSet:
    """An immutable, validated set of rules, indexed by (event type, channel).

    ``candidates`` costs the same however many rules trigger on other events or channels.
    """

    def __init__(self, rules: Iterable[Rule], *, version: str,
                 warnings: Sequence[RulesEngineError] = (),
                 business_hours: BusinessHours | None = None,
                 declared: Declared | None = None) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self.declared: Declared = dict(declared or {})
        # each declared custom event's top-level params, read as null when left out
        self._absent: dict[str, dict[str, None]] = {
            name: dict.fromkeys(validator.schema["properties"])
            for name, validator in self.declared.items()
            if validator is not None and isinstance(validator.schema, Mapping)
            and isinstance(validator.schema.get("properties"), Mapping)}
        self.version = version
        self.warnings: tuple[RulesEngineError, ...] = tuple(warnings)
        self.business_hours = business_hours
        # the enabled conversation.idle rules: every open conversation keeps a clock for each
        self.idle_rules: tuple[Rule, ...] = tuple(
            rule for rule in self.rules if rule.idle is not None and rule.enabled)
        # the enabled date rules: every contact whose field holds a date keeps a timer for each
        self.date_rules: tuple[Rule, ...] = tuple(
            rule for rule in self.rules if rule.date is not None and rule.enabled)
        # the enabled schedule rules: each keeps one timer, at its next cron time
        self.schedule_rules: tuple[Rule, ...] = tuple(
            rule for rule in self.rules if rule.schedule is not None and rule.enabled)
        position = {rule.id: index for index, rule in enumerate(self.rules)}
        self._by_id = {rule.id: rule for rule in self.rules}

        def run_order(rule: Rule) -> tuple[int, int]:
            return (-rule.priority, position[rule.id])

        ordered = sorted(self.rules, key=run_order)
        any_channel: dict[AnyEventType, list[Rule]] = defaultdict(list)
        by_channel: dict[tuple[AnyEventType, str], list[Rule]] = defaultdict(list)
        for rule in ordered:
            if rule.channels is None:
                any_channel[rule.event].append(rule)
            for channel in rule.channels or ():
                by_channel[(rule.event, channel)].append(rule)
        self._any_channel = {event: tuple(rules) for event, rules in any_channel.items()}
        self._by_channel = {
            key: tuple(sorted((*rules, *any_channel.get(key[0], ())), key=run_order))
            for key, rules in by_channel.items()
        }

    def candidates(self, event: AnyEventType, channel: str | None) -> tuple[Rule, ...]:
        """Rules whose trigger matches, highest priority first (disabled ones included)."""
        if channel is not None:
            found = self._by_channel.get((event, channel))
            if found is not None:
                return found
        return self._any_channel.get(event, ())

    def excluded_by_channel(self, event: AnyEventType, channel: str | None) -> list[Rule]:
        """Rules on ``event`` whose channel filter leaves ``channel`` out (for "why not")."""
        return [rule for rule in self.rules
                if rule.event == event and rule.channels is not None
                and channel not in rule.channels]

    @property
    def zone(self) -> ZoneInfo:
        """The time zone dates and schedules are read in: the business hours', else UTC."""
        return self.business_hours.zone if self.business_hours is not None else ZoneInfo("UTC")

    def dated_rules(self, field: str | None) -> Iterator[tuple[Rule, DateTrigger]]:
        """The enabled date rules on ``field`` (all of them for None), with their trigger."""
        for rule in self.date_rules:
            if rule.date is not None and field in (None, rule.date.field):
                yield rule, rule.date

    def date_timers(self, contact_id: int, fields: Mapping[str, Any], *, after: datetime,
                    event_id: str, field: str | None = None) -> list[Timer]:
        """The date timers of a contact whose fields are ``fields`` (only those of date
        rules on ``field``, when given): one per date rule whose field holds a date whose
        moment is after ``after``."""
        timers = (date_timer(rule.id, trigger, contact_id=contact_id, zone=self.zone,
                             value=fields.get(trigger.field), after=after, event_id=event_id)
                  for rule, trigger in self.dated_rules(field))
        return [timer for timer in timers if timer is not None]
    def params_problems(self, event: Event) -> list[EventError]:
        """How a custom event's params break the JSON Schema its declaration gives them
        (none for another event, or a custom event declared without one or undeclared)."""
        validator = (self.declared.get(event.type)
                     if isinstance(event.type, CustomEventType) else None)
        return [] if validator is None else params_problems(validator, dict(event.params))

    def condition_params(self, kind: AnyEventType,
                         params: Mapping[str, Any]) -> Mapping[str, Any]:
        """``params`` as conditions read them: a custom event's declared top-level params
        that it leaves out read as null (as their types say, see ``params_spec``)."""
        absent = self._absent.get(kind)
        return params if absent is None else {**absent, **params}

    def catalog(self) -> Catalog:
        """What traces leave out of every event, for each rule (kept once per version)."""
        return {rule.id: rule.catalog_entry() for rule in self.rules}

    def __len__(self) -> int:
        return len(self.rules)

    def get(self, rule_id: str) -> Rule | None:
        """The rule with this id, if any."""
        return self._by_id.get(rule_id)
