"""The one guarded way a request body becomes Python values, for every endpoint.

JSON is decoded strictly: no ``NaN`` / ``Infinity`` (nor ``1e999``), no integer longer
than 40 digits, no nesting deeper than 64 levels, no lone UTF-16 surrogate (which no
database can store). Each refusal is a 400 naming the path. (Where an integer becomes a
database id, its range is checked where it is used: ``rules_engine.domain.model.MAX_ID``.)
"""
from __future__ import annotations

import json
import math
import re
from typing import Any

from .errors import ApiError

MAX_DEPTH = 64
MAX_INTEGER_DIGITS = 40
_SURROGATE = re.compile("[\ud800-\udfff]")


class _Refused(ValueError):
    """A value the decoder will not produce."""


def _refuse_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number this API accepts")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise _Refused(f"an integer of {len(text)} digits is out of range")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"the number {text[:40]} is out of range")
    return value


def _invalid(message: str, path: str | None = None) -> ApiError:
    return ApiError(400, "malformed_json", f"the body is not acceptable JSON: {message}",
                    path=path or None)


def decode_json(body: bytes) -> Any:
    """The body as JSON values; ApiError(400) for anything not acceptable, naming its path."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _invalid(f"not UTF-8 ({error.reason} at byte {error.start})") from None
    try:
        data = json.loads(text, parse_constant=_refuse_constant, parse_int=_bounded_int,
                          parse_float=_finite_float)
    except _Refused as error:
        raise _invalid(str(error)) from None
    except RecursionError:
        raise _invalid(f"nested more than {MAX_DEPTH} levels deep") from None
    except json.JSONDecodeError as error:
        raise _invalid(f"{error.msg} (line {error.lineno}, column {error.colno})") from None
    _check_values(data)
    return data


def _check_values(data: Any) -> None:
    """Depth and lone surrogates, walked without recursion."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _invalid(f"nested more than {MAX_DEPTH} levels deep", path)
        if isinstance(value, str):
            if not value.isascii() and _SURROGATE.search(value):
                raise _invalid("a string holds a lone UTF-16 surrogate", path)
        elif isinstance(value, dict):
            for key, item in value.items():
                if not key.isascii() and _SURROGATE.search(key):
                    raise _invalid("a key holds a lone UTF-16 surrogate", path)
                stack.append((item, f"{path}/{key}" if path else key, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, f"{path}/{i}" if path else str(i), depth + 1)
                         for i, item in enumerate(value))
