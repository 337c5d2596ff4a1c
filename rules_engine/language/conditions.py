"""Condition trees (expressions combined with all / any / not), compiled once, evaluated per event."""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from rules_engine.domain.errors import ExpressionError
from rules_engine.language.context import Spec
from rules_engine.language.expressions import (
    CompiledExpression,
    ExpressionRuntimeError,
    compile_expression,
    preview,
)


class ConditionFailed(Exception):
    """A condition raised while being evaluated: the whole rule counts as not matching."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


class Condition(Protocol):
    """A compiled condition: ``holds`` evaluates it and records each leaf it evaluated in
    ``log``, by path: its result, or {result, value | error} (see trace_format)."""

    @property
    def path(self) -> str:
        """Where the condition sits in its rule, e.g. ``conditions/1/any/0``."""

    def holds(
        self, context: Mapping[str, Any], now: datetime, log: dict[str, Any]
    ) -> bool: ...

    def constant(self) -> bool | None:
        """True or False when the condition cannot depend on the event; None otherwise."""

    def sources(self) -> Iterator[tuple[str, str]]:
        """(path, text) of every leaf, for traces (which store the text once per rule set)."""

    def compiled(self) -> Iterator[tuple[str, CompiledExpression]]:
        """(path, expression) of every expression leaf."""


@dataclass(frozen=True, slots=True)
class ExpressionCondition:
    """One expression; true when its value is truthy."""

    path: str
    expression: CompiledExpression

    def holds(self, context: Mapping[str, Any], now: datetime, log: dict[str, Any]) -> bool:
        try:
            value = self.expression.evaluate(context, now=now)
        except ExpressionRuntimeError as error:
            log[self.path] = {"result": False, "error": str(error)}
            raise ConditionFailed(self.path, str(error)) from None
        # a boolean value is its own result; any other value is previewed beside it
        log[self.path] = value if value is True or value is False else {
            "result": bool(value), "value": preview(value)}
        return bool(value)

    def sources(self) -> Iterator[tuple[str, str]]:
        yield self.path, self.expression.source

    def compiled(self) -> Iterator[tuple[str, CompiledExpression]]:
        yield self.path, self.expression

    def constant(self) -> bool | None:
        try:
            return bool(self.expression.constant_value(now=datetime.now(timezone.utc)))
        except ExpressionRuntimeError:
            return None


@dataclass(frozen=True, slots=True)
class ConstantCondition:
    """``true`` or ``false`` written as a condition (useful to park a rule)."""

    path: str
    value: bool

    def holds(self, context: Mapping[str, Any], now: datetime, log: dict[str, Any]) -> bool:
        log[self.path] = self.value
        return self.value

    def sources(self) -> Iterator[tuple[str, str]]:
        yield self.path, str(self.value).lower()

    def compiled(self) -> Iterator[tuple[str, CompiledExpression]]:
        return iter(())

    def constant(self) -> bool | None:
        return self.value


@dataclass(frozen=True, slots=True)
class AllOf:
    """True when every child holds (stops at the first that does not)."""

    path: str
    children: tuple[Condition, ...]

    def holds(self, context: Mapping[str, Any], now: datetime, log: dict[str, Any]) -> bool:
        return all(child.holds(context, now, log) for child in self.children)

    def constant(self) -> bool | None:
        values = [child.constant() for child in self.children]
        return False if False in values else True if all(v is True for v in values) else None

    def sources(self) -> Iterator[tuple[str, str]]:
        for child in self.children:
            yield from child.sources()

    def compiled(self) -> Iterator[tuple[str, CompiledExpression]]:
        for child in self.children:
            yield from child.compiled()


@dataclass(frozen=True, slots=True)
class AnyOf:
    """True when some child holds (stops at the first that does)."""

    path: str
    children: tuple[Condition, ...]

    def holds(self, context: Mapping[str, Any], now: datetime, log: dict[str, Any]) -> bool:
        return any(child.holds(context, now, log) for child in self.children)

    def constant(self) -> bool | None:
        values = [child.constant() for child in self.children]
        return True if True in values else False if all(v is False for v in values) else None

    def sources(self) -> Iterator[tuple[str, str]]:
        for child in self.children:
            yield from child.sources()

    def compiled(self) -> Iterator[tuple[str, CompiledExpression]]:
        for child in self.children:
            yield from child.compiled()


@dataclass(frozen=True, slots=True)
class NotOf:
    """True when the child does not hold."""

    path: str
    child: Condition

    def holds(self, context: Mapping[str, Any], now: datetime, log: dict[str, Any]) -> bool:
        return not self.child.holds(context, now, log)

    def constant(self) -> bool | None:
        value = self.child.constant()
        return None if value is None else not value

    def sources(self) -> Iterator[tuple[str, str]]:
        return self.child.sources()

    def compiled(self) -> Iterator[tuple[str, CompiledExpression]]:
        return self.child.compiled()


def build_condition(raw: Any, roots: Mapping[str, Spec], path: str,
                      problems: list[ExpressionError] | None = None) -> Condition:
    """Compile validated condition config at ``path`` (e.g. ``conditions/1/any/0``).

    Raises ExpressionError with ``path`` set when an expression does not compile; with
    ``problems``, every such error is appended there instead (so that all are reported)
    and the expression counts as false.
    """
    if isinstance(raw, bool):
        return ConstantCondition(path, raw)
    if isinstance(raw, str):
        try:
            return ExpressionCondition(path, compile_expression(raw, roots))
        except ExpressionError as error:
            error.path = path
            if problems is None:
                raise
            problems.append(error)
            return ConstantCondition(path, False)
    if isinstance(raw, list):
        return AllOf(path, _compile_children(raw, roots, path, problems))
    (operator, argument), = raw.items()
    if operator == "not":
        return NotOf(path, build_condition(argument, roots, f"{path}/not", problems))
    children = _compile_children(argument, roots, f"{path}/{operator}", problems)
    return AllOf(path, children) if operator == "all" else AnyOf(path, children)


def _compile_children(raw: list[Any], roots: Mapping[str, Spec], path: str,
                      problems: list[ExpressionError] | None) -> tuple[Condition, ...]:
    return tuple(build_condition(item, roots, f"{path}/{index}", problems)
                 for index, item in enumerate(raw))
