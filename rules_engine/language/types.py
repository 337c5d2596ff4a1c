"""The types of expression values, checked when rules load.

Every field a trigger provides has a type (``context``), and every function a signature
(``SIGNATURES``). ``check_types`` infers the type of each part of an expression and refuses
what can only fail at run time (whenever that part runs): a call with the wrong number of arguments, an argument of a
kind the function never takes, an operator between kinds it never joins. What evaluates but
can never be true (a text compared with a boolean, a status compared with a value it never
has) is a warning. A type is a set of kinds: a value of a field may be text or null, say,
and a check fails only when no combination of the kinds could work.
"""
from __future__ import annotations

import ast
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from rules_engine.domain.errors import ExpressionError, did_you_mean


class Kind(StrEnum):
    TEXT = "text"
    NUMBER = "number"
    BOOL = "boolean"
    NULL = "null"
    LIST = "list"
    MAP = "object"


@dataclass(frozen=True, slots=True)
class Type:
    """The kinds a value may have; for a text field that takes a fixed set of values,
    those values (``values``); ``note`` explains a trap of the field's source."""

    kinds: frozenset[Kind]
    values: frozenset[str] | None = None
    note: str | None = None

    def __repr__(self) -> str:
        return " | ".join(sorted(self.kinds)) or "nothing"

    def named(self) -> str:
        """The kinds in words, for messages: ``text or null``."""
        return " or ".join(sorted(self.kinds))

    def without_null(self) -> frozenset[Kind]:
        return self.kinds - {Kind.NULL}


def of(*kinds: Kind, values: Iterable[str] | None = None, note: str | None = None) -> Type:
    return Type(frozenset(kinds), frozenset(values) if values is not None else None, note)


ANY = of(*Kind)
TEXT, NUMBER, BOOL, LIST, MAP = of(Kind.TEXT), of(Kind.NUMBER), of(Kind.BOOL), of(Kind.LIST), of(Kind.MAP)
NULLABLE_TEXT = of(Kind.TEXT, Kind.NULL)
TIME = of(Kind.TEXT)  # ISO 8601 text, as the since functions read it
NULLABLE_TIME = NULLABLE_TEXT


def union(types: Iterable[Type]) -> Type:
    types = list(types)
    values = [t.values for t in types if Kind.TEXT in t.kinds]
    known = [v for v in values if v is not None]
    joined = frozenset[str]().union(*known) if values and len(known) == len(values) else None
    return Type(frozenset[Kind]().union(*(t.kinds for t in types)), joined)


# Kinds that Python's operators treat as numbers (True + 1 == 2).
_NUMERIC = frozenset({Kind.NUMBER, Kind.BOOL})


def _numeric(kind: Kind) -> bool:
    return kind in _NUMERIC


# What each binary operator joins: (left kind, right kind) -> result kind, None when the
# pair fails at run time.
def _arithmetic(left: Kind, right: Kind) -> Kind | None:
    return Kind.NUMBER if _numeric(left) and _numeric(right) else None


_BINARY: dict[type, Callable[[Kind, Kind], Kind | None]] = {
    ast.Add: lambda a, b: (Kind.NUMBER if _numeric(a) and _numeric(b) else
                           a if a == b and a in (Kind.TEXT, Kind.LIST) else None),
    ast.Sub: lambda a, b: (Kind.NUMBER if _numeric(a) and _numeric(b) else
                           a if a == b == Kind.LIST else None),  # sets
    ast.Mult: lambda a, b: (Kind.NUMBER if _numeric(a) and _numeric(b) else
                            a if a in (Kind.TEXT, Kind.LIST) and _numeric(b) else
                            b if b in (Kind.TEXT, Kind.LIST) and _numeric(a) else None),
    ast.Div: _arithmetic, ast.FloorDiv: _arithmetic, ast.Pow: _arithmetic,
    ast.LShift: _arithmetic, ast.RShift: _arithmetic,
    ast.Mod: lambda a, b: (Kind.NUMBER if _numeric(a) and _numeric(b) else
                           Kind.TEXT if a == Kind.TEXT else None),
    **dict.fromkeys((ast.BitAnd, ast.BitOr, ast.BitXor), lambda a, b: (
        Kind.BOOL if a == b == Kind.BOOL else  # True | False is a boolean
        Kind.NUMBER if _numeric(a) and _numeric(b) else
        a if a == b and a in (Kind.LIST, Kind.MAP) else None)),
}
_SYMBOLS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//",
            ast.Pow: "**", ast.LShift: "<<", ast.RShift: ">>", ast.Mod: "%", ast.BitAnd: "&",
            ast.BitOr: "|", ast.BitXor: "^", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">",
            ast.GtE: ">="}


def _ordered(left: Kind, right: Kind) -> bool:
    """Whether ``<`` and friends work between the two kinds."""
    return (_numeric(left) and _numeric(right)) or (left == right and left in (Kind.TEXT, Kind.LIST))


def _may_equal(left: Kind, right: Kind) -> bool:
    return left == right or (_numeric(left) and _numeric(right))


@dataclass(frozen=True, slots=True)
class Signature:
    """A function's parameters (each the kinds it takes), how many may be left out, whether
    more of the last may follow, its result, and a working call for hints."""

    params: tuple[Type, ...]
    returns: Type
    example: str
    optional: int = 0
    variadic: bool = False

    def arity(self) -> str:
        least, most = len(self.params) - self.optional, len(self.params)
        if self.variadic:
            return f"at least {least} argument{'s' if least != 1 else ''}"
        if least == most:
            return f"{most} argument{'s' if most != 1 else ''}"
        return f"{least} or {most} arguments"

    def accepts(self, count: int) -> bool:
        least = len(self.params) - self.optional
        return count >= least and (self.variadic or count <= len(self.params))

    def param(self, index: int) -> Type:
        return self.params[min(index, len(self.params) - 1)]


_TEXT_IN = of(Kind.TEXT)
_SCALAR = of(Kind.TEXT, Kind.NUMBER, Kind.BOOL)
SIGNATURES: dict[str, Signature] = {
    "lower": Signature((_TEXT_IN,), TEXT, "lower(message.text)"),
    "upper": Signature((_TEXT_IN,), TEXT, "upper(message.text)"),
    "strip": Signature((_TEXT_IN,), TEXT, "strip(message.text)"),
    "contains": Signature((of(Kind.TEXT, Kind.LIST, Kind.MAP), ANY), BOOL,
                          "contains(message.text, 'refund')"),
    "startswith": Signature((_TEXT_IN, _TEXT_IN), BOOL, "startswith(message.text, 'hi')"),
    "endswith": Signature((_TEXT_IN, _TEXT_IN), BOOL, "endswith(message.text, '?')"),
    "len": Signature((of(Kind.TEXT, Kind.LIST, Kind.MAP),), NUMBER, "len(message.text)"),
    "int": Signature((_SCALAR,), NUMBER, "int(params.count)", optional=1),
    "float": Signature((_SCALAR,), NUMBER, "float(params.amount)", optional=1),
    "str": Signature((ANY,), TEXT, "str(contact.id)", optional=1),
    "abs": Signature((of(Kind.NUMBER, Kind.BOOL),), NUMBER, "abs(params.delta)"),
    "min": Signature((ANY,), ANY, "min(1, 2)", variadic=True),
    "max": Signature((ANY,), ANY, "max(1, 2)", variadic=True),
    "round": Signature((of(Kind.NUMBER, Kind.BOOL), of(Kind.NUMBER, Kind.BOOL, Kind.NULL)),
                       NUMBER, "round(hours_since(conversation.opened_at), 1)", optional=1),
    "minutes_since": Signature((TIME,), NUMBER, "minutes_since(conversation.opened_at)"),
    "hours_since": Signature((TIME,), NUMBER, "hours_since(conversation.opened_at)"),
    "days_since": Signature((TIME,), NUMBER, "days_since(contact.created_at)"),
    "in_business_hours": Signature((), BOOL, "in_business_hours()"),
    "flag": Signature((ANY,), BOOL, "flag(params.RB_MARKDONE)"),
}


@dataclass
class TypeReport:
    """What ``check_types`` found: the expression's type and its warnings."""

    type: Type
    warnings: list[ExpressionError] = field(default_factory=list)


FieldTypes = Callable[[list[str]], Type]  # a field chain's type (``context`` provides it)


def check_types(tree: ast.expr, source: str, field_type: FieldTypes) -> TypeReport:
    """The type of ``tree`` (parsed from ``source``, its names already checked), with
    warnings for what can never be true; raises ExpressionError for what can only fail."""
    typer = _Typer(source, field_type)
    found = typer.infer(tree)
    return TypeReport(found, typer.warnings)


def chain_of(node: ast.AST) -> list[str] | None:
    """``message.text`` / ``params['x']`` -> ['message', 'text']; None for other shapes."""
    parts: list[str] = []
    while True:
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant)
              and isinstance(node.slice.value, str)):
            parts.append(node.slice.value)
            node = node.value
        elif isinstance(node, ast.Name):
            parts.append(node.id)
            return parts[::-1]
        else:
            return None


def rewrite(source: str, node: ast.AST, text: str) -> str:
    """``source`` with the part ``node`` was parsed from replaced by ``text`` (columns are
    UTF-8 offsets, as ``ast`` gives them)."""
    encoded = source.encode("utf-8")
    start = getattr(node, "col_offset", 0)
    end = getattr(node, "end_col_offset", None) or len(encoded)
    if getattr(node, "lineno", 1) != 1 or getattr(node, "end_lineno", 1) != 1:
        return text  # an expression over several lines: the part alone
    return (encoded[:start] + text.encode("utf-8") + encoded[end:]).decode("utf-8")


def _constant(node: ast.AST) -> Type | None:
    if not isinstance(node, ast.Constant):
        return None
    value = node.value
    if value is None:
        return of(Kind.NULL)
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int | float | complex):
        return NUMBER
    return TEXT


class _Typer:
    def __init__(self, source: str, field_type: FieldTypes) -> None:
        self.source = source
        self.field_type = field_type
        self.warnings: list[ExpressionError] = []

    def text(self, node: ast.AST) -> str:
        """A part of the expression as its author wrote it."""
        return ast.get_source_segment(self.source, node) or ast.unparse(node)

    def rewritten(self, node: ast.AST, text: str) -> str:
        """The whole expression with ``node`` written as ``text``: a fix to copy."""
        return f"`{rewrite(self.source, node, text)}`"

    def fail(self, node: ast.AST, message: str, hint: str) -> ExpressionError:
        return ExpressionError(message, column=getattr(node, "col_offset", 0) + 1, hint=hint)

    def warn(self, node: ast.AST, message: str, hint: str) -> None:
        self.warnings.append(self.fail(node, message, hint))

    def infer(self, node: ast.AST) -> Type:
        chain = chain_of(node)
        if chain is not None:
            return self.field_type(chain)
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            for child in ast.iter_child_nodes(node):
                self.infer(child)
            return ANY
        found: Type = method(node)
        return found

    def _Constant(self, node: ast.Constant) -> Type:
        return _constant(node) or ANY

    def _List(self, node: ast.List | ast.Tuple | ast.Set) -> Type:
        for item in node.elts:
            self.infer(item)
        return LIST

    _Tuple = _List
    _Set = _List

    def _Dict(self, node: ast.Dict) -> Type:
        for part in [*node.keys, *node.values]:
            if part is not None:
                self.infer(part)
        return MAP

    def _BoolOp(self, node: ast.BoolOp) -> Type:
        return union(self.infer(value) for value in node.values)

    def _IfExp(self, node: ast.IfExp) -> Type:
        self.infer(node.test)
        return union([self.infer(node.body), self.infer(node.orelse)])

    def _UnaryOp(self, node: ast.UnaryOp) -> Type:
        operand = self.infer(node.operand)
        if isinstance(node.op, ast.Not):
            return BOOL
        if not any(_numeric(kind) for kind in operand.kinds):
            sign = {ast.USub: "-", ast.UAdd: "+", ast.Invert: "~"}[type(node.op)]
            raise self.fail(node, f"'{sign}' needs a number, and {self.text(node.operand)} "
                                  f"is {operand.named()}",
                            "use its length: "
                            + self.rewritten(node.operand, f"len({self.text(node.operand)})"))
        return NUMBER

    def _Subscript(self, node: ast.Subscript) -> Type:
        value = self.infer(node.value)
        self.infer(node.slice)
        if isinstance(node.slice, ast.Slice):
            return Type(value.without_null() & {Kind.TEXT, Kind.LIST}) if value.kinds != ANY.kinds else ANY
        return ANY

    def _Slice(self, node: ast.Slice) -> Type:
        for part in (node.lower, node.upper, node.step):
            if part is not None:
                self.infer(part)
        return ANY

    def _BinOp(self, node: ast.BinOp) -> Type:
        left, right = self.infer(node.left), self.infer(node.right)
        joins = _BINARY.get(type(node.op))
        if joins is None:
            return ANY
        results = {joins(a, b) for a in left.kinds for b in right.kinds} - {None}
        if not results:
            symbol = _SYMBOLS[type(node.op)]
            raise self.fail(node, f"'{symbol}' cannot join {left.named()} "
                                  f"({self.text(node.left)}) and {right.named()} "
                                  f"({self.text(node.right)}): it fails whenever it runs",
                            self._convert_hint(node, left, right))
        return Type(frozenset(kind for kind in results if kind is not None))

    def _Compare(self, node: ast.Compare) -> Type:
        left_node: ast.expr = node.left
        left = self.infer(left_node)
        for operator, right_node in zip(node.ops, node.comparators):
            right = self.infer(right_node)
            self._compare(node, operator, left_node, left, right_node, right)
            left_node, left = right_node, right
        return BOOL

    def _compare(self, node: ast.Compare, operator: ast.cmpop, left_node: ast.expr, left: Type,
                 right_node: ast.expr, right: Type) -> None:
        text = f"{self.text(left_node)} {_cmp_symbol(operator)} {self.text(right_node)}"
        if type(operator) in _SYMBOLS:
            if not any(_ordered(a, b) for a in left.kinds for b in right.kinds):
                raise self.fail(node, f"'{text}' compares {left.named()} with {right.named()}: "
                                      "it fails whenever it runs", self._convert_hint(node, left, right))
        elif isinstance(operator, ast.Eq | ast.NotEq):
            self._equality(node, isinstance(operator, ast.NotEq), text, left_node, left,
                           right_node, right)
        elif isinstance(operator, ast.In | ast.NotIn):
            self._membership(node, text, left_node, left, right_node, right)

    def _equality(self, node: ast.AST, negated: bool, text: str, left_node: ast.expr,
                  left: Type, right_node: ast.expr, right: Type) -> None:
        for field_node, field_type, other_node in ((left_node, left, right_node),
                                                   (right_node, right, left_node)):
            if not isinstance(other_node, ast.Constant):
                continue
            value = other_node.value
            if field_type.note and isinstance(value, bool):
                yes = "not " if negated == value else ""
                self.warn(node, f"'{text}' is false when the value arrives as text: "
                                f"{field_type.note}",
                          f"write {self.rewritten(node, f'{yes}flag({self.text(field_node)})')}"
                          ", which reads true, 'true', 'yes', '1' and 'on' alike")
                return
            if field_type.values is not None and isinstance(value, str):
                self._known_value(node, field_node, field_type, value)
                return
        if not any(_may_equal(a, b) for a in left.kinds for b in right.kinds):
            self.warn(node, f"'{text}' is never true: {left.named()} never equals "
                            f"{right.named()}", self._equality_hint(left_node, left, right_node))

    def _known_value(self, node: ast.AST, field_node: ast.expr, field_type: Type,
                     value: str) -> None:
        assert field_type.values is not None
        if value in field_type.values:
            return
        name = self.text(field_node)
        known = sorted(field_type.values)
        self.warn(node, f"{name} is never '{value}': it is one of {', '.join(known)}",
                  did_you_mean(value, known) or f"compare with one of: {', '.join(known)}")

    def _membership(self, node: ast.AST, text: str, left_node: ast.expr, left: Type,
                    right_node: ast.expr, right: Type) -> None:
        if not right.kinds & {Kind.TEXT, Kind.LIST, Kind.MAP}:
            raise self.fail(node, f"'{text}': {self.text(right_node)} is {right.named()}, "
                                  "which holds nothing: it fails whenever it runs",
                            "test membership in a text or a list, e.g. `'vip' in contact.tags`")
        if right.kinds <= {Kind.TEXT, Kind.NULL} and Kind.TEXT not in left.kinds:
            raise self.fail(node, f"'{text}' looks for {left.named()} in a text: it fails "
                                  "whenever it runs",
                            "look for a text: "
                            + self.rewritten(left_node, f"str({self.text(left_node)})"))
        if left.values is not None and isinstance(right_node, ast.List | ast.Tuple | ast.Set):
            for item in right_node.elts:
                if isinstance(item, ast.Constant) and isinstance(item.value, str):
                    self._known_value(node, left_node, left, item.value)

    def _Call(self, node: ast.Call) -> Type:
        assert isinstance(node.func, ast.Name)  # method calls are refused before
        signature = SIGNATURES[node.func.id]
        arguments = [self.infer(argument) for argument in node.args]
        name = node.func.id
        if not signature.accepts(len(arguments)):
            raise self.fail(node, f"{name}() takes {signature.arity()}, not {len(arguments)}",
                            f"e.g. `{signature.example}`")
        for index, (argument, given) in enumerate(zip(node.args, arguments)):
            wanted = signature.param(index)
            if not given.kinds & wanted.kinds:
                raise self.fail(argument, f"{name}() takes {wanted.named()}, and "
                                          f"{self.text(argument)} is {given.named()}: it "
                                          "fails whenever it runs",
                                f"e.g. `{signature.example}`")
        if name == "contains" and arguments and arguments[0].kinds <= {Kind.TEXT, Kind.NULL} \
                and len(arguments) > 1 and Kind.TEXT not in arguments[1].kinds:
            raise self.fail(node.args[1], f"contains() on a text looks for a text, and "
                                          f"{self.text(node.args[1])} is "
                                          f"{arguments[1].named()}",
                            "look for a text: "
                            + self.rewritten(node.args[1], f"str({self.text(node.args[1])})"))
        if name in ("min", "max") and len(arguments) > 1:
            return union(arguments)
        return signature.returns

    def _equality_hint(self, left_node: ast.expr, left: Type, right_node: ast.expr) -> str:
        """A boolean literal compared with a text: the text it is written as."""
        if isinstance(right_node, ast.Constant) and isinstance(right_node.value, bool) \
                and Kind.TEXT in left.kinds:
            return "compare with the text: " + self.rewritten(
                right_node, f"'{str(right_node.value).lower()}'")
        return "compare values of one kind (str() makes text, int() a number)"

    def _convert_hint(self, node: ast.AST, left: Type, right: Type) -> str:
        """How to make both sides one kind: the number as text for ``+``; otherwise the text's
        length (or, when it holds digits, its number)."""
        if isinstance(node, ast.BinOp):
            sides = [(node.left, left), (node.right, right)]
        elif isinstance(node, ast.Compare):
            sides = [(node.left, left), (node.comparators[0], right)]
        else:
            sides = []
        texts = [side for side, kinds in sides if Kind.TEXT in kinds.kinds]
        numbers = [side for side, kinds in sides if kinds.kinds & _NUMERIC]
        if texts and numbers and texts[0] is not numbers[0] \
                and isinstance(node, ast.BinOp | ast.Compare):
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
                return "write the number as text: " + self.rewritten(
                    numbers[0], f"str({self.text(numbers[0])})")
            return ("use the text's length: "
                    + self.rewritten(texts[0], f"len({self.text(texts[0])})")
                    + ", or int() when it holds digits")
        return "make both sides one kind (str() for text, int() for numbers, len() for a length)"


def _cmp_symbol(operator: ast.cmpop) -> str:
    return {ast.Eq: "==", ast.NotEq: "!=", ast.In: "in", ast.NotIn: "not in", ast.Is: "is",
            ast.IsNot: "is not"}.get(type(operator)) or _SYMBOLS[type(operator)]
