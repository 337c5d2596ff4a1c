"""``rules-engine test``: YAML test cases for rules, run in a throw-away store.

Each case gives a starting state (contacts with tags, fields and an open conversation; users
on teams, available or away), one or more events, and what should happen: which rules fired
(or that nothing fires), which actions ran with which arguments, and the resulting
conversations and contacts. A failure shows a unified diff of the expected and the actual
values. Each case runs on its own ``Clock``; ``check_test_files`` is what ``validate``
reads of test files.
"""
from __future__ import annotations

import difflib
import os
import time
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

from rules_engine import people
from rules_engine.domain.errors import (
    EventError,
    RuleFileError,
    RulesEngineError,
    RuleValidationError,
    did_you_mean,
)
from rules_engine.domain.lifecycle import Lifecycle
from rules_engine.domain.model import OpenSource
from rules_engine.domain.timers import parse_duration
from rules_engine.engine import Engine, Result
from rules_engine.formats.events import parse_event, parse_timestamp
from rules_engine.formats.schema import load_schema
from rules_engine.formats.schema_errors import explain
from rules_engine.formats.yaml_source import SourceMap, load_yaml
from rules_engine.rules.loader import RULE_FILE_SUFFIXES
from rules_engine.rules.ruleset import RuleSet
from rules_engine.store import Store, StoreTx
from rules_engine.trace.shapes import Step

START = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)  # a Monday: a case's default start
STEP = timedelta(minutes=1)  # from the latest moment reached to an event given no time


@dataclass
class CaseResult:
    """One test case's outcome: failures are (what, expected, actual)."""

    file: str
    name: str
    failures: list[tuple[str, Any, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures and not self.errors

    @property
    def title(self) -> str:
        return f"{self.file}::{self.name}"


def case_files(paths: Iterable[str | Path]) -> list[Path]:
    """YAML test files: files as given; in a directory, its ``*.yaml`` (not recursive)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.suffix in RULE_FILE_SUFFIXES))
        elif path.is_file():
            found.append(path)
        else:
            raise RuleFileError("no such file or directory", file=str(path))
    return found


def rules_folder_of(path: str | Path) -> str | None:
    """The rules folder a ``tests/`` folder or a file in one belongs to: the folder above
    (written relative when ``path`` is); None for any other path."""
    given = Path(path)
    folder = (given if given.is_dir() else given.parent).absolute()
    if folder.name != "tests":
        return None
    return str(folder.parent) if given.is_absolute() else os.path.relpath(folder.parent)


@dataclass(frozen=True)
class LoadedCase:
    """A test case as written, where it starts, and what is wrong with it (if anything)."""

    name: str
    line: int
    data: Any
    problems: list[RulesEngineError] = field(default_factory=list)


def _as_written(value: Any) -> Any:
    """The document with YAML's unquoted dates and times (``2026-03-30T09:30:00+02:00``)
    as ISO 8601 text, as in the event JSON a case stands for."""
    if isinstance(value, dict):
        return {key: _as_written(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_written(item) for item in value]
    return value.isoformat() if isinstance(value, date) else value


def _case_validator() -> Draft202012Validator:
    """``rule-tests.schema.json``, aimed at one case."""
    schema = {**load_schema("rule-tests"), "$ref": "#/$defs/case"}
    for key in ("properties", "required", "additionalProperties", "type"):
        schema.pop(key, None)
    return Draft202012Validator(schema)


# a problem found in a case: its place in the case, the error, whether it is about the key
Problem = tuple[tuple[str | int, ...], RulesEngineError, bool]


def load_cases(path: Path, rule_ids: Collection[str] | None) -> list[LoadedCase]:
    """The cases in one test file, each with its problems located (file:line:column).

    The file's shape is checked first (an error for the whole file); then each case on its
    own, so that one broken case never hides the others: against ``rule-tests.schema.json``,
    then its times, then (given ``rule_ids``) the rules it names.
    """
    try:
        text = path.read_text("utf-8")
    except UnicodeDecodeError as error:
        raise RuleFileError(f"not UTF-8 text ({error.reason})", file=str(path),
                            hint="save the file as UTF-8") from None
    data, source_map = load_yaml(text, str(path))
    data = _as_written(data)
    if not isinstance(data, dict) or not isinstance(data.get("tests"), list):
        shape = {"tests": []} if isinstance(data, dict) and "tests" in data else data
        errors = list(Draft202012Validator(load_schema("rule-tests")).iter_errors(shape))
        problem = explain(errors[0])[0] if errors else None
        hint = ("a test file starts with `tests:` and a list of cases; rule files (`rules:`) "
                "are not test files")
        raise RuleValidationError(problem.message if problem else "no test cases",
                                  file=str(path), line=1, column=1, hint=hint)
    validator = _case_validator()
    cases = []
    for index, case in enumerate(data["tests"]):
        where = source_map.value_at(("tests", index))
        name = case.get("name") if isinstance(case, dict) else None
        found: list[Problem] = [
            (problem.path, RuleValidationError(problem.message, hint=problem.hint), problem.at_key)
            for error in validator.iter_errors(case) for problem in explain(error)]
        broken = {place[:1] for place, _, _ in found}  # the parts the checks below cannot read
        if not broken & {(), ("start",), ("events",)}:
            found.extend(_time_problems(case))
        if not broken & {(), ("expect",)} and rule_ids is not None:
            found.extend(_unknown_rules(case, rule_ids))
        problems = sorted((_located(error, path, source_map, ("tests", index, *place), at_key)
                           for place, error, at_key in found),
                          key=lambda error: (error.line or 0, error.column or 0))
        cases.append(LoadedCase(name if isinstance(name, str) else f"(case {index + 1})",
                                where.line if where else 1, case, problems))
    return cases


def _located(error: RulesEngineError, file: Path, source_map: SourceMap,
             place: tuple[str | int, ...], at_key: bool) -> RulesEngineError:
    position = source_map.key_at(place) if at_key else source_map.value_at(place)
    error.file, error.path = str(file), "/".join(map(str, place))
    if position is not None:
        error.line, error.column = position.line, position.column
    return error


def case_start(case: Mapping[str, Any]) -> datetime:
    """When a case starts: its ``start``, else its first event's ``timestamp``, else
    ``START``."""
    first = case["events"][0]
    if "start" in case:
        return parse_timestamp(case["start"])
    return parse_timestamp(first["timestamp"]) if "timestamp" in first else START


def _time_problems(case: Mapping[str, Any]) -> Iterator[Problem]:
    """A time that is no time, an event given two times, an event before the start."""
    events = case["events"]
    for index, raw in enumerate(events):
        if "timestamp" in raw and "at" in raw:
            yield ("events", index, "at"), RuleValidationError(
                "an event has a `timestamp` or an `at`, not both",
                hint="timestamp: is the event's time; at: is minutes after the case's start"), True
    written: dict[tuple[str | int, ...], str] = {
        ("events", index, "timestamp"): raw["timestamp"]
        for index, raw in enumerate(events) if "timestamp" in raw}
    if "start" in case:
        written[("start",)] = case["start"]
    moments: dict[tuple[str | int, ...], datetime] = {}
    for place, text in written.items():
        try:
            moments[place] = parse_timestamp(text)
        except EventError as error:
            yield place, error, False
    if len(moments) < len(written):
        return  # without every time readable, the start may be unknown
    start = case_start(case)
    for place, moment in moments.items():
        if moment < start:
            yield place, RuleValidationError(
                f"this event comes before the case starts ({start.isoformat()})",
                hint="the given contacts exist from the start on: set the case's `start:` "
                     "to this time or earlier"), False


def _unknown_rules(case: Mapping[str, Any], rule_ids: Collection[str]) -> Iterator[Problem]:
    """Each rule a case names that the rule set does not have: a test about it proves
    nothing."""
    expect = case["expect"]
    named = [*((("fired", n), rule) for n, rule in enumerate(expect.get("fired", []))),
             *((("not_fired", n), rule) for n, rule in enumerate(expect.get("not_fired", []))),
             *((("actions", n, "rule"), wanted["rule"])
               for n, wanted in enumerate(expect.get("actions", [])))]
    for place, rule_id in named:
        if rule_id not in rule_ids:
            yield ("expect", *place), RuleValidationError(
                f"unknown rule '{rule_id}'", hint=did_you_mean(rule_id, rule_ids)
                or "no rule of the rule set has this id (is it the right rule set?)"), False


@dataclass
class Clock:
    """A case's clock: when each step happens (docs/rules.md, "Time in rule tests")."""

    start: datetime
    latest: datetime | None = None  # the latest moment an event or an advance reached
    advanced: timedelta = timedelta(0)  # what the advance steps so far added

    def event_time(self, raw: Mapping[str, Any]) -> datetime:
        """An event's time: its ``timestamp``; else ``at`` minutes after the start, moved on
        by every advance before it; else a minute after the latest moment reached (the
        first event: the start). An event may come late; the clock never goes back."""
        if "timestamp" in raw:
            moment = parse_timestamp(raw["timestamp"])
        elif "at" in raw:
            moment = self.start + timedelta(minutes=raw["at"]) + self.advanced
        else:
            moment = self.start if self.latest is None else self.latest + STEP
        self.latest = moment if self.latest is None else max(self.latest, moment)
        return moment

    def advance(self, by: timedelta) -> datetime:
        """Move on ``by`` from the latest moment reached (or the start); the new moment."""
        self.advanced += by
        self.latest = (self.latest or self.start) + by
        return self.latest


class _Case:
    """Runs one case against a fresh in-memory store."""

    def __init__(self, rules: RuleSet, case: Mapping[str, Any]) -> None:
        self.case = case
        self.store = Store("sqlite:///:memory:")
        self.engine = Engine(self.store, rules)
        self.refs: dict[str, int] = {}
        self.identities: dict[str, tuple[str, str]] = {}
        self.results: list[Result] = []
        self.clock = Clock(case_start(case))

    def seed(self) -> None:
        self.engine.arm_schedules(self.clock.start)  # the schedules count from the case's start
        for user in self.case.get("given", {}).get("users", []):
            self.seed_user(user)
        with self.store.transaction() as tx:
            lifecycle = Lifecycle(tx, event_id="given", at=self.clock.start - STEP)
            for contact in self.case.get("given", {}).get("contacts", []):
                created, _ = tx.create_contact(name=contact.get("name"), created_at=self.clock.start,
                                               channel=contact["channel"],
                                               external_id=contact["external_id"])
                self.refs[contact["ref"]] = created.id
                self.identities[contact["ref"]] = (contact["channel"], contact["external_id"])
                for tag in contact.get("tags", []):
                    tx.add_tag(created.id, tag)
                for name, value in contact.get("fields", {}).items():
                    tx.set_field(created.id, name, value)
                dated = self.engine.rules.date_timers(created.id, contact.get("fields", {}),
                                                      after=self.clock.start, event_id="given")
                if dated:  # a given date field has its timers, as if set by an event
                    tx.set_timers(dated)
                if "conversation" in contact:
                    given = contact["conversation"]
                    lifecycle.open(created.id, channel=contact["channel"],
                                   source=OpenSource(given.get("open_source", "incoming_message")),
                                   actor=None, assignee=given.get("assignee"),
                                   team=given.get("team"))

    def seed_user(self, user: Mapping[str, Any]) -> None:
        """A given user (an agent), their teams, availability and capacity."""
        name = user["name"]
        people.add_user(self.store, name, people.Role.AGENT, now=self.clock.start - STEP)
        presence = {key: user[key] for key in ("availability", "max_open") if key in user}
        if presence:
            people.set_presence(self.store, name, presence)
        for team in user.get("teams", []):
            people.join_team(self.store, team, [name])

    def event(self, index: int, raw: Mapping[str, Any]) -> dict[str, Any]:
        data = {key: value for key, value in raw.items() if key not in ("text", "at")}
        data.setdefault("id", f"test-event-{index + 1}")
        data["timestamp"] = self.clock.event_time(raw).isoformat()
        contact = raw.get("contact")
        if isinstance(contact, str):
            if contact not in self.refs:
                raise RuleValidationError(f"no given contact '{contact}'", path=f"events/{index}/contact")
            data["contact"] = {"id": self.refs[contact]}
            data.setdefault("channel", self.identities[contact][0])
        elif isinstance(contact, dict) and "external_id" in contact and "channel" in data:
            self.identities.setdefault(contact["external_id"], (data["channel"], contact["external_id"]))
        if "text" in raw:
            data["message"] = {"text": raw["text"]}
        if data["type"] in ("conversation.open", "conversation.close", "contacts.merge"):
            data.setdefault("actor", "test-user")
        return data

    def contact_id(self, tx: StoreTx, ref: str) -> int | None:
        if ref in self.refs:
            return self.refs[ref]
        if ref in self.identities:
            found = tx.find_contact_by_identity(*self.identities[ref])
            return found.id if found else None
        return None

    def run(self) -> list[tuple[str, Any, Any]]:
        self.seed()
        for index, raw in enumerate(self.case["events"]):
            if "advance" in raw:  # the clock moves on; the timers due by then fire
                now = self.clock.advance(parse_duration(raw["advance"]))
                for _, outcome in self.engine.fire_all_due(now):
                    if isinstance(outcome, RulesEngineError):
                        raise outcome
                    self.results.append(outcome)
                continue
            self.results.append(self.engine.process(parse_event(self.event(index, raw))))
        return list(self.check(self.case["expect"]))

    def actions(self) -> list[dict[str, Any]]:
        return [{"rule": rule["rule_id"], "action": action["action"], "args": action["args"],
                 "outcome": action["outcome"], "path": action["path"],
                 **({"branch": action["branch"]} if "branch" in action else {})}
                for result in self.results for step in _steps(result)
                for rule in step["rules"] for action in rule["actions"]]

    def check(self, expect: Mapping[str, Any]) -> Iterable[tuple[str, Any, Any]]:
        fired = [rule for result in self.results for rule in result.fired]
        if "fired" in expect and expect["fired"] != fired:
            yield "fired", expect["fired"], fired
        if expect.get("nothing_fires") and fired:
            yield "nothing_fires", [], fired
        unexpected = [rule for rule in expect.get("not_fired", []) if rule in fired]
        if unexpected:
            yield "not_fired", [], unexpected
        actions = self.actions()
        for wanted in expect.get("actions", []):
            if not any(all(ran.get(k) == v for k, v in wanted.items()) for ran in actions):
                yield "actions", [wanted], actions
        with self.store.read() as tx:
            for wanted in expect.get("conversations", []):
                actual = self.latest_conversation(tx, wanted["contact"])
                compared = {key: actual.get(key) for key in wanted}
                if compared != dict(wanted):
                    yield f"conversations[{wanted['contact']}]", dict(wanted), compared
            for wanted in expect.get("contacts", []):
                contact_id = self.contact_id(tx, wanted["contact"])
                actual = {"contact": wanted["contact"]}
                if "tags" in wanted:
                    actual["tags"] = tx.tags(contact_id) if contact_id else None
                    wanted = {**wanted, "tags": sorted(wanted["tags"])}
                if "fields" in wanted:
                    fields = tx.fields(contact_id) if contact_id else {}
                    actual["fields"] = {name: fields.get(name) for name in wanted["fields"]}
                if actual != dict(wanted):
                    yield f"contacts[{wanted['contact']}]", dict(wanted), actual

    def latest_conversation(self, tx: StoreTx, ref: str) -> dict[str, Any]:
        contact_id = self.contact_id(tx, ref)
        history = tx.conversations_of(contact_id) if contact_id else []
        if not history:
            return {"contact": ref, "status": "none"}
        return {"contact": ref, **history[-1].to_dict()}


def _steps(result: Result) -> list[Step]:
    """The steps of a result's trace (a repeat whose trace was pruned has none)."""
    return result.trace["steps"] if result.trace is not None else []


def run_tests(rules: RuleSet, paths: Iterable[str | Path]) -> list[CaseResult]:
    """Run every case of every test file under ``paths``."""
    results: list[CaseResult] = []
    rule_ids = {rule.id for rule in rules.rules}
    for path in case_files(paths):
        try:
            cases = load_cases(path, rule_ids)
        except RulesEngineError as error:
            results.append(CaseResult(str(path), "(file)", errors=[str(error)]))
            continue
        for case in cases:
            outcome = CaseResult(str(path), case.name)
            if case.problems:
                outcome.errors = [str(problem) for problem in case.problems]
                results.append(outcome)
                continue
            runner = _Case(rules, case.data)
            try:
                outcome.failures = runner.run()
            except RulesEngineError as error:
                outcome.errors = [f"{path}:{case.line}: {error}"]
            finally:
                runner.store.dispose()
            results.append(outcome)
    return results


@dataclass(frozen=True)
class CheckedTestFiles:
    """What ``validate`` found in test files: how many files and cases, and every problem."""

    files: int
    cases: int
    problems: list[RulesEngineError]


def check_test_files(paths: Iterable[str | Path],
                     rule_ids: Collection[str] | None) -> CheckedTestFiles:
    """Every problem of the test files under ``paths`` (their schema, their times, the rules
    they name when ``rule_ids`` are known), without running them."""
    files, cases, problems = case_files(paths), 0, []
    for path in files:
        try:
            loaded = load_cases(path, rule_ids)
        except RulesEngineError as error:
            problems.append(error)
            continue
        cases += len(loaded)
        problems.extend(problem for case in loaded for problem in case.problems)
    return CheckedTestFiles(len(files), cases, problems)


def _yaml(value: Any) -> list[str]:
    return yaml.safe_dump(value, sort_keys=False, default_flow_style=False,
                          allow_unicode=True).splitlines()


def report(results: list[CaseResult], seconds: float) -> str:
    """A pytest-like report: one line per case, then each failure with a unified diff."""
    lines = [f"{r.title} {'PASSED' if r.passed else 'FAILED'}" for r in results]
    failed = [r for r in results if not r.passed]
    if failed:
        lines.append("=" * 30 + " FAILURES " + "=" * 30)
    for result in failed:
        lines.append(f"___ {result.title} ___")
        lines.extend(f"error: {error}" for error in result.errors)
        for what, expected, actual in result.failures:
            lines.append(f"expect/{what}:")
            lines.extend(difflib.unified_diff(_yaml(expected), _yaml(actual), "expected",
                                              "actual", lineterm="", n=3))
    passed = len(results) - len(failed)
    lines.append(f"{passed} passed, {len(failed)} failed in {seconds:.2f}s")
    return "\n".join(lines) + "\n"


def timed_run(rules: RuleSet, paths: Iterable[str | Path]) -> tuple[list[CaseResult], float]:
    """``run_tests`` and how long it took."""
    started = time.perf_counter()
    results = run_tests(rules, paths)
    return results, time.perf_counter() - started
