"""Every inbound body of the peer client libraries' test suites, posted signed to the app.

``../shared/peer-fixtures`` (beside the repository; see its ``SOURCES.md``) holds 247
bodies from pywa, python-telegram-bot, pyTelegramBotAPI, Bottender, the Viber SDKs and
facebook-messenger. They are never copied here: the tests skip when the folder is absent.
What each body means is ``fixtures/peer_meanings.json``, written from each platform's
documentation (its ``docs`` name the pages): the events it becomes and the items it holds
that are acknowledged without one. Each body is posted twice: the first time it is
answered 2xx and means what the table says; the repeat is applied zero times.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from connectors.channels import adapters
from rules_engine import EventType
from rules_engine.domain.model import MESSAGE_STATUS_TYPES

from . import webhook_payloads as p

REPO = Path(__file__).resolve().parents[1]
PEERS = REPO.parent / "shared" / "peer-fixtures"
MEANINGS = json.loads((Path(__file__).parent / "fixtures" / "peer_meanings.json")
                      .read_text("utf-8"))
ADAPTER_OF = {"whatsapp": "whatsapp", "telegram": "telegram", "viber": "viber",
              "messenger": "facebook"}
# Kinds that are never the contact writing: they open no conversation.
NEVER_OPEN = {str(EventType.MESSAGE_REACTION), str(EventType.MESSAGE_DELETED),
              str(EventType.MESSAGE_SENT), str(EventType.CONTACT_UNSUBSCRIBED),
              *map(str, MESSAGE_STATUS_TYPES)}

pytestmark = pytest.mark.skipif(not PEERS.is_dir(), reason="../shared/peer-fixtures is absent")


@pytest.fixture
def app(example_app):
    return example_app


def test_the_table_names_every_body_and_only_those():
    bodies = {f"{folder}/{path.name}" for folder in ADAPTER_OF
              for path in (PEERS / folder).glob("*.json")}
    assert set(MEANINGS["files"]) == bodies and len(bodies) == 247
    cited = {key for meaning in MEANINGS["files"].values() for key in meaning["docs"]}
    assert cited <= set(MEANINGS["docs"])


def _problems(client, folder: str, name: str) -> list[str]:
    """What differs from the table for one body, posted twice."""
    adapter = adapters()[ADAPTER_OF[folder]]
    body = (PEERS / folder / name).read_bytes()
    meaning = MEANINGS["files"][f"{folder}/{name}"]
    config = {s.name: p.SECRETS.get(s.name, s.default) for s in adapter.settings}
    parsed = adapter.parse(body, {}, config=config, received_at=datetime.now(timezone.utc))
    problems = []
    read = ([str(e.type) for e in parsed.events], [s.reason for s in parsed.skipped])
    if read != (meaning["events"], meaning["skipped"]):
        problems.append(f"read as {read}, the table says {meaning['events'], meaning['skipped']}")
    headers = p.signed_headers(adapter.route, body)
    first = client.post(adapter.route, data=body, content_type="application/json", headers=headers)
    again = client.post(adapter.route, data=body, content_type="application/json", headers=headers)
    if first.status_code != 200 or again.status_code != 200:
        return [*problems, f"answered {first.status_code} then {again.status_code}"]
    problems += _first_time(first.json["results"], meaning["events"])
    applied_again = [r["event_id"] for r in again.json["results"] if r["status"] == "applied"]
    if applied_again:
        problems.append(f"the repeat applied {applied_again}")
    return problems


def _first_time(results: list[dict[str, Any]], events: list[str]) -> list[str]:
    """Each event was applied (a status callback about no message of ours changes nothing),
    and none that is not the contact writing opened a conversation."""
    problems = []
    if len(results) != len(events):
        return [f"{len(results)} results for {len(events)} events"]
    for result, kind in zip(results, events):
        wanted = "noop" if kind in map(str, MESSAGE_STATUS_TYPES) else "applied"
        if result["status"] != wanted:
            problems.append(f"{result['event_id']} ({kind}): {result['status']}, not {wanted}")
        opened = [c for c in result["changes"] if c["operation"] == "open_conversation"]
        if kind in NEVER_OPEN and opened:
            problems.append(f"{result['event_id']} ({kind}) opened a conversation")
    return problems


@pytest.mark.parametrize("folder", sorted(ADAPTER_OF))
def test_every_peer_body_means_what_the_platform_documents(app, folder):
    client = app.test_client()
    names = sorted(path.name for path in (PEERS / folder).glob("*.json"))
    problems = {name: found for name in names if (found := _problems(client, folder, name))}
    assert problems == {}
