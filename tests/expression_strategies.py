"""Hypothesis strategies that write sandbox expressions: atoms joined by operators and
function calls, nested (shared by the sandbox's and the compiler's property tests)."""
from __future__ import annotations

from hypothesis import strategies as st


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
