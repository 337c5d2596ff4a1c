"""The layers hold: no import circle anywhere (TYPE_CHECKING imports counted), the package's
public names all resolve, and the domain loads without the store (see also test_domain)."""
from __future__ import annotations

import grimp

import rules_engine


def circles(graph: grimp.ImportGraph, package: str) -> list[list[str]]:
    """The groups of ``package``'s modules that import one another in a circle (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if not imported.startswith(package):
                continue
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while (member := stack.pop()) != module:
                group.append(member)
            if group:
                found.append(sorted([module, *group]))

    for module in sorted(m for m in graph.modules if m.startswith(package)):
        if module not in index:
            visit(module)
    return found


def test_no_module_imports_itself_through_others():
    graph = grimp.build_graph("rules_engine", "connectors")  # TYPE_CHECKING imports too
    assert circles(graph, "rules_engine") == []
    assert circles(graph, "connectors") == []


def test_a_circle_would_be_found():
    graph = grimp.ImportGraph()
    for module in ("pkg.a", "pkg.b", "pkg.c"):
        graph.add_module(module)
    graph.add_import(importer="pkg.a", imported="pkg.b")
    graph.add_import(importer="pkg.b", imported="pkg.c")
    graph.add_import(importer="pkg.c", imported="pkg.a")
    assert circles(graph, "pkg") == [["pkg.a", "pkg.b", "pkg.c"]]


def test_every_public_name_resolves():
    assert sorted(rules_engine.__all__) == sorted(rules_engine._HOME)
    for name in rules_engine.__all__:
        assert getattr(rules_engine, name).__name__ == name
