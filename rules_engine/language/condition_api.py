"""One condition, compiled from its source, for embedders and benchmarks (the Python API)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from rules_engine.domain.errors import EventError
from rules_engine.domain.model import TRIGGER_TYPES, AnyEventType, event_type
from rules_engine.language.context import roots_for
from rules_engine.language.expressions import CompiledExpression, compile_expression


@dataclass(frozen=True, slots=True)
class Condition:
    """A condition compiled once; ``evaluate`` is cheap, thread-safe and sandboxed."""

    source: str
    trigger: AnyEventType
    expression: CompiledExpression

    def evaluate(self, context: Mapping[str, Any], *, now: datetime | None = None) -> bool:
        """Whether the condition holds over ``context`` (a plain mapping shaped like the
        event context rules read: ``message``, ``contact``, ``conversation``, ``params``...).

        Raises ``ExpressionRuntimeError`` when the expression fails on this context (a
        missing field, a type error, a bound of the sandbox); the engine counts that as false.
        """
        return bool(self.expression.evaluate(context, now=now or datetime.now(timezone.utc)))


def compile_condition(source: str, *, trigger: str) -> Condition:
    """Compile ``source`` for conditions of rules triggered by ``trigger`` (an event type such
    as ``"message.received"``): the names that trigger provides are checked now.

    Raises ``ExpressionError`` (with a hint) for an expression that would not validate in a
    rule file, and ``EventError`` for an unknown trigger.
    """
    try:
        event = event_type(trigger)
    except ValueError:
        raise EventError(f"unknown trigger '{trigger}'",
                         hint=f"one of: {', '.join(sorted(map(str, TRIGGER_TYPES)))}") from None
    return Condition(source, event, compile_expression(source, roots_for(event)))
