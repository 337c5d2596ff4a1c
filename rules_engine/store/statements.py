"""What every part of a unit of work shares: its connection, and the hot path's statements
compiled once per dialect (``Prepared``), with the INSERT shapes the store uses."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Table, bindparam
from sqlalchemy.dialects import postgresql, sqlite

from rules_engine.store.prepared import Prepared

_PREPARED: dict[tuple[str, str], Prepared] = {}  # (dialect, name) -> statement


class Statements:
    """Reads and writes on one transaction's connection."""

    def __init__(self, connection: Connection, dialect: str) -> None:
        self.connection = connection
        self._dialect = dialect

    def _prepared(self, name: str, build: Callable[[], Any]) -> Prepared:
        """A statement of the hot path, compiled once per dialect (its values are bound
        parameters), so that a call costs only its execution on the driver."""
        key = (self._dialect, name)
        statement = _PREPARED.get(key)
        if statement is None:
            statement = _PREPARED[key] = Prepared(build(), self.connection.dialect)
        return statement

    def _insert(self, table: Table) -> Any:
        """The dialect's INSERT, which knows ON CONFLICT."""
        return (postgresql.insert if self._dialect == "postgresql" else sqlite.insert)(table)

    def _insert_or_nothing(self, table: Table, values: dict[str, Any], *,
                           on: tuple[str, ...]) -> bool:
        """INSERT ... ON CONFLICT (``on``) DO NOTHING; whether the row was inserted."""
        return self._inserted_row(table, values, on=on, whole_row=False) is not None

    def _inserted_row(self, table: Table, values: dict[str, Any], *, on: tuple[str, ...],
                      where: Callable[[], Any] | None = None,
                      whole_row: bool = True) -> dict[str, Any] | None:
        """INSERT ... ON CONFLICT (``on``, for the rows matching ``where``) DO NOTHING
        RETURNING the row (or only its first key column); None when nothing was inserted
        (rowcount is not reliable here on every driver)."""
        def build() -> Any:
            bound = {name: bindparam(f"p_{name}", type_=table.c[name].type) for name in values}
            statement = self._insert(table).values(**bound).on_conflict_do_nothing(
                index_elements=list(on), index_where=where() if where is not None else None)
            return statement.returning(*(table.c if whole_row else [table.c[on[0]]]))

        statement = self._prepared(
            f"insert-or-nothing:{table.name}:{','.join(values)}:{whole_row}", build)
        return statement.first(self.connection, {f"p_{name}": value for name, value in values.items()})

    def _insert_row(self, table: Table, values: dict[str, Any], *returning: str) -> dict[str, Any] | None:
        """INSERT one row (``returning`` those of its columns)."""
        def build() -> Any:
            statement = table.insert().values(
                {name: bindparam(f"p_{name}", type_=table.c[name].type) for name in values})
            return statement.returning(*(table.c[name] for name in returning)) if returning else statement

        statement = self._prepared(f"insert:{table.name}:{','.join(values)}:{','.join(returning)}", build)
        return statement.first(self.connection, {f"p_{name}": value for name, value in values.items()})
