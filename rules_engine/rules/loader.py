"""Loading rule files: YAML, then the schema, then each rule's expressions and actions.

Every problem in every file is collected; a rule set is built only when there are none,
so loading never half-succeeds.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import time
from pathlib import Path
from typing import Any, TypeVar

from jsonschema import Draft202012Validator, SchemaError

from rules_engine.domain.channels import known_channels
from rules_engine.domain.errors import (
    ExpressionError,
    RuleFileError,
    RulesEngineError,
    RuleSetInvalid,
    RuleValidationError,
    RuleWarning,
    did_you_mean,
)
from rules_engine.domain.model import AnyEventType, EventType, event_type
from rules_engine.domain.schedules import Schedule, cron_problem
from rules_engine.domain.timers import DateTrigger, IdleClock, actions_digest, parse_duration
from rules_engine.formats.schema import rules_schema
from rules_engine.formats.schema_errors import explain
from rules_engine.formats.yaml_source import SourceMap, load_yaml
from rules_engine.language.business_hours import BusinessHours, parse_business_hours
from rules_engine.language.conditions import build_condition
from rules_engine.language.context import every_root, roots_for
from rules_engine.rules.actions import ActionProblems, compile_action
from rules_engine.rules.analysis import analyse
from rules_engine.rules.ruleset import Rule, RuleSet

_Located = TypeVar("_Located", bound=RulesEngineError)

RULE_FILE_SUFFIXES = (".yaml", ".yml")
_USES_BUSINESS_HOURS = re.compile(r"\bin_business_hours\s*\(")


# the actions whose ``team`` argument names a team
_NAMES_A_TEAM = ("assign", "open_conversation")


@dataclass(frozen=True, slots=True)
class RuleFile:
    """One rule file's text, parsed data and source positions."""

    name: str
    text: str
    data: Any
    source_map: SourceMap


@dataclass(frozen=True, slots=True)
class _TeamUse:
    """A team an action names, and where."""

    file: RuleFile
    place: tuple[str | int, ...]
    team: str
    balanced: bool  # a strategy chooses among its members


def rule_files(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """The YAML files named by ``paths`` (one path or several): files as given, directories'
    ``*.yaml`` / ``*.yml`` (not recursive, so ``rules/tests/`` is not read as rules)."""
    found: list[Path] = []
    for raw in [paths] if isinstance(paths, str | Path) else paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir()
                                if p.suffix in RULE_FILE_SUFFIXES and p.is_file()))
        elif path.is_file():
            found.append(path)
        else:
            raise RuleFileError("no such file or directory", file=str(path),
                                hint="pass a rules directory or YAML files")
    return found


def _read(path: Path) -> RuleFile:
    name = str(path)
    try:
        text = path.read_text("utf-8")
    except UnicodeDecodeError as error:
        raise RuleFileError(f"not UTF-8 text ({error.reason})", file=name,
                            hint="save the file as UTF-8") from None
    except OSError as error:
        raise RuleFileError(f"cannot read: {error.strerror}", file=name,
                            hint="check the file's permissions") from None
    data, source_map = load_yaml(text, name)
    if data is None:
        raise RuleFileError("the file is empty", file=name, line=1, column=1,
                            hint="start it with `rules:` and a list of rules")
    return RuleFile(name, text, data, source_map)


class _Validator:
    """Collects every problem across the files, then builds the rules of the clean ones."""

    def __init__(self) -> None:
        self.errors: list[RulesEngineError] = []
        self.warnings: list[RuleWarning] = []  # what loads but can never be true
        self.schema = Draft202012Validator(rules_schema())
        self.ids: dict[str, str] = {}  # rule id -> where it was first defined
        self.business_hours: BusinessHours | None = None
        self.business_hours_file: str | None = None
        self.uses_business_hours: list[tuple[RuleFile, int]] = []  # rules calling it
        self.teams: set[str] = set()  # the teams the files declare
        self.events: dict[str, Draft202012Validator | None] = {}  # declared custom events
        self.event_schemas: dict[str, dict[str, Any]] = {}  # their params' JSON Schemas
        self.events_file: dict[str, str] = {}  # where each was declared
        self.team_uses: list[_TeamUse] = []

    def located(self, file: RuleFile, path: tuple[str | int, ...], error: _Located,
                *, at_key: bool = False) -> _Located:
        position = file.source_map.key_at(path) if at_key else file.source_map.value_at(path)
        error.file = file.name
        if position is not None:
            error.line, error.column = position.line, position.column
        if len(path) >= 2 and path[0] == "rules" and isinstance(path[1], int):
            rule = file.data["rules"][path[1]]
            if isinstance(rule, dict) and isinstance(rule.get("id"), str):
                error.rule_id = rule["id"]
            error.path = error.path or "/".join(str(p) for p in path[2:]) or None
        else:
            error.path = error.path or "/".join(str(p) for p in path) or None
        return error

    def check_schema(self, file: RuleFile) -> dict[int, list[tuple[str | int, ...]]]:
        """Report schema problems; returns, per rule index (-1 for the file itself), the
        places inside the rule that have any."""
        broken: dict[int, list[tuple[str | int, ...]]] = {}
        for error in self.schema.iter_errors(file.data):
            for problem in explain(error):
                self.errors.append(self.located(
                    file, problem.path,
                    RuleValidationError(problem.message, hint=problem.hint), at_key=problem.at_key,
                ))
                if len(problem.path) >= 2 and problem.path[0] == "rules":
                    broken.setdefault(int(problem.path[1]), []).append(problem.path[2:])
                else:
                    broken.setdefault(-1, []).append(problem.path)
        return broken

    def build_rule(self, file: RuleFile, index: int, raw: dict[str, Any],
                   broken: list[tuple[str | int, ...]]) -> Rule | None:
        """The rule, when it is clean. A rule with schema problems still has every part the
        schema accepted checked (conditions, action arguments, templates), so that one run
        reports everything."""
        def clean(*place: str | int) -> bool:
            return not any(path[:len(place)] == place or place[:len(path)] == path
                           for path in broken)

        trigger = _mapping(raw.get("trigger"))
        event = _trigger_event(trigger.get("event"))
        roots = (roots_for(event, self.event_schemas.get(event)) if event is not None
                 else every_root())
        base = ("rules", index)
        problems = len(broken)
        condition = None
        if "conditions" in raw and clean("conditions"):
            expression_errors: list[ExpressionError] = []
            condition = build_condition(raw["conditions"], roots, "conditions", expression_errors)
            for error in expression_errors:
                self.errors.append(self.in_rule(file, base, error))
            problems += len(expression_errors)
        actions = []
        raw_actions = raw.get("actions")
        for position, item in enumerate(raw_actions if isinstance(raw_actions, list) else []):
            if not clean("actions", position) or not isinstance(item, dict) or len(item) != 1:
                continue
            (name, arguments), = item.items()
            try:
                actions.append(compile_action(name, arguments, roots, f"actions/{position}"))
            except ActionProblems as failed:
                problems += len(failed.problems)
                self.errors.extend(self.in_rule(file, base, error) for error in failed.problems)
        if problems:
            return None
        assert event is not None  # the schema accepts the known events only
        channels = trigger.get("channels")
        at = file.source_map.value_at(base)
        return Rule(
            id=raw["id"], name=raw.get("name", raw["id"]), description=raw.get("description", ""),
            enabled=raw.get("enabled", True), priority=raw.get("priority", 0),
            stop=raw.get("stop", False), event=event,
            channels=frozenset(channels) if channels else None, condition=condition,
            actions=tuple(actions), file=file.name, line=at.line if at else 0,
            column=at.column if at else 1, once_per=raw.get("once_per"),
            cooldown=parse_duration(raw["cooldown"]) if "cooldown" in raw else None,
            idle=IdleClock(parse_duration(trigger["for"]), trigger.get("of", "any"), trigger["for"])
            if event is EventType.CONVERSATION_IDLE else None,
            date=date_trigger(trigger) if event is EventType.DATE else None,
            schedule=Schedule(trigger["cron"], trigger["applies_to"])
            if event is EventType.SCHEDULE else None,
            digest=actions_digest([(action.name, action.arguments) for action in actions]),
        )

    def check_business_hours(self, file: RuleFile, broken: list[tuple[str | int, ...]]) -> None:
        """A file's ``business_hours``: every part checked; one definition per rule set."""
        if not isinstance(file.data, dict) or "business_hours" not in file.data or any(
                path[:1] == ("business_hours",) for path in broken):
            return
        place = ("business_hours",)
        if self.business_hours_file is not None:
            self.errors.append(self.located(file, place, RuleValidationError(
                f"business_hours are already defined in {self.business_hours_file}",
                hint="keep one business_hours definition for the whole rule set"), at_key=True))
            return
        self.business_hours_file = file.name
        hours, problems = parse_business_hours(file.data["business_hours"])
        for problem in problems:
            self.errors.append(self.located(file, (*place, *problem.path), RuleValidationError(
                problem.message, hint=problem.hint)))
        self.business_hours = hours

    def note_business_hours_use(self, file: RuleFile, index: int, rule: Rule) -> None:
        """Remember a rule whose expressions call in_business_hours() (a description or a
        message that only names it does not count)."""
        if any(_USES_BUSINESS_HOURS.search(text) for _, text in rule.expressions()):
            self.uses_business_hours.append((file, index))

    def check_business_hours_defined(self) -> None:
        """in_business_hours() needs a definition somewhere in the rule set."""
        if self.business_hours_file is not None:
            return
        for file, index in self.uses_business_hours:
            self.errors.append(self.located(file, ("rules", index), RuleValidationError(
                "in_business_hours() is used but no rule file defines business_hours",
                hint="add a top-level business_hours: {timezone: Europe/Paris, weekly: "
                     "{mon: [\"09:00-18:00\"], ...}} to one rule file")))

    def note_teams(self, file: RuleFile, broken: list[tuple[str | int, ...]]) -> None:
        """The teams a file declares (``teams: [support, billing]``)."""
        declared = file.data.get("teams") if isinstance(file.data, dict) else None
        if isinstance(declared, list) and not any(path[:1] == ("teams",) for path in broken):
            self.teams.update(declared)

    def note_events(self, file: RuleFile, broken: list[tuple[str | int, ...]]) -> None:
        """The custom events a file declares (``events: {custom.x: {params: <JSON
        Schema>}}``): each once across the rule set, its schema a valid JSON Schema."""
        declared = file.data.get("events") if isinstance(file.data, dict) else None
        if not isinstance(declared, dict) or any(path[:1] == ("events",) for path in broken):
            return
        for name, declaration in declared.items():
            place = ("events", name)
            if name in self.events_file:
                self.errors.append(self.located(file, place, RuleValidationError(
                    f"{name} is already declared in {self.events_file[name]}",
                    hint="declare each custom event once for the whole rule set"), at_key=True))
                continue
            self.events_file[name] = file.name
            schema = declaration.get("params")
            try:
                validator = None if schema is None else _params_validator(schema)
            except SchemaError as error:
                self.errors.append(self.located(file, (*place, "params", *error.path),
                                                RuleValidationError(
                    f"not a valid JSON Schema: {error.message}",
                    hint="see https://json-schema.org/understanding-json-schema/")))
                continue
            self.events[name] = validator
            if schema is not None:
                self.event_schemas[name] = schema

    def note_team_uses(self, file: RuleFile, index: int, raw: dict[str, Any]) -> None:
        """Remember each team an action names (``assign``, ``open_conversation``)."""
        for place, name, arguments in _written_actions(raw.get("actions"), ("actions",)):
            if name in _NAMES_A_TEAM and isinstance(arguments, dict) \
                    and isinstance(arguments.get("team"), str):
                self.team_uses.append(_TeamUse(file, ("rules", index, *place, name, "team"),
                                               arguments["team"], "strategy" in arguments))

    def check_teams_declared(self) -> None:
        """Once teams are declared, every team named is one of them; a balanced assign's
        team is always declared."""
        for use in self.team_uses:
            if use.team in self.teams or not (self.teams or use.balanced):
                continue
            hint = did_you_mean(use.team, sorted(self.teams)) or (
                f"declare it in a rule file: teams: [{', '.join(sorted({*self.teams, use.team}))}]")
            self.errors.append(self.located(use.file, use.place, RuleValidationError(
                f"unknown team '{use.team}'" + ("" if self.teams else
                                                 ": a strategy chooses among a declared team"),
                hint=hint)))

    def check_channels(self, file: RuleFile, index: int, raw: dict[str, Any]) -> None:
        """A channel that no adapter registers but is a near miss of one is a typo."""
        trigger = _mapping(raw.get("trigger"))
        channels = trigger.get("channels")
        known = known_channels()
        for position, name in enumerate(channels if isinstance(channels, list) else []):
            if not isinstance(name, str) or name in known or name != name.lower():
                continue
            suggestion = did_you_mean(name, sorted(known))
            if suggestion:
                self.errors.append(self.located(
                    file, ("rules", index, "trigger", "channels", position),
                    RuleValidationError(f"unknown channel '{name}': the rule would never fire "
                                        "on it", hint=suggestion)))

    def check_cron(self, file: RuleFile, index: int, raw: dict[str, Any]) -> None:
        """A schedule's cron must name moments that exist."""
        cron = _mapping(raw.get("trigger")).get("cron")
        problem = cron_problem(cron) if isinstance(cron, str) else None
        if problem is not None:
            self.errors.append(self.located(file, ("rules", index, "trigger", "cron"),
                                            RuleValidationError(
                f"this rule can never fire: {problem}",
                hint="five fields: minute hour day-of-month month day-of-week, e.g. "
                     "0 8 * * mon; a day of the month must exist in one of its months")))

    def in_rule(self, file: RuleFile, base: tuple[str | int, ...],
                    error: _Located) -> _Located:
        """An error whose ``path`` is relative to the rule at ``base``, located in the file."""
        path = base + tuple(int(p) if p.isdigit() else p for p in (error.path or "").split("/") if p)
        if error.column is not None:
            error.message = f"{error.message} (at character {error.column} of the expression)"
        error.path = None
        return self.located(file, path, error)

    def check_duplicate_ids(self, file: RuleFile, index: int, raw: dict[str, Any]) -> None:
        """Rule ids are unique across all files (checked on every rule that has one)."""
        rule_id = raw.get("id")
        if not isinstance(rule_id, str):
            return
        where = file.source_map.value_at(("rules", index))
        here = f"{file.name}:{where.line if where else '?'}"
        if rule_id in self.ids:
            self.errors.append(self.located(file, ("rules", index, "id"), RuleValidationError(
                f"duplicate rule id '{rule_id}' (first defined at {self.ids[rule_id]})",
                hint="rule ids must be unique across all rule files; rename one")))
        else:
            self.ids[rule_id] = here


def load_rule_set(paths: str | Path | Iterable[str | Path]) -> RuleSet:
    """Load and validate every rule file under ``paths`` (a file or directory, or several).

    Returns the rule set when every file is clean; raises RuleSetInvalid listing every
    problem (file, line, column, rule id, hint) otherwise.
    """
    validator = _Validator()
    rules: list[Rule] = []
    digest = hashlib.sha256()
    try:
        files = rule_files(paths)
    except RuleFileError as error:
        raise RuleSetInvalid([error]) from None
    read: list[tuple[RuleFile, dict[int, list[tuple[str | int, ...]]]]] = []
    for path in files:  # first every file's declarations, which any file's rules may use
        try:
            file = _read(path)
        except RuleFileError as error:
            validator.errors.append(error)
            continue
        digest.update(file.name.encode() + b"\0" + file.text.encode() + b"\0")
        broken = validator.check_schema(file)
        validator.check_business_hours(file, broken.get(-1, []))
        validator.note_teams(file, broken.get(-1, []))
        validator.note_events(file, broken.get(-1, []))
        read.append((file, broken))
    for file, broken in read:
        raw_rules = file.data.get("rules") if isinstance(file.data, dict) else None
        for index, raw in enumerate(raw_rules if isinstance(raw_rules, list) else []):
            if not isinstance(raw, dict):
                continue
            validator.check_duplicate_ids(file, index, raw)
            validator.check_channels(file, index, raw)
            validator.check_cron(file, index, raw)
            validator.note_team_uses(file, index, raw)
            rule = validator.build_rule(file, index, raw, broken.get(index, []))
            if rule is not None:
                validator.note_business_hours_use(file, index, rule)
                validator.warnings.extend(validator.in_rule(file, ("rules", index), warning)
                                          for warning in rule.expression_warnings())
                rules.append(rule)
    validator.check_business_hours_defined()
    validator.check_teams_declared()
    errors, found = analyse(rules, validator.events)  # on every rule that is valid
    warnings = sorted([*validator.warnings, *found], key=_where)
    problems = validator.errors + errors
    if problems:
        raise RuleSetInvalid(sorted([*problems, *warnings], key=_where))
    return RuleSet(rules, version=digest.hexdigest()[:12], warnings=warnings,
                   business_hours=validator.business_hours, declared=validator.events)


def _where(problem: RulesEngineError) -> tuple[str, int, int]:
    """Sort key: by file, line and column."""
    return problem.file or "", problem.line or 0, problem.column or 0


def _written_actions(items: Any, place: tuple[str | int, ...]
                     ) -> Iterator[tuple[tuple[str | int, ...], str, Any]]:
    """Each action as written in the list at ``place``, those in choose branches included:
    (its place, its name, its arguments); what is not an action is skipped (the schema
    reports it)."""
    for position, item in enumerate(items if isinstance(items, list) else []):
        if not isinstance(item, dict) or len(item) != 1:
            continue
        (name, arguments), = item.items()
        yield (*place, position), name, arguments
        if name == "choose" and isinstance(arguments, dict):
            inside = (*place, position, "choose")
            branches = arguments.get("branches")
            for index, branch in enumerate(branches if isinstance(branches, list) else []):
                yield from _written_actions(_mapping(branch).get("actions"),
                                            (*inside, "branches", index, "actions"))
            yield from _written_actions(arguments.get("default"), (*inside, "default"))


def _trigger_event(name: Any) -> AnyEventType | None:
    """The event a trigger names, None when it names none the schema accepts (the schema
    reports it)."""
    try:
        return event_type(name) if isinstance(name, str) else None
    except ValueError:
        return None


def _params_validator(schema: dict[str, Any]) -> Draft202012Validator:
    """The validator of a custom event's params; SchemaError when ``schema`` is none."""
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _mapping(value: Any) -> dict[str, Any]:
    """``value`` when the schema let a mapping through, else an empty one (the schema has
    already reported what is wrong with it)."""
    return value if isinstance(value, dict) else {}


def date_trigger(trigger: dict[str, Any]) -> DateTrigger:
    """A ``date`` trigger the schema accepted: ``field: contact.fields.NAME``, ``offset``
    in days (``-3d``, default none), ``at`` a local time (``09:00``, default midnight)."""
    hour, minute = trigger.get("at", "00:00").split(":")
    return DateTrigger(trigger["field"].removeprefix("contact.fields."),
                       int(trigger.get("offset", "0d")[:-1]), time(int(hour), int(minute)))
