"""Hot-path statements compiled once per dialect and run on the driver's own cursor.

SQLAlchemy builds the SQL text and the type conversions once (``Prepared``); a call then
costs what the driver costs, without SQLAlchemy's per-execution machinery (about 20 us a
statement, more than SQLite takes to run most of them). The statement runs inside the
connection's current transaction; driver errors are raised as SQLAlchemy's own
exceptions, so callers handle them exactly as they do for ``Connection.execute``.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError

Processor = Callable[[Any], Any] | None


def _columns(statement: Any) -> Sequence[Any]:
    """The columns a statement returns (selected or RETURNING), in order."""
    if hasattr(statement, "selected_columns"):
        return list(statement.selected_columns)
    return list(statement.exported_columns)  # DML: its RETURNING columns (none without)


def execute_on_driver(connection: Connection, sql: str) -> None:
    """Run a statement without parameters (BEGIN, SAVEPOINT ...) on the driver, in the
    connection's current transaction; its errors raised as SQLAlchemy's, like a
    ``Prepared`` statement's."""
    dbapi_error = connection.dialect.loaded_dbapi.Error
    try:
        connection.connection.driver_connection.execute(sql)  # type: ignore[union-attr]
    except dbapi_error as error:
        raise DBAPIError.instance(sql, (), error, dbapi_error,
                                  dialect=connection.dialect) from error


class Prepared:
    """One statement, compiled for ``dialect``: its SQL text, the order of its bound
    parameters, their conversions to the driver, and the conversions of its result."""

    def __init__(self, statement: Any, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = compiled.string
        self._dialect = dialect
        self._positional = bool(dialect.positional)
        names = list(compiled.positiontup or ()) if self._positional else list(compiled.binds)
        binds = compiled.binds
        self._names = names
        self._binds: list[tuple[str, Processor, Any]] = [
            (binds[name].key, binds[name].type.dialect_impl(dialect).bind_processor(dialect),
             None if binds[name].required else binds[name].value)
            for name in names
        ]
        columns = _columns(statement)
        self.keys = [column.name for column in columns]
        self._results: list[Processor] = [
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns]
        self._parameters = self._parameters_function()
        self._row = self._row_function()

    def _parameters_function(self) -> Callable[[Mapping[str, Any]], Any]:
        """The driver's parameters from a mapping of bound values: each value (or its
        default), converted where its type converts, as one generated expression (a
        general loop over the binds costs several times as much)."""
        namespace: dict[str, Any] = {}
        parts = []
        for n, (key, process, default) in enumerate(self._binds):
            namespace[f"d{n}"], namespace[f"p{n}"] = default, process
            value = f"v.get({key!r}, d{n})"
            parts.append(value if process is None else
                         f"(p{n}(x) if (x := {value}) is not None else None)")
        if self._positional:
            body = f"({', '.join(parts)}{',' if parts else ''})"
        else:
            body = "{" + ", ".join(f"{name!r}: {part}" for name, part in zip(self._names, parts)) + "}"
        exec(f"def parameters(v):\n    return {body}\n", namespace)  # noqa: S102 (our own text)
        return namespace["parameters"]

    def _row_function(self) -> Callable[[Sequence[Any]], dict[str, Any]]:
        """A result row as a mapping of column name to value, converted where the column's
        type converts, likewise as one generated expression."""
        keys = self.keys
        if not any(process is not None for process in self._results):
            return lambda raw: dict(zip(keys, raw))
        namespace: dict[str, Any] = {f"p{n}": process for n, process in enumerate(self._results)}
        parts = [f"{key!r}: " + (f"r[{n}]" if process is None else f"p{n}(r[{n}])")
                 for n, (key, process) in enumerate(zip(keys, self._results))]
        exec(f"def row(r):\n    return {{{', '.join(parts)}}}\n", namespace)  # noqa: S102
        return namespace["row"]

    def _cursor(self, connection: Connection, values: Mapping[str, Any]) -> Any:
        parameters = self._parameters(values)
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(self.sql, parameters)
        except self._dialect.loaded_dbapi.Error as error:
            cursor.close()
            raise DBAPIError.instance(self.sql, parameters, error,
                                      self._dialect.loaded_dbapi.Error,
                                      dialect=self._dialect) from error
        return cursor

    def rows(self, connection: Connection, values: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Run it; every row it returns, as a mapping of column name to value."""
        cursor = self._cursor(connection, values)
        try:
            return list(map(self._row, cursor.fetchall())) if self.keys else []
        finally:
            cursor.close()

    def many(self, connection: Connection, values: Sequence[Mapping[str, Any]]) -> None:
        """Run it once per mapping of bound values, in one call to the driver."""
        parameters = [self._parameters(each) for each in values]
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(self.sql, parameters)
        except self._dialect.loaded_dbapi.Error as error:
            raise DBAPIError.instance(self.sql, parameters, error,
                                      self._dialect.loaded_dbapi.Error,
                                      dialect=self._dialect) from error
        finally:
            cursor.close()

    def first(self, connection: Connection, values: Mapping[str, Any]) -> dict[str, Any] | None:
        """Run it; its first row, or None."""
        rows = self.rows(connection, values)
        return rows[0] if rows else None

    def count(self, connection: Connection, values: Mapping[str, Any]) -> int:
        """Run it; the number of rows it changed."""
        cursor = self._cursor(connection, values)
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()
