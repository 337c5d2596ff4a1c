"""Sandboxed expressions: parsed and checked once at load time, evaluated cheaply per event.

Built on simpleeval, with its known gaps closed: power, multiplication, addition and
shifts are replaced by operators that bound the size of their *result*; fields are read
from the event context's mappings only (never Python attributes, never names starting
with ``_``); only whitelisted functions can be called; comprehensions, lambdas and method
calls are refused at load time. Each thread has its own evaluator over the shared trees,
since a simpleeval evaluator keeps per-call state.
"""
from __future__ import annotations

import ast
import operator
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from simpleeval import EvalWithCompoundTypes

from .context import FREE, LEAF, Spec
from .errors import ExpressionError, did_you_mean

MAX_EXPRESSION_LENGTH = 2_000
MAX_NODES = 400
MAX_STRING_LENGTH = 100_000
MAX_INT_BITS = 4_096
MAX_SHIFT = 4_096


class ExpressionRuntimeError(Exception):
    """An expression failed while being evaluated (missing field, wrong type, a bound)."""


# -- bounded operators ---------------------------------------------------------------


def _check_int(value: Any) -> Any:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ExpressionRuntimeError(f"integer result over {MAX_INT_BITS} bits")
    return value


def _sized(value: Any) -> int | None:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else None


def bounded_pow(base: Any, exponent: Any) -> Any:
    """``**`` whose result may not exceed the integer bound (checked before computing)."""
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        if (abs(base).bit_length() - 1) * exponent > MAX_INT_BITS:
            raise ExpressionRuntimeError(f"power result over {MAX_INT_BITS} bits")
    if isinstance(exponent, (int, float)) and abs(exponent) > MAX_INT_BITS:
        raise ExpressionRuntimeError(f"exponent over {MAX_INT_BITS}")
    return operator.pow(base, exponent)


def bounded_mul(left: Any, right: Any) -> Any:
    """``*`` bounding repeated strings and lists, and integer products, before computing."""
    for sequence, count in ((left, right), (right, left)):
        size = _sized(sequence)
        if size is not None and isinstance(count, int) and size * count > MAX_STRING_LENGTH:
            raise ExpressionRuntimeError(f"repeated sequence over {MAX_STRING_LENGTH} items")
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > MAX_INT_BITS + 1:
            raise ExpressionRuntimeError(f"integer result over {MAX_INT_BITS} bits")
    return operator.mul(left, right)


def bounded_add(left: Any, right: Any) -> Any:
    """``+`` bounding the length of concatenated strings and lists."""
    left_size, right_size = _sized(left), _sized(right)
    if left_size is not None and right_size is not None:
        if left_size + right_size > MAX_STRING_LENGTH:
            raise ExpressionRuntimeError(f"concatenation over {MAX_STRING_LENGTH} items")
    return _check_int(operator.add(left, right))


def bounded_lshift(left: Any, right: Any) -> Any:
    """``<<`` with a bounded shift."""
    if isinstance(right, int) and right > MAX_SHIFT:
        raise ExpressionRuntimeError(f"shift over {MAX_SHIFT}")
    return _check_int(operator.lshift(left, right))


OPERATORS: dict[type, Callable[..., Any]] = {
    ast.Add: bounded_add,
    ast.Sub: lambda a, b: _check_int(operator.sub(a, b)),
    ast.Mult: bounded_mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: bounded_pow,
    ast.LShift: bounded_lshift,
    ast.RShift: operator.rshift,
    ast.BitAnd: operator.and_,
    ast.BitOr: operator.or_,
    ast.BitXor: operator.xor,
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
        raise ExpressionRuntimeError(f"not a timestamp: {value!r}")
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


def _make_functions(clock: Callable[[], datetime]) -> dict[str, Callable[..., Any]]:
    def since(unit_seconds: float) -> Callable[[Any], float]:
        return lambda moment: (clock() - _parse_time(moment)).total_seconds() / unit_seconds

    return {
        "lower": lambda s: _text(s).lower(),
        "upper": lambda s: _text(s).upper(),
        "strip": lambda s: _text(s).strip(),
        "contains": _contains,
        "startswith": lambda s, prefix: _text(s).startswith(_text(prefix)),
        "endswith": lambda s, suffix: _text(s).endswith(_text(suffix)),
        "len": len,
        "int": lambda v: _check_int(int(v)),
        "float": float,
        "str": lambda v: str(_check_int(v)),
        "abs": abs,
        "min": min,
        "max": max,
        "round": round,
        "minutes_since": since(60),
        "hours_since": since(3600),
        "days_since": since(86400),
    }


FUNCTION_NAMES: frozenset[str] = frozenset(_make_functions(lambda: datetime.now(timezone.utc)))


# -- the evaluator -------------------------------------------------------------------------


class _Sandbox(EvalWithCompoundTypes):  # type: ignore[misc]
    """A simpleeval evaluator that reads fields only from mappings and calls only functions."""

    def __init__(self) -> None:
        self.now = datetime.now(timezone.utc)
        super().__init__(operators=OPERATORS, functions=_make_functions(lambda: self.now), names={})

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


def _field_chain(node: ast.AST) -> list[str] | None:
    """``message.text`` / ``params['x']`` -> ['message', 'text']; None for other shapes."""
    parts: list[str] = []
    while True:
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, str)
        ):
            parts.append(node.slice.value)
            node = node.value
        elif isinstance(node, ast.Name):
            parts.append(node.id)
            return parts[::-1]
        else:
            return None


class _Checker(ast.NodeVisitor):
    def __init__(self, roots: Mapping[str, Spec]) -> None:
        self.roots = roots

    def fail(self, node: ast.AST, message: str, hint: str | None = None) -> None:
        raise ExpressionError(message, column=getattr(node, "col_offset", 0) + 1, hint=hint)

    def generic_visit(self, node: ast.AST) -> None:
        if not isinstance(node, _ALLOWED_NODES):
            self.fail(node, f"{_describe(node)} is not allowed in an expression",
                      "use the operators, fields and whitelisted functions only")
        super().generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        if not isinstance(node.func, ast.Name):
            self.fail(node, "method calls are not allowed",
                      "call a whitelisted function instead, e.g. lower(message.text)")
        name = node.func.id  # type: ignore[union-attr]
        if name.startswith("_"):
            self.fail(node, f"names starting with '_' are not allowed: '{name}'",
                      "call one of the whitelisted functions")
        if name not in FUNCTION_NAMES:
            self.fail(node, f"unknown function '{name}'",
                      did_you_mean(name, FUNCTION_NAMES) or
                      f"known functions: {', '.join(sorted(FUNCTION_NAMES))}")
        if node.keywords:
            self.fail(node, "keyword arguments are not allowed",
                      "pass the arguments by position, e.g. round(x, 1)")
        for argument in node.args:
            self.visit(argument)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self._check_chain(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if _field_chain(node) is not None:
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
        chain = _field_chain(node)
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
                          f"call it, e.g. {root}(message.text)")
            self.fail(node, f"unknown name '{root}' for this trigger",
                      did_you_mean(root, self.roots) or
                      f"this trigger provides: {', '.join(sorted(self.roots))}")
        spec: Spec = self.roots[root]
        walked = root
        for part in fields:
            if spec is FREE:
                return
            if spec is LEAF:
                self.fail(node, f"'{walked}' is a value and has no field '{part}'",
                          f"use {walked} itself, or a function such as len({walked})")
            assert isinstance(spec, Mapping)
            if part not in spec:
                known = [f"{walked}.{name}" for name in spec]
                self.fail(node, f"unknown field '{walked}.{part}' for this trigger",
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


@dataclass(frozen=True, slots=True)
class CompiledExpression:
    """A parsed, checked expression; ``evaluate`` is cheap and thread-safe."""

    source: str
    tree: ast.expr

    def constant_value(self, *, now: datetime) -> Any:
        """The value when the expression reads no field (e.g. ``1 > 2``); raises
        ExpressionRuntimeError when it does, or when evaluating it fails."""
        if any(isinstance(node, ast.Name) for node in ast.walk(self.tree)):
            raise ExpressionRuntimeError("the expression reads the event context")
        return self.evaluate({}, now=now)

    def evaluate(self, context: Mapping[str, Any], *, now: datetime) -> Any:
        """The expression's value over ``context``; raises ExpressionRuntimeError on failure."""
        sandbox = _sandbox()
        sandbox.names = context
        sandbox.now = now
        try:
            return sandbox.eval(self.source, previously_parsed=self.tree)
        except ExpressionRuntimeError:
            raise
        except Exception as error:  # any failure of the user's expression counts as false
            raise ExpressionRuntimeError(f"{type(error).__name__}: {error}") from error


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
        raise ExpressionError(
            f"syntax error: {error.msg}", column=error.offset,
            hint="conditions are Python-like expressions, e.g. message.text == 'hi'",
        ) from None
    if sum(1 for _ in ast.walk(module)) > MAX_NODES:
        raise ExpressionError(f"expression has more than {MAX_NODES} parts", hint="split it")
    module = _YamlConstants().visit(module)
    _Checker(roots).visit(module)
    return CompiledExpression(source=stripped, tree=module.body)
