"""YAML loading that remembers where every value came from (line and column)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from rules_engine.domain.errors import RuleFileError

# keys and indexes from the document's root; YAML allows a number (even a float) as a key
Path = tuple[str | int | float, ...]


@dataclass(frozen=True, slots=True)
class Position:
    """A 1-based line and column in a file."""

    line: int
    column: int


@dataclass
class SourceMap:
    """Where each value (by its path in the document) and each mapping key starts."""

    values: dict[Path, Position] = field(default_factory=dict)
    keys: dict[Path, Position] = field(default_factory=dict)

    def value_at(self, path: Path) -> Position | None:
        """The position of the value at ``path``, or of its nearest known ancestor."""
        for length in range(len(path), -1, -1):
            found = self.values.get(path[:length])
            if found is not None:
                return found
        return None

    def key_at(self, path: Path) -> Position | None:
        """The position of the key that names ``path`` (falls back to the value)."""
        return self.keys.get(path) or self.value_at(path)


# libyaml's parser where PyYAML was built with it (the wheels are): the same nodes, marks
# and errors, several times faster than the pure-Python one.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _position(node: yaml.Node) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)


def _construct(
    loader: yaml.SafeLoader, node: yaml.Node, path: Path, source_map: SourceMap, file: str
) -> Any:
    source_map.values[path] = _position(node)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(loader, key_node, file)
            if not isinstance(key, (str, int, bool, float)) or key is None:
                where = _position(key_node)
                raise RuleFileError("mapping keys must be plain values", file=file,
                                    line=where.line, column=where.column,
                                    hint="write the key as plain text, quoted if need be")
            if key in result:
                where = _position(key_node)
                raise RuleFileError(f"duplicate key '{key}'", file=file, line=where.line,
                                    column=where.column, hint="each key may appear once per mapping")
            source_map.keys[path + (key,)] = _position(key_node)
            result[key] = _construct(loader, value_node, path + (key,), source_map, file)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [
            _construct(loader, item, path + (index,), source_map, file)
            for index, item in enumerate(node.value)
        ]
    return _scalar(loader, node, file)


def _scalar(loader: yaml.SafeLoader, node: yaml.Node, file: str) -> Any:
    """A key or a scalar value; one YAML reads as a value it cannot hold (``2026-02-30``)
    is a RuleFileError at its place."""
    try:
        return loader.construct_object(node, deep=True)
    except ValueError as error:
        where = _position(node)
        raise RuleFileError(f"'{node.value}' is not a valid value: {error}", file=file,
                            line=where.line, column=where.column,
                            hint="quote it to keep it as text, or fix it") from None


_CLOSERS = {"flow sequence": ("[", "]"), "flow mapping": ("{", "}")}


def _syntax_error(error: yaml.MarkedYAMLError, file: str) -> RuleFileError:
    """A syntax error where a person would fix it: an unclosed ``[`` or ``{`` where it was
    opened (the parser only notices at the next line), a tab as what it is."""
    problem = error.problem or error.context or "unreadable YAML"
    mark = error.problem_mark or error.context_mark
    hint = "check indentation, quotes and colons around this line"
    opened = next((pair for name, pair in _CLOSERS.items() if name in (error.context or "")), None)
    if "'\\t'" in problem or "\t" in problem:
        problem, hint = "a tab character", "indent with spaces, not tabs"
    elif opened and error.context_mark is not None:
        mark = error.context_mark
        problem = f"this '{opened[0]}' is never closed ({problem} on line {error.problem_mark.line + 1})" \
            if error.problem_mark else f"this '{opened[0]}' is never closed"
        hint = f"close it with '{opened[1]}', or write it as an indented block instead"
    return RuleFileError(f"YAML syntax error: {problem}", file=file,
                         line=mark.line + 1 if mark else None,
                         column=mark.column + 1 if mark else None, hint=hint)


def load_yaml(text: str, file: str) -> tuple[Any, SourceMap]:
    """Parse one YAML document; returns its data and where each part of it starts.

    Raises RuleFileError with the file, line and column of a syntax error.
    """
    source_map = SourceMap()
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, source_map
        return _construct(loader, node, (), source_map, file), source_map
    except yaml.MarkedYAMLError as error:
        raise _syntax_error(error, file) from None
    except yaml.YAMLError as error:
        raise RuleFileError(f"YAML error: {error}", file=file,
                            hint="check that the file is one YAML document") from None
    finally:
        loader.dispose()
