"""Hypothesis strategies that write sandbox expressions: atoms joined by operators and
function calls, nested (shared by the sandbox's and the compiler's property tests)."""
from __future__ import annotations

from hypothesis import strategies as st

# Each adds exactly one level of nesting around the expression put in its ``{}``.
WRAPPERS = ["-{}", "~{}", "(not {})", "abs({})", "str({})", "max({}, 0)", "[{}]", "({},)",
            "{{'k': {}}}", "({} + 1)", "(1 < {})", "({} or 0)", "({} if 1 else 0)", "({})[0]",
            "({})[:]", "({} % 2)"]


def expressions(atoms: list[str], operators: list[str], functions: list[str],
                depth: int) -> st.SearchStrategy[str]:
    """Expressions up to ``depth`` levels deep over ``atoms``."""
    if depth == 0:
        return st.sampled_from(atoms)
    smaller = expressions(atoms, operators, functions, depth - 1)
    return st.one_of(
        smaller,
        st.tuples(smaller, st.sampled_from(operators), smaller)
        .map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(st.sampled_from(functions), smaller).map(lambda t: f"{t[0]}({t[1]})"),
        st.tuples(smaller, smaller).map(lambda t: f"round({t[0]}, {t[1]})"),
        st.tuples(smaller, smaller).map(lambda t: f"contains({t[0]}, {t[1]})"),
        st.tuples(smaller, smaller, smaller).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})"),
        smaller.map(lambda e: f"(not {e})"), smaller.map(lambda e: f"(-{e})"),
        st.lists(smaller, min_size=1, max_size=4).map(lambda xs: f"[{', '.join(xs)}]"),
    )


def nested(atoms: list[str], levels: st.SearchStrategy[int]) -> st.SearchStrategy[tuple[str, int]]:
    """(expression, its nesting depth): an atom (a constant or a name: one level) inside as
    many ``WRAPPERS`` as ``levels`` draws, mixed."""
    def wrap(atom: str, wrappers: list[str]) -> tuple[str, int]:
        for wrapper in wrappers:
            atom = wrapper.format(atom)
        return atom, len(wrappers) + 1

    return st.tuples(st.sampled_from(atoms), levels.flatmap(
        lambda n: st.lists(st.sampled_from(WRAPPERS), min_size=n, max_size=n))).map(
        lambda t: wrap(*t))


def format_templates(*, max_size: int = 16) -> st.SearchStrategy[str]:
    """``%`` templates: conversions with keys (nested ones too), flags, widths, precisions and
    ``*``, mixed with text."""
    pieces = st.sampled_from(["%", "(", ")", "(a)", "*", ".", "-", "0", " ", "#", "1", "2", "9",
                              "200", "201", "d", "s", "r", "a", "f", "x", "l", "%%", "x-"])
    return st.lists(pieces, max_size=max_size).map("".join)
