"""Templated values for outbound actions: ``{{ expression }}`` inside strings of any JSON value.

``"Hi {{ contact.name }}"`` renders as text; a string that is exactly one placeholder,
``"{{ contact.fields.order_id }}"``, keeps the expression's own type (number, list...), which
must be a JSON value. Every expression is compiled and checked at load time like a
condition; a rendered template is bounded to ``MAX_STRING_LENGTH`` characters, counted
before each piece of it is made.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rules_engine.domain.errors import ExpressionError
from rules_engine.language.context import Spec
from rules_engine.language.expressions import (
    MAX_STRING_LENGTH,
    CompiledExpression,
    ExpressionRuntimeError,
    bounded_str,
    compile_expression,
    rendered_size,
)

_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)


@dataclass(frozen=True, slots=True)
class _Text:
    parts: tuple[str | CompiledExpression, ...]

    def render(self, context: Mapping[str, Any], now: datetime, spent: list[int]) -> Any:
        if len(self.parts) == 1 and isinstance(self.parts[0], CompiledExpression):
            value = self.parts[0].evaluate(context, now=now)
            _spend(spent, rendered_size(value))
            return _json_value(value)
        pieces = []
        for part in self.parts:
            piece = part if isinstance(part, str) else as_text(part.evaluate(context, now=now))
            _spend(spent, len(piece))
            pieces.append(piece)
        return "".join(pieces)


def _spend(spent: list[int], characters: int) -> None:
    """Count a piece of the template, refusing it past the bound (before the whole is made)."""
    spent[0] += characters
    if spent[0] > MAX_STRING_LENGTH:
        raise ExpressionRuntimeError(f"rendered template over {MAX_STRING_LENGTH} characters")


def as_text(value: Any) -> str:
    """A placeholder's value as it reads inside text (nothing for None), bounded."""
    return "" if value is None else bounded_str(value)


def _json_value(value: Any) -> Any:
    """``value``, when JSON can hold it (bytes or a set cannot: the action fails, not the event)."""
    try:
        json.dumps(value)
    except (TypeError, ValueError) as error:
        raise ExpressionRuntimeError(f"not a JSON value: {error}") from None
    return value


def joined(pieces: Iterable[str]) -> str:
    """Rendered pieces as one text; ExpressionRuntimeError when it is too long."""
    rendered = "".join(pieces)
    if len(rendered) > MAX_STRING_LENGTH:
        raise ExpressionRuntimeError(f"rendered text over {MAX_STRING_LENGTH} characters")
    return rendered


def compile_parts(text: str, roots: Mapping[str, Spec], path: str
                  ) -> tuple[str | CompiledExpression, ...]:
    """``text`` as its literal pieces and compiled placeholders, in order; ExpressionError
    (with ``path``) names a bad placeholder."""
    parts: list[str | CompiledExpression] = []
    position = 0
    for match in _PLACEHOLDER.finditer(text):
        if match.start() > position:
            parts.append(text[position:match.start()])
        try:
            parts.append(compile_expression(match.group(1), roots))
        except ExpressionError as error:
            error.path = path
            error.message = f"in {{{{{match.group(1)}}}}}: {error.message}"
            raise
        position = match.end()
    if position < len(text):
        parts.append(text[position:])
    return tuple(parts)


def _compile_text(text: str, roots: Mapping[str, Spec], path: str) -> _Text | str:
    parts = compile_parts(text, roots, path)
    return _Text(parts) if any(isinstance(part, CompiledExpression) for part in parts) else text


@dataclass(frozen=True, slots=True)
class Template:
    """A JSON value whose strings may hold ``{{ expression }}`` placeholders."""

    value: Any

    def render(self, context: Mapping[str, Any], *, now: datetime) -> Any:
        """The value with every placeholder evaluated; ExpressionRuntimeError on failure."""
        return _render(self.value, context, now, [0])


def _render(value: Any, context: Mapping[str, Any], now: datetime, spent: list[int]) -> Any:
    if isinstance(value, _Text):
        return value.render(context, now, spent)
    if isinstance(value, dict):
        return {key: _render(item, context, now, spent) for key, item in value.items()}
    if isinstance(value, list):
        return [_render(item, context, now, spent) for item in value]
    return value


def _compile(value: Any, roots: Mapping[str, Spec], path: str) -> Any:
    if isinstance(value, str):
        return _compile_text(value, roots, path)
    if isinstance(value, dict):
        return {key: _compile(item, roots, f"{path}/{key}") for key, item in value.items()}
    if isinstance(value, list):
        return [_compile(item, roots, f"{path}/{index}") for index, item in enumerate(value)]
    return value


def compile_template(value: Any, roots: Mapping[str, Spec], *, path: str = "") -> Template:
    """Compile every placeholder in ``value``; ExpressionError names the path of a bad one."""
    return Template(_compile(value, roots, path))
