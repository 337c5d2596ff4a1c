"""Checked expression trees compiled into Python functions, once, at load time.

The tree has passed the sandbox's checker (``expressions._Checker``): only constants,
fields of the context, whitelisted functions, the operators and container literals. Each
node becomes Python source in which every operation that could build something large or
slow goes through the sandbox's bounded helpers (the same functions simpleeval is given),
and everything else is Python's own operator; names and fields become subscripts of the
context's mappings (reading a field of anything else fails, as in the sandbox). The
source is compiled with no builtins, against a namespace that holds only those helpers,
the functions and the constants, so it can reach nothing else.

The step budget holds by construction (a tree has at most ``MAX_NODES`` nodes and no
loops), and a tree nested at most ``MAX_NESTING`` levels deep becomes source nested at most
twice as deep, well within Python's parser. The time budget is a work budget, charged by
the helpers (the only steps that can take long): each call costs the size of the texts and
containers it takes and makes, and an evaluation may spend at most ``max_work`` units. It
is exact and deterministic, so a busy machine never makes a condition fail. simpleeval
(``expressions._Sandbox``) stays the reference: a differential test checks that both give
the same value or both refuse.
"""
from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

_SIZED = frozenset({str, bytes, list, tuple, dict, set, frozenset})

# Operators that cannot build anything large: Python's own, inline.
_INLINE_COMPARE = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">",
                   ast.GtE: ">=", ast.In: "in", ast.NotIn: "not in", ast.Is: "is",
                   ast.IsNot: "is not"}
_INLINE_BINARY = {ast.Div: "/", ast.FloorDiv: "//", ast.RShift: ">>", ast.BitAnd: "&"}


def _charged(function: Callable[..., Any], error: type[Exception], max_work: int,
             arity: int) -> Callable[..., Any]:
    """``function`` taking the evaluation's budget first, charged what it takes and makes."""
    refusal = f"over the work budget of {max_work:,} characters and items"

    def size(value: Any) -> int:
        return len(value) if value.__class__ in _SIZED else 0

    def settle(budget: list[int], cost: int, result: Any) -> Any:
        budget[0] += cost + size(result)
        if budget[0] > max_work:
            raise error(refusal)
        return result

    def one(budget: list[int], first: Any) -> Any:
        return settle(budget, 1 + size(first), function(first))

    def two(budget: list[int], first: Any, second: Any) -> Any:
        return settle(budget, 1 + size(first) + size(second), function(first, second))

    def any_number(budget: list[int], *arguments: Any) -> Any:
        return settle(budget, 1 + sum(map(size, arguments)), function(*arguments))

    by_arity: dict[int, Callable[..., Any]] = {1: one, 2: two}
    return by_arity.get(arity, any_number)


class _Emitter:
    """Turns one checked tree into Python source plus the namespace it runs in."""

    def __init__(self, operators: Mapping[type, Callable[..., Any]],
                 functions: Mapping[str, Callable[..., Any]], error: type[Exception],
                 max_work: int) -> None:
        self.operators = operators
        self.functions = functions
        self.error = error
        self.max_work = max_work
        self.namespace: dict[str, Any] = {"__builtins__": {}}
        self.locals = 0  # names of the lambda's own temporaries

    def charged(self, function: Callable[..., Any], arity: int) -> str:
        return self.bind("f", _charged(function, self.error, self.max_work, arity))

    def bind(self, prefix: str, value: Any) -> str:
        name = f"_{prefix}{len(self.namespace)}"
        self.namespace[name] = value
        return name

    def operator(self, op: ast.AST, arity: int) -> str:
        return self.charged(self.operators[type(op)], arity)

    def emit(self, node: ast.AST) -> str:
        method: Callable[[ast.AST], str] | None = getattr(self, f"emit_{type(node).__name__}", None)
        if method is None:
            raise self.error(f"'{type(node).__name__}' cannot be compiled")
        return method(node)

    def emit_Constant(self, node: ast.Constant) -> str:
        if node.value is None or isinstance(node.value, bool):
            return repr(node.value)
        return self.bind("k", node.value)

    def emit_Name(self, node: ast.Name) -> str:
        return f"ctx[{node.id!r}]"

    def emit_Attribute(self, node: ast.Attribute) -> str:
        # A dict's field is read at once (a missing one raises KeyError, reported as "no
        # field"); anything else goes through _field, which reads mappings only.
        self.locals += 1
        value = f"_v{self.locals}"
        return (f"({value}[{node.attr!r}] if ({value} := {self.emit(node.value)}).__class__ "
                f"is _dict else _field({value}, {node.attr!r}))")

    def emit_Subscript(self, node: ast.Subscript) -> str:
        return f"({self.emit(node.value)})[{self.emit(node.slice)}]"

    def emit_Slice(self, node: ast.Slice) -> str:
        parts = [self.emit(part) if part is not None else "None"
                 for part in (node.lower, node.upper, node.step)]
        return f"_slice({', '.join(parts)})"

    def emit_BoolOp(self, node: ast.BoolOp) -> str:
        joiner = " and " if isinstance(node.op, ast.And) else " or "
        return "(" + joiner.join(f"({self.emit(value)})" for value in node.values) + ")"

    def emit_UnaryOp(self, node: ast.UnaryOp) -> str:
        if isinstance(node.op, ast.Not):
            return f"(not ({self.emit(node.operand)}))"
        return f"{self.operator(node.op, 1)}(budget, {self.emit(node.operand)})"

    def emit_BinOp(self, node: ast.BinOp) -> str:
        left, right = self.emit(node.left), self.emit(node.right)
        if type(node.op) in _INLINE_BINARY:
            return f"(({left}) {_INLINE_BINARY[type(node.op)]} ({right}))"
        return f"{self.operator(node.op, 2)}(budget, {left}, {right})"

    def emit_Compare(self, node: ast.Compare) -> str:
        if not all(type(op) in _INLINE_COMPARE for op in node.ops):
            raise self.error("an unknown comparison")
        parts = [f"({self.emit(node.left)})"]
        for op, comparator in zip(node.ops, node.comparators):
            parts += [_INLINE_COMPARE[type(op)], f"({self.emit(comparator)})"]
        return "(" + " ".join(parts) + ")"

    def emit_IfExp(self, node: ast.IfExp) -> str:
        return (f"(({self.emit(node.body)}) if ({self.emit(node.test)}) "
                f"else ({self.emit(node.orelse)}))")

    def emit_Call(self, node: ast.Call) -> str:
        assert isinstance(node.func, ast.Name)  # the checker allows nothing else
        name = node.func.id
        arguments = [self.emit(argument) for argument in node.args]
        if name in ("minutes_since", "hours_since", "days_since"):
            return f"{self.bind('f', self.functions[name])}({', '.join([*arguments, 'now'])})"
        if name == "in_business_hours":
            return f"{self.bind('f', self.functions[name])}({', '.join([*arguments, 'ctx', 'now'])})"
        function = self.charged(self.functions[name], len(arguments))
        return f"{function}(budget, {', '.join(arguments)})"

    def emit_List(self, node: ast.List) -> str:
        return f"_size(budget, [{', '.join(self.emit(e) for e in node.elts)}])"

    def emit_Tuple(self, node: ast.Tuple) -> str:
        items = ", ".join(self.emit(e) for e in node.elts)
        return f"_size(budget, ({items}{',' if len(node.elts) == 1 else ''}))"

    def emit_Set(self, node: ast.Set) -> str:
        return f"_size(budget, {{{', '.join(self.emit(e) for e in node.elts)}}})"

    def emit_Dict(self, node: ast.Dict) -> str:
        pairs = ", ".join(f"{self.emit(k)}: {self.emit(v)}" for k, v in zip(node.keys, node.values)
                          if k is not None)
        return f"_size(budget, {{{pairs}}})"


def compile_tree(tree: ast.expr, *, operators: Mapping[type, Callable[..., Any]],
                 functions: Mapping[str, Callable[..., Any]], check_size: Callable[[Any], Any],
                 error: type[Exception], max_work: int
                 ) -> Callable[[Mapping[str, Any], datetime, list[int]], Any]:
    """The function ``(context, now, budget) -> value`` for a checked tree; ``budget`` is a
    one-item list holding the work spent so far (``[0]`` for a new evaluation)."""
    emitter = _Emitter(operators, functions, error, max_work)
    emitter.namespace.update({
        "_size": _charged(check_size, error, max_work, 1),
        "_slice": slice,
        "_dict": dict,
        "_field": _field_reader(error),
    })
    source = f"lambda ctx, now, budget: {emitter.emit(tree)}"
    function: Callable[[Mapping[str, Any], datetime, list[int]], Any] = eval(  # noqa: S307
        compile(source, "<rule expression>", "eval"), emitter.namespace)
    return function


def _field_reader(error: type[Exception]) -> Callable[[Any, str], Any]:
    """Reads a field of a mapping, and of nothing else (never a Python attribute)."""
    def field(value: Any, name: str) -> Any:
        if isinstance(value, Mapping):
            try:
                return value[name]
            except KeyError:
                raise error(f"no field '{name}'") from None
        raise error(f"cannot read '.{name}' of a {type(value).__name__} value")
    return field
