"""The domain on its own: the lifecycle and the built-in handlers of inputs, run on the
in-memory store (``tests/domain/memory_store.py``), with no database. The four ways to open and
the four ways to close as the product document states them, and what each refuses.

These tests need no fixture: ``test_the_domain_runs_without_sqlalchemy`` runs them all again
in a fresh interpreter and checks that SQLAlchemy was never imported.
"""
from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rules_engine.domain.inputs import HANDLERS
from rules_engine.domain.lifecycle import Lifecycle
from rules_engine.domain.model import (
    CloseSource,
    ContactRef,
    Event,
    EventType,
    Message,
    OpenSource,
    OutboxStatus,
)

from .memory_store import MemoryStore

AT = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def handle(store: MemoryStore, kind: EventType, contact_id: int, *, at: datetime = AT,
           channel: str | None = "whatsapp", external_id: str | None = "wa-1",
           **fields) -> list:
    """What the built-in handler of ``kind`` does for one event."""
    event = Event(id=f"e-{kind}-{at.timestamp()}", type=kind, channel=channel,
                  contact=ContactRef(external_id=external_id), timestamp=at, **fields)
    lifecycle = Lifecycle(store, event_id=event.id, at=at)
    return HANDLERS[kind](event, contact_id, lifecycle)


def person(store: MemoryStore, external_id: str = "wa-1") -> int:
    return store.add_contact(at=AT, channel="whatsapp", external_id=external_id).id


def test_a_message_opens_a_conversation_once_and_notes_when_the_contact_wrote():
    store = MemoryStore()
    contact = person(store)
    [opened] = handle(store, EventType.MESSAGE_RECEIVED, contact, message=Message(text="hi"))
    [again] = handle(store, EventType.MESSAGE_RECEIVED, contact, at=AT + timedelta(minutes=1),
                     message=Message(text="still me"))
    assert (opened.applied, again.applied) == (True, False)
    [conversation] = store.conversations.values()
    assert conversation.open_source is OpenSource.INCOMING_MESSAGE and conversation.is_open
    assert store.identities[("whatsapp", "wa-1")]["last_inbound_at"] == AT + timedelta(minutes=1)


def test_a_welcome_opens_one_and_a_reply_never_does():
    store = MemoryStore()
    contact = person(store)
    [reply] = handle(store, EventType.MESSAGE_SENT, contact, actor="susan",
                     message=Message(text="hello"))
    assert not reply.applied and store.conversations == {}
    [welcome] = handle(store, EventType.WELCOME, contact)
    assert welcome.applied
    assert [c.open_source for c in store.conversations.values()] == [OpenSource.WELCOME_EVENT]


def test_a_user_opens_and_closes_by_command():
    store = MemoryStore()
    contact = person(store)
    [opened] = handle(store, EventType.OPEN_CONVERSATION, contact, channel="api", actor="susan",
                      params={"channel": "whatsapp", "assignee": "susan"})
    conversation = store.conversations[opened.conversation_id]
    assert (conversation.open_source, conversation.assignee) == (OpenSource.USER, "susan")
    [closed] = handle(store, EventType.CLOSE_CONVERSATION, contact, channel="api",
                      at=AT + timedelta(minutes=5), actor="susan", params={"note": "done"})
    conversation = store.conversations[opened.conversation_id]
    assert closed.applied and conversation.close_source is CloseSource.USER
    assert conversation.closing_note == "done"
    [twice] = handle(store, EventType.CLOSE_CONVERSATION, contact, channel="api", actor="susan")
    assert not twice.applied and twice.detail == "no open conversation"


def test_dialogflow_rb_markdone_closes_and_false_opens():
    store = MemoryStore()
    contact = person(store)
    [opened] = handle(store, EventType.DIALOGFLOW_FULFILLMENT, contact,
                      params={"RB_MARKDONE": "false"}, message=Message(text="hello"))
    assert opened.applied
    [closed] = handle(store, EventType.DIALOGFLOW_FULFILLMENT, contact,
                      at=AT + timedelta(minutes=2), params={"RB_MARKDONE": "yes"},
                      message=Message(text="thanks"))
    [conversation] = store.conversations.values()
    assert closed.applied and conversation.close_source is CloseSource.DIALOGFLOW


def test_a_merge_closes_the_secondarys_open_conversation_and_moves_its_identities():
    store = MemoryStore()
    primary, secondary = person(store, "wa-1"), person(store, "wa-2")
    handle(store, EventType.MESSAGE_RECEIVED, secondary, external_id="wa-2",
           message=Message(text="hi"))
    store.add_tag(secondary, "vip")
    outcomes = handle(store, EventType.MERGE_CONTACTS, primary, channel="api",
                      secondary_contact_id=secondary)
    assert [o.operation for o in outcomes] == ["close_conversation", "merge_contacts"]
    [conversation] = store.conversations.values()
    assert conversation.close_source is CloseSource.CONTACT_MERGE
    assert store.find_contact_by_identity("whatsapp", "wa-2").id == primary
    assert store.contacts[secondary].merged_into == primary and "vip" in store.tags[primary]


def test_an_opt_out_is_noted_and_a_later_message_opts_back_in():
    store = MemoryStore()
    contact = person(store)
    handle(store, EventType.MESSAGE_RECEIVED, contact, message=Message(text="hi"))
    assert handle(store, EventType.CONTACT_UNSUBSCRIBED, contact,
                  at=AT + timedelta(minutes=1)) == []
    identity = store.identities[("whatsapp", "wa-1")]
    assert identity["opted_out_at"] == AT + timedelta(minutes=1)
    handle(store, EventType.MESSAGE_RECEIVED, contact, at=AT + timedelta(minutes=2),
           message=Message(text="back"))
    assert identity["opted_out_at"] is None


def test_a_status_moves_its_rows_on_and_never_back():
    store = MemoryStore()
    contact = person(store)
    row = store.outbound.enqueue(values={"channel": "whatsapp", "recipient": "wa-1"}, at=AT)
    store.outbound.rows[row].update(status=OutboxStatus.SENT, platform_message_id="wamid.1")
    [read] = handle(store, EventType.MESSAGE_READ, contact,
                    params={"outbox_id": row, "outbox_ids": [row]})
    [late] = handle(store, EventType.MESSAGE_DELIVERED, contact,
                    params={"outbox_id": row, "outbox_ids": [row]})
    assert (read.applied, late.applied) == (True, False)
    assert store.outbound.rows[row]["status"] is OutboxStatus.READ


def test_the_domain_runs_without_sqlalchemy():
    """Every test above, in a fresh interpreter, imports neither SQLAlchemy nor the store."""
    script = (
        "import sys\n"
        "import tests.domain.test_domain as domain\n"
        "for name, test in sorted(vars(domain).items()):\n"
        "    if name.startswith('test_') and name != 'test_the_domain_runs_without_sqlalchemy':\n"
        "        test()\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'sqlalchemy'\n"
        "                or m.startswith('rules_engine.store'))\n"
        "assert not loaded, loaded\n"
        "print('ran without', 'sqlalchemy')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2], timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ran without sqlalchemy"
