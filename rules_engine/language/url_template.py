"""A URL written in a rule: each placeholder's value percent-encoded where it falls.

The scheme and host are written out in the rule (the schema makes sure), and a value can
never change the URL's structure: every character of it but letters, digits and ``-._~``
is percent-encoded (``/``, ``?``, ``#``, ``&``, ``=``, ``@``, spaces, line breaks...), in the
path, the query and the fragment alike, and a value of nothing but dots in the path has
its dots encoded too, so that it never reads as ``.`` or ``..``. The rule's own text keeps
its reserved characters; what a URL cannot hold (a space, a non-ASCII letter) is
percent-encoded as UTF-8.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from rules_engine.language.context import Spec
from rules_engine.language.expressions import CompiledExpression
from rules_engine.language.templates import as_text, compile_parts, joined

_ORIGIN = re.compile(r"[a-z]+://[^/?#]*", re.IGNORECASE)
_RESERVED = ":/?#[]@!$&'()*+,;=%"  # kept as written in the rule's text (``%`` of an escape)


@dataclass(frozen=True, slots=True)
class _Value:
    """A placeholder of the URL, and whether it falls in the path."""

    expression: CompiledExpression
    in_path: bool

    def encoded(self, context: Mapping[str, Any], now: datetime) -> str:
        text = quote(as_text(self.expression.evaluate(context, now=now)), safe="",
                     errors="replace")
        return text.replace(".", "%2E") if self.in_path and not text.strip(".") else text


@dataclass(frozen=True, slots=True)
class UrlTemplate:
    """An http(s) URL whose placeholders follow its host."""

    origin: str  # scheme://host[:port], exactly as written
    rest: tuple[str | _Value, ...]

    def render(self, context: Mapping[str, Any], *, now: datetime) -> str:
        """The URL with every value encoded; ExpressionRuntimeError when one fails."""
        return joined([self.origin, *(part if isinstance(part, str)
                                      else part.encoded(context, now) for part in self.rest)])


def compile_url(url: str, roots: Mapping[str, Spec], *, path: str = "url") -> UrlTemplate:
    """Compile a schema-checked URL; ExpressionError (with ``path``) names a bad placeholder."""
    match = _ORIGIN.match(url)
    assert match is not None, "the schema lets only http(s) URLs with a host through"
    rest: list[str | _Value] = []
    in_path = True
    for part in compile_parts(url[match.end():], roots, path):
        if isinstance(part, str):
            rest.append(quote(part, safe=_RESERVED))
            in_path = in_path and not any(mark in part for mark in "?#")
        else:
            rest.append(_Value(part, in_path))
    return UrlTemplate(match.group(), tuple(rest))
