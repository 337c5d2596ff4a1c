"""Sandboxed expressions: parsed and checked once at load time, evaluated cheaply per event.

Built on simpleeval, with its known gaps closed and a budget:

- an expression is nested at most ``MAX_NESTING`` levels deep, so neither its compiled
  source nor simpleeval meets Python's parser or recursion limits;
- every value an expression builds, text or bytes, is bounded before it is built: integers
  to ``MAX_INT_BITS``; strings, bytes, and containers counted with everything nested in them
  (``[[0]*100000]*100000`` counts 10^10), to ``MAX_VALUE_SIZE``; ``str()`` and ``%``
  formatting to the text they would make, estimated from their inputs (``rendered_size``,
  ``formatted_size``); ``%`` widths and precisions, ``round``'s digits, ``int()``'s text,
  ``min`` / ``max`` inputs;
- each evaluation has a step budget (``MAX_STEPS``; the compiled form holds it by
  construction) and a work budget (``MAX_WORK`` characters and items processed, at
  most about 25 ms; exact, so a busy machine never makes a condition fail); load-time constant
  folding runs under the same budget;
- fields are read from the event context's mappings only (never Python attributes, never
  names starting with ``_``); only whitelisted functions can be called; comprehensions,
  lambdas and method calls are refused at load time.

Each thread has its own evaluator over the shared trees, since a simpleeval evaluator
keeps per-call state.
"""
from __future__ import annotations

import ast
import operator
import re
import reprlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, NoReturn, TypeVar

from simpleeval import EvalWithCompoundTypes

from rules_engine.domain.errors import ExpressionError, did_you_mean
from rules_engine.domain.inputs import parse_flag
from rules_engine.language.compiler import compile_tree
from rules_engine.language.context import Free, Spec, field_type
from rules_engine.language.types import ANY, SIGNATURES, Type, chain_of, check_types, rewrite

_T = TypeVar("_T")

MAX_EXPRESSION_LENGTH = 2_000
MAX_NODES = 400
MAX_NESTING = 50  # levels of sub-expressions (the compiled source nests at most two per level)
MAX_STRING_LENGTH = 100_000
MAX_VALUE_SIZE = 100_000  # characters and items, nested ones included
MAX_INT_BITS = 4_096
MAX_INT_DIGITS = len(str(2**MAX_INT_BITS))  # the longest text int() reads (1,234 characters)
MAX_SHIFT = 4_096
MAX_FORMAT_WIDTH = 200  # width and precision in ``'%10.2f' % x``
MAX_ROUND_DIGITS = 100
MAX_STEPS = 2_000
MAX_WORK = 1_000_000  # characters and items an evaluation may process (at most about 25 ms)
MAX_EVALUATION_SECONDS = 0.02  # the reference evaluator's time budget


class ExpressionRuntimeError(Exception):
    """An expression failed while being evaluated (missing field, wrong type, a bound)."""


_PREVIEW = reprlib.Repr()  # keyword arguments only from Python 3.12 on
_PREVIEW.maxlevel, _PREVIEW.maxstring, _PREVIEW.maxlong, _PREVIEW.maxother = 3, 70, 40, 70


def preview(value: Any) -> Any:
    """A short rendering of a value, for traces and messages, bounded before it is built."""
    if isinstance(value, (bool, float)) or value is None:
        return value
    if isinstance(value, int):
        return value if value.bit_length() <= 53 else f"<an integer of {value.bit_length()} bits>"
    text = _PREVIEW.repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _failure(error: Exception) -> ExpressionRuntimeError:
    """Any failure of an expression as a runtime error, its message bounded (a KeyError's
    message is its key's whole repr)."""
    if isinstance(error, KeyError):  # a dict's field read at once
        return ExpressionRuntimeError(f"no field {preview(error.args[0])}")
    return ExpressionRuntimeError(f"{type(error).__name__}: {error}")


# -- bounded operators ---------------------------------------------------------------


def _check_int(value: _T) -> _T:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ExpressionRuntimeError(f"integer result over {MAX_INT_BITS} bits")
    return value


def _sized(value: Any) -> int | None:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else None


_COLLECTIONS = (list, tuple, set, frozenset, Mapping)
_CONTAINERS = (str, bytes, *_COLLECTIONS)
_PLAIN_LEAVES = frozenset({str, bytes, int, float, bool, type(None)})  # found without isinstance


def _measure(value: Any, limit: int, leaf: Callable[[Any], int], container: int,
             item: int, leaves: Callable[[Any, set[type]], int]) -> int:
    """``value`` weighed: ``leaf(x)`` for each value that is not a collection, ``container``
    for each collection and ``item`` for each thing it holds (a mapping's keys and values);
    a nested collection counts each time it appears but is walked once; the count stops a
    little past ``limit``. A collection of plain values only is weighed at once by
    ``leaves(children, their types)``, with no loop in Python (ten times as fast)."""
    known: dict[int, int] = {}

    def size(node: Any, depth: int) -> int:
        if not isinstance(node, _COLLECTIONS):
            return leaf(node)
        if depth > 100:
            raise ExpressionRuntimeError("a value nested more than 100 levels deep")
        children = [*node.keys(), *node.values()] if isinstance(node, Mapping) else node
        total = container + item * len(children)
        kinds = set(map(type, children))
        if kinds <= _PLAIN_LEAVES:
            return total + leaves(children, kinds)
        for child in children:
            if child.__class__ in _PLAIN_LEAVES:
                total += leaf(child)
            else:
                weight = known.get(id(child))
                if weight is None:
                    weight = known[id(child)] = size(child, depth + 1)
                total += weight
            if total > limit:
                break
        return total

    return size(value, 0)


def _length(value: Any) -> int:
    return len(value) if isinstance(value, (str, bytes)) else 0


_TEXTS = frozenset({str, bytes})


def _lengths(children: Any, kinds: set[type]) -> int:
    """Σ ``_length`` over plain values."""
    if kinds.isdisjoint(_TEXTS):
        return 0
    return sum(map(len, children)) if kinds <= _TEXTS else sum(map(_length, children))


def _rendered_length(value: Any) -> int:
    """The length of a value's repr, texts' escapes aside; an integer's from its bit length."""
    kind = value.__class__
    if kind is int:
        number: int = value
        return int(number.bit_length() * 0.30103) + 1 + (number < 0)  # never fewer digits
    if kind is str:
        return len(value) + 2
    if kind is bytes:
        return len(value) + 3
    return len(repr(value))  # floats, None, booleans; objects only an embedder's context holds


def _rendered_lengths(children: Any, kinds: set[type]) -> int:
    """Σ ``_rendered_length`` over plain values; texts' and integers' without a Python loop
    over the items (integers are counted by bit length, of which there are few)."""
    if kinds == {str}:
        return sum(map(len, children)) + 2 * len(children)
    if kinds == {int}:
        by_bits = Counter(map(int.bit_length, children))
        return (sum((int(bits * 0.30103) + 1) * count for bits, count in by_bits.items())
                + sum(map((0).__gt__, children)))
    return sum(map(_rendered_length, children))


def value_size(value: Any, limit: int = MAX_VALUE_SIZE) -> int:
    """Characters plus items, counting a nested container each time it appears (but walking
    it once); the count stops a little past ``limit``."""
    return _measure(value, limit, _length, container=1, item=1, leaves=_lengths)


def rendered_size(value: Any, limit: int = MAX_VALUE_SIZE) -> int:
    """The length of ``str(value)`` (a text's repr inside a container), counted without
    rendering it: texts by their length and quotes, integers by their digits, containers by
    their brackets and separators. Never less for the values expressions build, but for a
    repr's escapes (up to 10 characters for one), which only the rendered text shows. The
    count stops a little past ``limit``."""
    return _measure(value, limit, _rendered_length, container=2, item=2,
                    leaves=_rendered_lengths)


def check_size(value: _T) -> _T:
    """``value``, unless it is larger than the bound."""
    if isinstance(value, int) and not isinstance(value, bool):
        return _check_int(value)
    if isinstance(value, _CONTAINERS):
        if value_size(value) > MAX_VALUE_SIZE:
            raise ExpressionRuntimeError(f"value larger than {MAX_VALUE_SIZE} characters and items")
    return value


def bounded_pow(base: Any, exponent: Any) -> Any:
    """``**`` whose result may not exceed the integer bound (checked before computing)."""
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        if (abs(base).bit_length() - 1) * exponent > MAX_INT_BITS:
            raise ExpressionRuntimeError(f"power result over {MAX_INT_BITS} bits")
    if isinstance(exponent, (int, float)) and abs(exponent) > MAX_INT_BITS:
        raise ExpressionRuntimeError(f"exponent over {MAX_INT_BITS}")
    return operator.pow(base, exponent)


def bounded_mul(left: Any, right: Any) -> Any:
    """``*`` bounding repeated strings and lists (with what they hold), and integer products,
    before computing."""
    for sequence, count in ((left, right), (right, left)):
        if _sized(sequence) is not None and isinstance(count, int) and count > 1:
            if value_size(sequence) * count > MAX_VALUE_SIZE:
                raise ExpressionRuntimeError(f"repeated sequence over {MAX_VALUE_SIZE} "
                                             "characters and items")
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > MAX_INT_BITS + 1:
            raise ExpressionRuntimeError(f"integer result over {MAX_INT_BITS} bits")
    return operator.mul(left, right)


def bounded_join(operation: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """``+``, ``|`` or ``^`` bounding the texts and containers they join (with what they
    hold) before computing."""
    def join(left: Any, right: Any) -> Any:
        if isinstance(left, _CONTAINERS) and isinstance(right, _CONTAINERS):
            if value_size(left) + value_size(right) > MAX_VALUE_SIZE:
                raise ExpressionRuntimeError(f"joined value over {MAX_VALUE_SIZE} characters "
                                             "and items")
        return _check_int(operation(left, right))
    return join


# One % conversion as Python reads it: a key, flags, width, precision, length modifier and
# conversion character. Possessive, so a width is read whole and the scan is linear; a key
# ends at its first ')' (one that nests or does not close is refused).
_CONVERSION = re.compile(r"%(\([^()]*+\)?)?[-+ #0]*+(\*|[0-9]*+)(?:\.(\*|[0-9]*+))?[hlL]?.?",
                         re.DOTALL)
# What a conversion can add to its argument's rendering besides its width and precision:
# 309 digits ('%f' % 1e308), octal digits, a sign and a prefix.
_NUMBER_EXTRA = 320


def _too_wide(digits: str) -> bool:
    return len(digits) > 3 or int(digits or 0) > MAX_FORMAT_WIDTH


def formatted_size(template: str | bytes, arguments: Any) -> int:
    """The length of ``template % arguments``, counted before formatting (as
    ``rendered_size``); raises ExpressionRuntimeError for a conversion the sandbox refuses:
    a ``*``, a width or precision over ``MAX_FORMAT_WIDTH``, a key holding parentheses. The
    count stops a little past the bound."""
    text = template if isinstance(template, str) else template.decode("latin-1")
    size, whole = len(text), False
    for conversion in _CONVERSION.finditer(text):
        key, width, precision = conversion.groups(default="")
        if "*" in (width, precision):
            raise ExpressionRuntimeError("'*' widths are not allowed in % formatting")
        if _too_wide(width) or _too_wide(precision):
            raise ExpressionRuntimeError(f"% formatting wider than {MAX_FORMAT_WIDTH}")
        if key and not key.endswith(")"):
            raise ExpressionRuntimeError("a % key may not hold parentheses")
        size += int(width or 0) + int(precision or 0) + _NUMBER_EXTRA
        if key and isinstance(arguments, Mapping):
            name = key[1:-1]
            size += rendered_size(arguments.get(name if isinstance(template, str)
                                                else name.encode("latin-1")))
        else:
            whole = True  # the arguments, or one of them
        if size > MAX_VALUE_SIZE:
            return size
    return (size + rendered_size(arguments)) if whole else size


def bounded_mod(left: Any, right: Any) -> Any:
    """``%``: text and bytes formatting refused before it runs when it could make more than
    ``MAX_VALUE_SIZE`` characters (``formatted_size``)."""
    if isinstance(left, (str, bytes)):
        if formatted_size(left, right) > MAX_VALUE_SIZE:
            raise ExpressionRuntimeError(f"% formatting could make more than {MAX_VALUE_SIZE} "
                                         "characters")
        return check_size(operator.mod(left, right))
    return operator.mod(left, right)


def bounded_round(number: Any, digits: Any = None) -> Any:
    """``round`` with at most ``MAX_ROUND_DIGITS`` digits either side of the point."""
    if digits is not None and (not isinstance(digits, int) or abs(digits) > MAX_ROUND_DIGITS):
        raise ExpressionRuntimeError(f"round() takes at most {MAX_ROUND_DIGITS} digits")
    return round(number) if digits is None else round(number, digits)


def bounded_extreme(pick: Callable[..., Any]) -> Callable[..., Any]:
    """``min`` / ``max``: their input is a value the expression built (bounded when it was
    built) or read (bounded by the body's size), and what they return is one of its items,
    so they need no walk of their own (walking the input cost ten times the pick itself)."""
    def extreme(*values: Any) -> Any:
        return pick(*values)
    return extreme


def bounded_str(value: Any) -> str:
    """``str()``, refused before it runs when the text could be longer than the bound
    (``rendered_size``); the text is checked too, for escapes."""
    if isinstance(value, str):
        return value
    if rendered_size(value) > MAX_VALUE_SIZE:
        raise ExpressionRuntimeError(f"str() would make more than {MAX_VALUE_SIZE} characters")
    return check_size(str(value))


def bounded_int(value: Any) -> int:
    """``int()``, refusing a text longer than ``MAX_INT_DIGITS`` before reading it (whatever
    the interpreter's own limit on digits)."""
    if isinstance(value, (str, bytes)) and len(value) > MAX_INT_DIGITS:
        raise ExpressionRuntimeError(f"int() of a text over {MAX_INT_DIGITS:,} characters")
    return _check_int(int(value))


def bounded_lshift(left: Any, right: Any) -> Any:
    """``<<`` with a bounded shift."""
    if isinstance(right, int) and right > MAX_SHIFT:
        raise ExpressionRuntimeError(f"shift over {MAX_SHIFT}")
    return _check_int(operator.lshift(left, right))


OPERATORS: dict[type, Callable[..., Any]] = {
    ast.Add: bounded_join(operator.add),
    ast.Sub: lambda a, b: _check_int(operator.sub(a, b)),
    ast.Mult: bounded_mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: bounded_mod,
    ast.Pow: bounded_pow,
    ast.LShift: bounded_lshift,
    ast.RShift: operator.rshift,
    ast.BitAnd: operator.and_,
    ast.BitOr: bounded_join(operator.or_),
    ast.BitXor: bounded_join(operator.xor),
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
    ast.Not: operator.not_,
    ast.USub: lambda a: _check_int(operator.neg(a)),
    ast.UAdd: operator.pos,
    ast.Invert: operator.invert,
}


# -- whitelisted functions ---------------------------------------------------------------


def _parse_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    else:
        raise ExpressionRuntimeError(f"not a timestamp: {preview(value)}")
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ExpressionRuntimeError(f"expected text, got {type(value).__name__}")
    return value


def _contains(haystack: Any, needle: Any) -> bool:
    """Case-insensitive for text, membership for lists."""
    if isinstance(haystack, str):
        return _text(needle).lower() in haystack.lower()
    return needle in haystack


def flag(value: Any) -> bool:
    """Whether a parameter says yes as platforms send it: true, "true", "yes", "1", "on"
    (any case) or 1 (``RB_MARKDONE`` is read the same way)."""
    return parse_flag(value) is True


def _since(unit_seconds: float) -> Callable[[Any, datetime], float]:
    return lambda moment, now: (now - _parse_time(moment)).total_seconds() / unit_seconds


SINCE = {"minutes_since": _since(60), "hours_since": _since(3600), "days_since": _since(86400)}
# Where the engine puts the rule set's business hours in a context (a name no expression
# can read: fields starting with "_" are refused).
BUSINESS_HOURS_KEY = "__business_hours__"
CONTEXT_FUNCTIONS = frozenset({"in_business_hours"})  # read the context without naming it


def in_business_hours(context: Mapping[str, Any], now: datetime) -> bool:
    """Whether ``now`` (the event's time) falls in the rule set's business hours."""
    hours = context.get(BUSINESS_HOURS_KEY)
    if hours is None:
        raise ExpressionRuntimeError("no business_hours are defined in the rule files")
    return bool(hours.contains(now))


def _make_functions(clock: Callable[[], datetime],
                    names: Callable[[], Mapping[str, Any]] = dict) -> dict[str, Callable[..., Any]]:
    def since(name: str) -> Callable[[Any], float]:
        return lambda moment: SINCE[name](moment, clock())

    return {
        "lower": lambda s: _text(s).lower(),
        "upper": lambda s: _text(s).upper(),
        "strip": lambda s: _text(s).strip(),
        "contains": _contains,
        "startswith": lambda s, prefix: _text(s).startswith(_text(prefix)),
        "endswith": lambda s, suffix: _text(s).endswith(_text(suffix)),
        "len": len,
        "int": bounded_int,
        "float": float,
        "str": bounded_str,
        "abs": abs,
        "min": bounded_extreme(min),
        "max": bounded_extreme(max),
        "round": bounded_round,
        "flag": flag,
        **{name: since(name) for name in SINCE},
        "in_business_hours": lambda: in_business_hours(names(), clock()),
    }


FUNCTION_NAMES: frozenset[str] = frozenset(_make_functions(lambda: datetime.now(timezone.utc)))
# The functions compiled expressions call: the since functions take ``now`` as an argument.
COMPILED_FUNCTIONS = {**_make_functions(lambda: datetime.now(timezone.utc)), **SINCE,
                      "in_business_hours": in_business_hours}


# -- the evaluator -------------------------------------------------------------------------


class _Sandbox(EvalWithCompoundTypes):  # type: ignore[misc]
    """A simpleeval evaluator that reads fields only from mappings, calls only functions,
    bounds the containers it builds and keeps to its step and time budget."""

    def __init__(self) -> None:
        self.now = datetime.now(timezone.utc)
        self.steps = 0
        self.deadline = 0.0
        super().__init__(operators=OPERATORS, functions=_make_functions(
            lambda: self.now, lambda: self.names), names={})

    def start(self, context: Mapping[str, Any], now: datetime) -> None:
        """Reset the budget for one evaluation."""
        self.names = context
        self.now = now
        self.steps = 0
        self.deadline = time.thread_time() + MAX_EVALUATION_SECONDS

    def _eval(self, node: ast.AST) -> Any:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise ExpressionRuntimeError(f"over the budget of {MAX_STEPS} steps")
        if self.steps % 8 == 0 and time.thread_time() > self.deadline:
            raise ExpressionRuntimeError(f"over the time budget of "
                                         f"{MAX_EVALUATION_SECONDS * 1000:.0f} ms")
        return super()._eval(node)

    def _eval_list(self, node: ast.List) -> Any:
        return check_size(super()._eval_list(node))

    def _eval_tuple(self, node: ast.Tuple) -> Any:
        return check_size(super()._eval_tuple(node))

    def _eval_set(self, node: ast.Set) -> Any:
        return check_size(super()._eval_set(node))

    def _eval_dict(self, node: ast.Dict) -> Any:
        return check_size(super()._eval_dict(node))

    def _eval_attribute(self, node: ast.Attribute) -> Any:
        if node.attr.startswith("_"):
            raise ExpressionRuntimeError(f"field names may not start with '_': {node.attr}")
        container = self._eval(node.value)
        if isinstance(container, Mapping):
            if node.attr in container:
                return container[node.attr]
            raise ExpressionRuntimeError(f"no field '{node.attr}'")
        raise ExpressionRuntimeError(
            f"cannot read '.{node.attr}' of a {type(container).__name__} value"
        )

    def _eval_call(self, node: ast.Call) -> Any:
        if not isinstance(node.func, ast.Name) or node.func.id not in self.functions:
            raise ExpressionRuntimeError("only whitelisted functions can be called")
        return super()._eval_call(node)


_thread_state = threading.local()


def _sandbox() -> _Sandbox:
    sandbox = getattr(_thread_state, "sandbox", None)
    if sandbox is None:
        sandbox = _thread_state.sandbox = _Sandbox()
    return sandbox


# -- load-time checking -----------------------------------------------------------------------

_ALLOWED_NODES: tuple[type, ...] = (
    ast.Expression, ast.Constant, ast.Name, ast.Load, ast.Attribute, ast.Subscript, ast.Slice,
    ast.Compare, ast.BoolOp, ast.UnaryOp, ast.BinOp, ast.IfExp, ast.Call,
    ast.Tuple, ast.List, ast.Set, ast.Dict,
    ast.And, ast.Or, *OPERATORS.keys(),
)


def _describe(node: ast.AST) -> str:
    names = {
        ast.ListComp: "a list comprehension", ast.SetComp: "a set comprehension",
        ast.DictComp: "a dict comprehension", ast.GeneratorExp: "a generator expression",
        ast.Lambda: "a lambda", ast.NamedExpr: "an assignment (:=)",
        ast.JoinedStr: "an f-string", ast.Starred: "a starred expression",
    }
    return names.get(type(node), f"'{type(node).__name__}'")


# Names other platforms and tools give our fields (a spelling match would miss them).
_SYNONYMS = {"body": "text", "content": "text", "message": "text", "msg": "text",
             "state": "status", "open": "is_open", "agent": "assignee", "owner": "assignee",
             "labels": "tags", "label": "tags", "attributes": "fields", "custom_fields": "fields"}


class _Checker(ast.NodeVisitor):
    def __init__(self, roots: Mapping[str, Spec], source: str) -> None:
        self.roots = roots
        self.source = source

    def fail(self, node: ast.AST, message: str, hint: str | None = None) -> NoReturn:
        raise ExpressionError(message, column=getattr(node, "col_offset", 0) + 1, hint=hint)

    def generic_visit(self, node: ast.AST) -> None:
        if not isinstance(node, _ALLOWED_NODES):
            self.fail(node, f"{_describe(node)} is not allowed in an expression",
                      "use the operators, fields and whitelisted functions only")
        super().generic_visit(node)

    def text(self, node: ast.AST) -> str:
        return ast.get_source_segment(self.source, node) or ast.unparse(node)

    def rewritten(self, node: ast.AST, text: str) -> str:
        return f"`{rewrite(self.source, node, text)}`"

    def visit_Call(self, node: ast.Call) -> None:
        if not isinstance(node.func, ast.Name):
            method = node.func
            if isinstance(method, ast.Attribute) and method.attr in FUNCTION_NAMES:
                arguments = [self.text(part) for part in (method.value, *node.args)]
                hint = "write " + self.rewritten(node, f"{method.attr}({', '.join(arguments)})")
            else:
                hint = "call a whitelisted function instead, e.g. lower(message.text)"
            self.fail(node, "method calls are not allowed", hint)
        name = node.func.id
        if name.startswith("_"):
            self.fail(node, f"names starting with '_' are not allowed: '{name}'",
                      "call one of the whitelisted functions")
        if name not in FUNCTION_NAMES:
            self.fail(node, f"unknown function '{name}'",
                      did_you_mean(name, FUNCTION_NAMES) or
                      f"known functions: {', '.join(sorted(FUNCTION_NAMES))}")
        if node.keywords:
            given = [self.text(part) for part in (*node.args, *(k.value for k in node.keywords))]
            by_position = f"{name}({', '.join(given)})"
            self.fail(node, "keyword arguments are not allowed",
                      f"pass the arguments by position: {self.rewritten(node, by_position)}")
        for argument in node.args:
            self.visit(argument)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self._check_chain(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if chain_of(node) is not None:
            self._check_chain(node)
        else:
            self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        self._check_chain(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, (str, bytes)) and len(node.value) > MAX_STRING_LENGTH:
            self.fail(node, f"literal longer than {MAX_STRING_LENGTH} characters",
                      "keep long texts in a contact field and compare with it")

    def _check_chain(self, node: ast.AST) -> None:
        chain = chain_of(node)
        if chain is None:
            self.generic_visit(node)
            return
        for part in chain:
            if part.startswith("_"):
                self.fail(node, f"names starting with '_' are not allowed: '{part}'",
                          "read the documented event fields only")
        root, *fields = chain
        if root not in self.roots:
            if root in FUNCTION_NAMES:
                self.fail(node, f"'{root}' is a function, not a value",
                          f"call it: {self.rewritten(node, SIGNATURES[root].example)}")
            self.fail(node, f"unknown name '{root}' for this trigger",
                      did_you_mean(root, self.roots) or
                      f"this trigger provides: {', '.join(sorted(self.roots))}")
        spec: Spec = self.roots[root]
        walked = root
        for part in fields:
            if isinstance(spec, Free):
                return
            if isinstance(spec, Type):
                self.fail(node, f"'{walked}' is a value and has no field '{part}'",
                          f"use {walked} itself, or a function such as len({walked})")
            assert isinstance(spec, Mapping)
            if part not in spec:
                known = [f"{walked}.{name}" for name in spec]
                meant = _SYNONYMS.get(part)
                self.fail(node, f"unknown field '{walked}.{part}' for this trigger",
                          f"did you mean `{walked}.{meant}`?" if meant in spec else
                          did_you_mean(f"{walked}.{part}", known) or
                          f"{walked} has: {', '.join(sorted(spec))}")
            spec = spec[part]
            walked = f"{walked}.{part}"


_YAML_CONSTANTS = {"true": True, "false": False, "null": None}


class _YamlConstants(ast.NodeTransformer):
    """Let admins write ``true`` / ``false`` / ``null`` as in YAML (and True/False/None)."""

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in _YAML_CONSTANTS:
            return ast.copy_location(ast.Constant(_YAML_CONSTANTS[node.id]), node)
        return node


def _deeper_than_allowed(tree: ast.AST) -> ast.expr | None:
    """A sub-expression nested more than ``MAX_NESTING`` levels deep, if any (found without
    recursion, since the tree may be deep)."""
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, ast.expr):
            depth += 1
            if depth > MAX_NESTING:
                return node
        stack.extend((child, depth) for child in ast.iter_child_nodes(node))
    return None


def _too_deep(column: int | None) -> ExpressionError:
    return ExpressionError(f"expression nested more than {MAX_NESTING} levels deep (each "
                           "operator, call, bracket or field is a level)", column=column,
                           hint="split it into several conditions under all: / any:")


def reads_context(tree: ast.AST) -> bool:
    """Whether an expression reads any name other than the functions it calls."""
    called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    return any(isinstance(node, ast.Name) and (id(node) not in called or node.id in CONTEXT_FUNCTIONS)
               for node in ast.walk(tree))


@dataclass(frozen=True, slots=True)
class CompiledExpression:
    """A parsed, checked expression compiled to a Python function (``rules_engine.language.compiler``);
    ``evaluate`` is cheap and thread-safe. ``evaluate_reference`` runs the same tree on
    simpleeval, the reference the compiled function is tested against."""

    source: str
    tree: ast.expr
    function: Callable[[Mapping[str, Any], datetime, list[int]], Any]
    type: Type = ANY
    warnings: tuple[ExpressionError, ...] = ()  # what evaluates but can never be true

    def constant_value(self, *, now: datetime) -> Any:
        """The value when the expression reads no field (e.g. ``1 > 2``); raises
        ExpressionRuntimeError when it does, or when evaluating it fails."""
        if reads_context(self.tree):
            raise ExpressionRuntimeError("the expression reads the event context")
        return self.evaluate({}, now=now)

    def evaluate(self, context: Mapping[str, Any], *, now: datetime) -> Any:
        """The expression's value over ``context``; raises ExpressionRuntimeError on failure."""
        try:
            return self.function(context, now, [0])
        except ExpressionRuntimeError:
            raise
        except Exception as error:  # any failure of the user's expression counts as false
            raise _failure(error) from error

    def evaluate_reference(self, context: Mapping[str, Any], *, now: datetime) -> Any:
        """The same, evaluated by simpleeval (the reference for the compiled function)."""
        sandbox = _sandbox()
        sandbox.start(context, now)
        try:
            return sandbox.eval(self.source, previously_parsed=self.tree)
        except ExpressionRuntimeError:
            raise
        except Exception as error:
            raise _failure(error) from error


_INFIX_CALL = re.compile(r"^(?P<left>.+?)\s+(?P<name>contains|startswith|endswith)\s+(?P<right>.+)$")


def _syntax_hint(source: str) -> str:
    """How to write what was meant: ``a contains b`` is ``contains(a, b)``."""
    infix = _INFIX_CALL.match(source)
    if infix:
        return (f"{infix['name']} is a function: write `{infix['name']}({infix['left']}, "
                f"{infix['right']})`")
    return "conditions are Python-like expressions, e.g. message.text == 'hi'"


def compile_expression(source: str, roots: Mapping[str, Spec]) -> CompiledExpression:
    """Parse and check ``source`` against the names ``roots`` provides.

    Raises ExpressionError (with ``column`` relative to the expression) on a syntax error,
    a disallowed construct, an unknown function or an unknown name.
    """
    if not isinstance(source, str) or not source.strip():
        raise ExpressionError("an expression must be a non-empty string",
                              hint="e.g. conversation.is_open")
    if len(source) > MAX_EXPRESSION_LENGTH:
        raise ExpressionError(f"expression longer than {MAX_EXPRESSION_LENGTH} characters",
                              hint="split it into several conditions under all: / any:")
    stripped = source.strip()
    try:
        module = ast.parse(stripped, mode="eval")
    except SyntaxError as error:
        if error.msg == "too many nested parentheses":  # Python's own bound, past ours
            raise _too_deep(error.offset) from None
        raise ExpressionError(f"syntax error: {error.msg}", column=error.offset,
                              hint=_syntax_hint(stripped)) from None
    if sum(1 for _ in ast.walk(module)) > MAX_NODES:
        raise ExpressionError(f"expression has more than {MAX_NODES} parts", hint="split it")
    deep = _deeper_than_allowed(module)
    if deep is not None:
        raise _too_deep(deep.col_offset + 1)
    module = _YamlConstants().visit(module)
    _Checker(roots, stripped).visit(module)
    typed = check_types(module.body, stripped, lambda chain: field_type(roots, chain))
    compiled = CompiledExpression(source=stripped, tree=module.body, function=compile_tree(
        module.body, operators=OPERATORS, functions=COMPILED_FUNCTIONS, check_size=check_size,
        error=ExpressionRuntimeError, max_work=MAX_WORK), type=typed.type,
        warnings=tuple(typed.warnings))
    if not reads_context(module):
        try:  # it reads nothing from the event: fold it now, under the same budget
            compiled.constant_value(now=datetime.now(timezone.utc))
        except ExpressionRuntimeError as error:
            raise ExpressionError(f"this expression always fails: {error}", column=1,
                                  hint="it reads no event field, so it fails for every event; "
                                       "fix or remove it") from None
    return compiled
