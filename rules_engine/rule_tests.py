"""``rules-engine test``: YAML test cases for rules, run in a throw-away store.

Each case gives a starting state (contacts with tags, fields and an open conversation), one
or more events, and what should happen: which rules fired (or that nothing fires), which
actions ran with which arguments, and the resulting conversations and contacts. A failure
shows a unified diff of the expected and the actual values.
"""
from __future__ import annotations

import difflib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

from rules_engine.domain.errors import (
    RuleFileError,
    RulesEngineError,
    RuleValidationError,
    did_you_mean,
)
from rules_engine.domain.lifecycle import Lifecycle
from rules_engine.domain.model import OpenSource
from rules_engine.domain.timers import parse_duration
from rules_engine.engine import Engine, Result
from rules_engine.formats.events import parse_event
from rules_engine.formats.schema import load_schema
from rules_engine.formats.schema_errors import explain
from rules_engine.formats.yaml_source import load_yaml
from rules_engine.rules.loader import RULE_FILE_SUFFIXES
from rules_engine.rules.ruleset import RuleSet
from rules_engine.store import Store, StoreTx
from rules_engine.trace.shapes import Step

START = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)


@dataclass
class CaseResult:
    """One test case's outcome: failures are (what, expected, actual)."""

    file: str
    name: str
    failures: list[tuple[str, Any, Any]] = field(default_factory=list)
    error: str | None = None

    @property
    def passed(self) -> bool:
        return not self.failures and self.error is None

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


@dataclass(frozen=True)
class LoadedCase:
    """A test case as written, where it starts, and its schema problem if any."""

    name: str
    line: int
    data: Any
    problem: str | None = None


def load_cases(path: Path) -> list[LoadedCase]:
    """The cases in one test file. The file's shape is checked first (an error for the
    whole file); then each case against ``rule-tests.schema.json`` on its own, so that one
    broken case never hides the others."""
    data, source_map = load_yaml(path.read_text("utf-8"), str(path))
    schema = load_schema("rule-tests")
    validator = Draft202012Validator(schema)
    if not isinstance(data, dict) or not isinstance(data.get("tests"), list):
        shape = {"tests": []} if isinstance(data, dict) and "tests" in data else data
        errors = [e for e in validator.iter_errors(shape)]
        problem = explain(errors[0])[0] if errors else None
        hint = ("a test file starts with `tests:` and a list of cases; rule files (`rules:`) "
                "are not test files")
        raise RuleValidationError(problem.message if problem else "no test cases",
                                  file=str(path), line=1, column=1, hint=hint)
    case_schema = {**schema, "$ref": "#/$defs/case"}
    case_schema.pop("properties", None), case_schema.pop("required", None)
    case_schema.pop("additionalProperties", None), case_schema.pop("type", None)
    case_validator = Draft202012Validator(case_schema)
    cases = []
    for index, case in enumerate(data["tests"]):
        where = source_map.value_at(("tests", index))
        line = where.line if where else 1
        name = case.get("name") if isinstance(case, dict) else None
        if not isinstance(name, str):
            name = f"(case {index + 1})"
        errors = list(case_validator.iter_errors(case))
        refusal = None
        if errors:
            explained = explain(errors[0])[0]
            at = source_map.value_at(("tests", index, *explained.path))
            refusal = (f"{path}:{at.line if at else line}: "
                       f"{'/'.join(map(str, explained.path)) or 'case'}: {explained.message}"
                       + (f" (hint: {explained.hint})" if explained.hint else ""))
        cases.append(LoadedCase(name, line, case, refusal))
    return cases


class _Case:
    """Runs one case against a fresh in-memory store."""

    def __init__(self, rules: RuleSet, case: Mapping[str, Any]) -> None:
        self.case = case
        self.store = Store("sqlite:///:memory:")
        self.engine = Engine(self.store, rules)
        self.refs: dict[str, int] = {}
        self.identities: dict[str, tuple[str, str]] = {}
        self.results: list[Result] = []
        self.advanced = timedelta(0)  # how far `advance:` steps have moved the clock
        self.latest = START  # the latest moment an event or an advance reached

    def seed(self) -> None:
        with self.store.transaction() as tx:
            lifecycle = Lifecycle(tx, event_id="given", at=START - timedelta(minutes=1))
            for contact in self.case.get("given", {}).get("contacts", []):
                created, _ = tx.create_contact(name=contact.get("name"), created_at=START,
                                               channel=contact["channel"],
                                               external_id=contact["external_id"])
                self.refs[contact["ref"]] = created.id
                self.identities[contact["ref"]] = (contact["channel"], contact["external_id"])
                for tag in contact.get("tags", []):
                    tx.add_tag(created.id, tag)
                for name, value in contact.get("fields", {}).items():
                    tx.set_field(created.id, name, value)
                if "conversation" in contact:
                    given = contact["conversation"]
                    lifecycle.open(created.id, channel=contact["channel"],
                                   source=OpenSource(given.get("open_source", "incoming_message")),
                                   actor=None, assignee=given.get("assignee"),
                                   team=given.get("team"))

    def event(self, index: int, raw: Mapping[str, Any]) -> dict[str, Any]:
        data = {key: value for key, value in raw.items() if key not in ("text", "at")}
        data.setdefault("id", f"test-event-{index + 1}")
        data["timestamp"] = self.time(index, raw).isoformat()
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

    def time(self, index: int, raw: Mapping[str, Any]) -> datetime:
        """An event's time: ``at`` (else its place) minutes from the start, plus every
        ``advance`` before it."""
        return START + timedelta(minutes=raw.get("at", index)) + self.advanced

    def run(self) -> list[tuple[str, Any, Any]]:
        self.seed()
        for index, raw in enumerate(self.case["events"]):
            if "advance" in raw:  # the clock moves on from the latest moment; timers fire
                here = self.time(index, {})
                self.latest = max(self.latest, here) + parse_duration(raw["advance"])
                self.advanced += self.latest - here  # later events follow on from there
                for _, outcome in self.engine.fire_all_due(self.latest):
                    if isinstance(outcome, RulesEngineError):
                        raise outcome
                    self.results.append(outcome)
                continue
            event = parse_event(self.event(index, raw))
            self.latest = max(self.latest, event.timestamp)
            self.results.append(self.engine.process(event))
        return list(self.check(self.case["expect"]))

    def actions(self) -> list[dict[str, Any]]:
        return [{"rule": rule["rule_id"], "action": action["action"], "args": action["args"],
                 "outcome": action["outcome"]}
                for result in self.results for step in _steps(result)
                for rule in step["rules"] for action in rule["actions"]]

    def check(self, expect: Mapping[str, Any]) -> Iterable[tuple[str, Any, Any]]:
        named = [*expect.get("fired", []), *expect.get("not_fired", []),
                 *(wanted.get("rule") for wanted in expect.get("actions", []))]
        known = [rule.id for rule in self.engine.rules.rules]
        for rule_id in dict.fromkeys(named):
            if rule_id not in known:  # a test about a rule that does not exist proves nothing
                yield "unknown rule", rule_id, did_you_mean(rule_id, known) or "not in the rules"
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
    for path in case_files(paths):
        try:
            cases = load_cases(path)
        except RulesEngineError as error:
            results.append(CaseResult(str(path), "(file)", error=str(error)))
            continue
        for case in cases:
            outcome = CaseResult(str(path), case.name)
            if case.problem:
                outcome.error = case.problem
                results.append(outcome)
                continue
            runner = _Case(rules, case.data)
            try:
                outcome.failures = runner.run()
            except RulesEngineError as error:
                outcome.error = f"{path}:{case.line}: {error}"
            finally:
                runner.store.dispose()
            results.append(outcome)
    return results


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
        if result.error:
            lines.append(f"error: {result.error}")
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
