"""The conversation lifecycle as the product document states it, on a real SQLite store.

One test per way to open (incoming message, user, automation, welcome event) and per way to
close (user, automation, Dialogflow RB_MARKDONE, contact merge), plus the invariant: at most
one open conversation per contact, under concurrency too.
"""
from __future__ import annotations

import threading

import pytest
from sqlalchemy.exc import IntegrityError

from rules_engine import CloseSource, Engine, NotFoundError, OpenSource, Store
from rules_engine.store import tables

from .conftest import T0, event, message


def conversations(store: Store, contact_id: int) -> list:
    with store.read() as tx:
        return tx.conversations_of(contact_id)


def open_ones(store: Store, contact_id: int) -> list:
    return [c for c in conversations(store, contact_id) if c.is_open]


# -- the four ways to open ----------------------------------------------------------------


def test_open_by_incoming_message_from_a_new_contact(make_engine, store):
    engine = make_engine()
    result = engine.process(message("psid-1", "hello"))
    [conversation] = conversations(store, result.contact_id)
    assert conversation.is_open
    assert conversation.open_source is OpenSource.INCOMING_MESSAGE
    assert conversation.channel == "facebook"
    assert conversation.opened_at == T0
    assert any(c["operation"] == "create_contact" for c in result.changes)


def test_incoming_message_opens_only_when_none_is_open(make_engine, store):
    engine = make_engine()
    first = engine.process(message("psid-1", "hello"))
    second = engine.process(message("psid-1", "are you there?", minutes=1))
    assert len(conversations(store, first.contact_id)) == 1
    [builtin] = second.trace["steps"][0]["builtin"]
    assert builtin["outcome"] == "noop" and "already open" in builtin["detail"]


def test_open_by_user(make_engine, store):
    engine = make_engine()
    contact_id = engine.process(message("psid-1", "hi")).contact_id
    engine.process(event("conversation.close", contact={"id": contact_id}, actor="maria", minutes=1))
    engine.process(event("conversation.open", contact={"id": contact_id}, actor="maria", minutes=2,
                         params={"assignee": "maria", "team": "support"}))
    latest = open_ones(store, contact_id)[0]
    assert latest.open_source is OpenSource.USER
    assert latest.opened_by == "maria"
    assert (latest.assignee, latest.team) == ("maria", "support")


def test_open_by_automation(make_engine, store):
    engine = make_engine("""
        rules:
          - id: reopen-on-escalation
            trigger: {event: contact.tag_added}
            conditions: ["params.tag == 'escalated'"]
            actions:
              - open_conversation: {team: tier2}
          - id: tag-from-dialogflow
            trigger: {event: dialogflow.fulfillment}
            actions:
              - add_tag: {tag: escalated}
    """)
    contact_id = engine.process(message("psid-1", "hi")).contact_id
    engine.process(event("conversation.close", contact={"id": contact_id}, actor="maria", minutes=1))
    engine.process(event("dialogflow.fulfillment", channel="facebook",
                         contact={"external_id": "psid-1"}, minutes=2))
    [latest] = open_ones(store, contact_id)
    assert latest.open_source is OpenSource.AUTOMATION
    assert latest.opened_by == "reopen-on-escalation"
    assert latest.team == "tier2"


@pytest.mark.parametrize("channel", ["facebook", "viber"])
def test_open_by_welcome_event(make_engine, store, channel):
    engine = make_engine()
    result = engine.process(event("welcome", channel=channel, contact={"external_id": "u-1"}))
    [conversation] = conversations(store, result.contact_id)
    assert conversation.open_source is OpenSource.WELCOME_EVENT


def test_welcome_event_does_not_open_a_second_conversation(make_engine, store):
    engine = make_engine()
    contact_id = engine.process(message("psid-1", "hi")).contact_id
    result = engine.process(event("welcome", channel="facebook", contact={"external_id": "psid-1"}))
    assert len(conversations(store, contact_id)) == 1
    assert result.trace["steps"][0]["builtin"][0]["outcome"] == "noop"


# -- the four ways to close -----------------------------------------------------------------


def test_close_by_user_with_a_note(make_engine, store):
    engine = make_engine()
    contact_id = engine.process(message("psid-1", "hi")).contact_id
    [conversation] = conversations(store, contact_id)
    engine.process(event("conversation.close", conversation_id=conversation.id, actor="maria",
                         minutes=30, params={"note": "solved"}))
    [closed] = conversations(store, contact_id)
    assert closed.close_source is CloseSource.USER
    assert (closed.closed_by, closed.closing_note) == ("maria", "solved")
    assert (closed.closed_at - closed.opened_at).total_seconds() == 30 * 60


def test_close_by_automation(make_engine, store):
    engine = make_engine("""
        rules:
          - id: close-on-thanks
            trigger: {event: message.received}
            conditions: ["lower(message.text) == 'thanks'"]
            actions: [{close_conversation: {}}]
    """)
    contact_id = engine.process(message("psid-1", "I need help")).contact_id
    engine.process(message("psid-1", "Thanks", minutes=5))
    [closed] = conversations(store, contact_id)
    assert closed.close_source is CloseSource.AUTOMATION
    assert closed.closed_by == "close-on-thanks"


@pytest.mark.parametrize("flag", [True, "true", "yes", "1", 1.0])
def test_close_by_dialogflow_rb_markdone(make_engine, store, flag):
    engine = make_engine()
    contact_id = engine.process(message("session-1", "hi", channel="dialogflow")).contact_id
    engine.process(event("dialogflow.fulfillment", channel="dialogflow",
                         contact={"external_id": "session-1"}, params={"RB_MARKDONE": flag}))
    [closed] = conversations(store, contact_id)
    assert closed.close_source is CloseSource.DIALOGFLOW


def test_dialogflow_rb_markdone_false_opens_one_when_none_is_open(make_engine, store):
    engine = make_engine()
    result = engine.process(event("dialogflow.fulfillment", channel="dialogflow",
                                  contact={"external_id": "session-1"},
                                  params={"RB_MARKDONE": False}))
    [conversation] = conversations(store, result.contact_id)
    assert conversation.is_open


def test_close_by_contact_merge(make_engine, store):
    engine = make_engine()
    primary = engine.process(message("psid-1", "hi")).contact_id
    secondary = engine.process(message("web-9", "hi again", channel="webchat")).contact_id
    engine.process(event("contacts.merge", contact={"id": primary}, secondary_contact_id=secondary,
                         actor="maria", minutes=10))
    [closed] = conversations(store, secondary)
    assert closed.close_source is CloseSource.CONTACT_MERGE
    assert len(open_ones(store, primary)) == 1  # the primary's own conversation is untouched
    with store.read() as tx:
        assert {i["channel"] for i in tx.identities(primary)} == {"facebook", "webchat"}
        assert tx.get_contact(secondary).merged_into == primary
    # a later message on the merged identity belongs to the primary
    later = engine.process(message("web-9", "me again", channel="webchat", minutes=20))
    assert later.contact_id == primary


def test_closing_when_none_is_open_is_a_reported_noop(make_engine, store):
    engine = make_engine()
    contact_id = engine.process(message("psid-1", "hi")).contact_id
    engine.process(event("conversation.close", contact={"id": contact_id}, actor="maria"))
    result = engine.process(event("conversation.close", contact={"id": contact_id}, actor="maria"))
    assert (result.status, result.reason) == ("noop", "no open conversation")
    assert result.trace["steps"][0]["builtin"][0] == {
        "operation": "close_conversation", "outcome": "noop",
        "detail": "no open conversation", "conversation_id": None,
    }


def test_a_contact_may_have_many_conversations_over_time(make_engine, store):
    engine = make_engine()
    contact_id = engine.process(message("psid-1", "first")).contact_id
    for round_ in range(3):
        engine.process(event("conversation.close", contact={"id": contact_id}, actor="u",
                             minutes=round_ * 10 + 1))
        engine.process(message("psid-1", "again", minutes=round_ * 10 + 2))
    history = conversations(store, contact_id)
    assert len(history) == 4
    assert [c.is_open for c in history] == [False, False, False, True]


def test_command_for_an_unknown_contact_is_refused(make_engine):
    engine = make_engine()
    with pytest.raises(NotFoundError):
        engine.process(event("conversation.open", contact={"id": 999}, actor="maria"))


# -- the invariant ----------------------------------------------------------------------------


def test_the_database_itself_refuses_a_second_open_conversation(make_engine, store):
    engine = make_engine()
    contact_id = engine.process(message("psid-1", "hi")).contact_id
    with pytest.raises(IntegrityError), store.transaction() as tx:
        tx.connection.execute(tables.conversations.insert().values(
            contact_id=contact_id, opened_at=T0, open_source="user", bot_active=True))


def all_at_once(task, count: int = 50) -> list:
    """Run ``task(index)`` in ``count`` threads released together; their results, in order.

    Any exception in a thread fails the test.
    """
    barrier = threading.Barrier(count)
    results: list = [None] * count
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait()
            results[index] = task(index)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    return results


def test_fifty_threads_opening_for_one_contact_leave_exactly_one_open(make_engine, store):
    engine: Engine = make_engine()
    contact_id = engine.process(message("psid-1", "hi")).contact_id
    engine.process(event("conversation.close", contact={"id": contact_id}, actor="u"))

    def open_one(index: int):
        kind = ("conversation.open", "welcome", "message.received")[index % 3]
        fields = ({"contact": {"id": contact_id}, "actor": f"user-{index}"} if index % 3 == 0
                  else {"channel": "facebook", "contact": {"external_id": "psid-1"},
                        **({"message": {"text": "hi"}} if index % 3 == 2 else {})})
        return engine.process(event(kind, minutes=1, **fields))

    results = all_at_once(open_one)
    assert len(open_ones(store, contact_id)) == 1
    opened = [r for r in results
              if any(c["operation"] == "open_conversation" for c in r.changes)]
    assert len(opened) == 1


def test_fifty_threads_sending_first_messages_create_one_contact_each(make_engine, store):
    engine = make_engine()
    results = all_at_once(lambda index: engine.process(message(f"new-{index % 5}", "hello")))
    contact_ids = {r.contact_id for r in results}
    assert len(contact_ids) == 5
    for contact_id in contact_ids:
        assert len(open_ones(store, contact_id)) == 1
