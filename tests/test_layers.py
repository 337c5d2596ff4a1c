"""The layers hold: no import circle anywhere (TYPE_CHECKING imports counted), the package's
public names all resolve, and the domain loads without the store (see also test_domain)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

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


def test_the_contracts_fail_on_a_deliberate_violation(tmp_path):
    """`lint-imports`, as .ci/run runs it, on a copy of the code where the domain imports the
    store and SQLAlchemy, and the store imports the engine: three contracts broken, exit 1."""
    root = Path(__file__).resolve().parents[1]
    for package in ("rules_engine", "connectors"):
        shutil.copytree(root / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(root / "pyproject.toml", tmp_path)
    lifecycle = tmp_path / "rules_engine" / "domain" / "lifecycle.py"
    lifecycle.write_text(lifecycle.read_text() + "\nimport sqlalchemy\nimport rules_engine.store\n")
    tables = tmp_path / "rules_engine" / "store" / "tables.py"
    tables.write_text(tables.read_text() + "\nimport rules_engine.engine\n")
    lint = Path(sys.executable).with_name("lint-imports")
    found = subprocess.run([str(lint), "--no-cache"], cwd=tmp_path, capture_output=True,
                           text=True, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert found.returncode == 1, found.stdout
    broken = [line for line in found.stdout.splitlines() if line.endswith("BROKEN")]
    assert len(broken) == 2, found.stdout  # the layers (both) and SQLAlchemy in the domain
    assert "rules_engine.domain.lifecycle -> rules_engine.store" in found.stdout
    assert "rules_engine.store.tables -> rules_engine.engine" in found.stdout
    assert "rules_engine.domain.lifecycle -> sqlalchemy" in found.stdout
    clean = subprocess.run([str(lint), "--no-cache"], cwd=root, capture_output=True, text=True)
    assert clean.returncode == 0, clean.stdout
