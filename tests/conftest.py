"""Shared fixtures: a real SQLite store in a temporary file, rule files written on the fly."""
from __future__ import annotations

import itertools
import os
import textwrap
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from rules_engine import Engine, Event, Store, load_rule_set, parse_event
from rules_engine.store.tables import metadata

REPO = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc)
_ids = itertools.count(1)

# Set (by .ci/with-postgres) to run the whole suite against PostgreSQL instead of SQLite.
POSTGRES_URL = os.environ.get("RULES_ENGINE_TEST_DATABASE_URL")


@pytest.fixture(scope="session")
def _postgres_schema() -> None:
    """Migrate the PostgreSQL test database once per run."""
    if POSTGRES_URL:
        Store(POSTGRES_URL, migrate=True).dispose()


@pytest.fixture
def database_url(tmp_path: Path, _postgres_schema: None) -> str:
    """A fresh, empty database per test: a SQLite file, or the emptied PostgreSQL database."""
    if not POSTGRES_URL:
        return f"sqlite:///{tmp_path / 'test.db'}"
    engine = create_engine(POSTGRES_URL)
    names = ", ".join(table.name for table in metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return POSTGRES_URL


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting of the app comes from the machine's environment."""
    from connectors.config import environment

    for variable in environment().values():
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def example_app(clean_environment: None, database_url: str) -> Iterator[Any]:
    """The app with the example rules (``rules/``) and every secret set, as a server on
    ``main`` runs them."""
    from connectors.app import create_app

    from . import webhook_payloads as payloads

    application = create_app({**payloads.SECRETS, "rules_dir": str(REPO / "rules"),
                              "database_url": database_url})
    yield application
    application.extensions["rules_engine"].store.dispose()


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    """A real store (SQLite WAL file, or PostgreSQL), fresh per test."""
    database = Store(database_url, migrate=True)
    yield database
    database.dispose()


@pytest.fixture
def write_rules(tmp_path: Path) -> Callable[..., Path]:
    """Write YAML rule text (dedented) to ``rules/<name>`` and return the rules directory."""
    directory = tmp_path / "rules"
    directory.mkdir()

    def write(text: str, name: str = "rules.yaml") -> Path:
        (directory / name).write_text(textwrap.dedent(text), "utf-8")
        return directory

    return write


@pytest.fixture
def make_engine(store: Store, write_rules: Callable[..., Path]) -> Callable[..., Engine]:
    """An engine over the test store with the given rule YAML (no rules when empty)."""

    def make(rules_yaml: str = "rules: []\n", **options: Any) -> Engine:
        return Engine(store, load_rule_set([write_rules(rules_yaml)]), **options)

    return make


def event(type_: str, *, minutes: float = 0, **fields: Any) -> Event:
    """An event built through the public JSON parser, with a unique id unless given."""
    data: dict[str, Any] = {"id": fields.pop("id", f"evt-{next(_ids)}"), "type": type_,
                            "timestamp": (T0 + timedelta(minutes=minutes)).isoformat()}
    data.update(fields)
    return parse_event(data)


def message(external_id: str, text: str, *, channel: str = "facebook", **fields: Any) -> Event:
    """A message from the contact with this channel identity."""
    return event("message.received", channel=channel, contact={"external_id": external_id},
                 message={"text": text}, **fields)
