"""The engine: priority, stop, chaining with a depth bound, idempotency, atomicity, traces."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rules_engine import Engine, EventError, Store, load_rule_set
from rules_engine.trace.forms import read_trace

from .conftest import event, message


def tags(store: Store, contact_id: int) -> list[str]:
    with store.read() as tx:
        return tx.tags(contact_id)


def fields(store: Store, contact_id: int) -> dict:
    with store.read() as tx:
        return tx.fields(contact_id)


def test_rules_run_in_descending_priority_and_stop_ends_the_event(make_engine, store):
    engine = make_engine("""
        rules:
          - id: low
            trigger: {event: message.received}
            actions: [{add_tag: {tag: low}}]
            priority: 1
          - id: high-stops
            trigger: {event: message.received}
            conditions: ["contains(message.text, 'urgent')"]
            actions: [{add_tag: {tag: high}}]
            priority: 50
            stop: true
          - id: middle
            trigger: {event: message.received}
            actions: [{add_tag: {tag: middle}}]
            priority: 10
    """)
    calm = engine.process(message("psid-1", "hello"))
    assert calm.fired == ["middle", "low"]
    urgent = engine.process(message("psid-2", "URGENT please"))
    assert urgent.fired == ["high-stops"]
    results = {r["rule_id"]: r for r in urgent.trace["steps"][0]["rules"]}
    assert results["middle"]["result"] == "skipped_by_stop"
    assert results["low"]["detail"] == "rule 'high-stops' fired with stop: true"
    assert tags(store, urgent.contact_id) == ["high"]


def test_channel_filter(make_engine):
    engine = make_engine("""
        rules:
          - id: viber-only
            trigger: {event: message.received, channels: [viber]}
            actions: [{add_tag: {tag: viber}}]
          - id: everywhere
            trigger: {event: message.received}
            actions: [{add_tag: {tag: any}}]
    """)
    assert engine.process(message("u-1", "hi", channel="facebook")).fired == ["everywhere"]
    assert engine.process(message("u-2", "hi", channel="viber")).fired == ["viber-only", "everywhere"]


def test_chained_rules_run_through_emitted_events(make_engine, store):
    engine = make_engine("""
        rules:
          - id: assign-billing
            trigger: {event: message.received}
            conditions: ["contains(message.text, 'invoice')"]
            actions: [{assign: {team: billing}}]
          - id: billing-is-escalated
            trigger: {event: conversation.assigned}
            conditions: ["conversation.team == 'billing'"]
            actions: [{add_tag: {tag: escalated}}]
          - id: escalated-priority
            trigger: {event: contact.tag_added}
            conditions: ["params.tag == 'escalated'"]
            actions: [{set_field: {name: priority, value: high}}]
    """)
    result = engine.process(message("psid-1", "where is my invoice?"))
    assert result.fired == ["assign-billing", "billing-is-escalated", "escalated-priority"]
    assert fields(store, result.contact_id) == {"priority": "high"}
    assert [(s["event"], s["depth"]) for s in result.trace["steps"]] == [
        ("message.received", 0), ("contact.created", 1), ("conversation.opened", 1),
        ("conversation.assigned", 1), ("contact.tag_added", 2), ("contact.field_set", 3)]


def test_a_rule_loop_stops_at_the_depth_bound_and_the_trace_says_so(make_engine, store):
    engine = make_engine("""
        rules:
          - id: ping
            trigger: {event: contact.tag_added}
            conditions: ["params.tag == 'ping'"]
            actions: [{remove_tag: {tag: pong}}, {add_tag: {tag: pong}}]
          - id: pong
            trigger: {event: contact.tag_added}
            conditions: ["params.tag == 'pong'"]
            actions: [{remove_tag: {tag: ping}}, {add_tag: {tag: ping}}]
          - id: start
            trigger: {event: message.received}
            actions: [{add_tag: {tag: ping}}]
    """, max_depth=4)
    result = engine.process(message("psid-1", "go"))
    bound = result.trace["depth_bound"]
    assert bound["reached"] is True and bound["max_depth"] == 4
    assert {d["depth"] for d in bound["dropped"]} == {5}
    assert max(step["depth"] for step in result.trace["steps"]) == 4
    assert result.fired == ["start", "ping", "pong", "ping", "pong"]


def test_the_same_event_delivered_twice_is_applied_once(make_engine, store):
    engine = make_engine("""
        rules:
          - id: count
            trigger: {event: message.received}
            actions: [{add_tag: {tag: seen}}]
    """)
    first = engine.process(message("psid-1", "hi", id="fb-mid-1"))
    engine.process(event("conversation.close", contact={"id": first.contact_id}, actor="u"))
    again = engine.process(message("psid-1", "hi", id="fb-mid-1"))
    assert (first.status, again.status) == ("applied", "duplicate")
    assert again.changes == []
    with store.read() as tx:
        assert len(tx.conversations_of(first.contact_id)) == 1
        assert not tx.conversations_of(first.contact_id)[0].is_open


def test_a_condition_that_raises_counts_as_false_and_other_rules_still_run(make_engine, store):
    engine = make_engine("""
        rules:
          - id: broken-at-runtime
            trigger: {event: message.received}
            conditions: ["contact.fields.age > 30"]
            actions: [{add_tag: {tag: older}}]
            priority: 5
          - id: type-error
            trigger: {event: message.received}
            # text or a number: only the event shows it is text here (a load-time check
            # refuses a sum that always fails)
            conditions: ["len(message.text) + (message.text if conversation.is_open else 0)"]
            actions: [{add_tag: {tag: never}}]
            priority: 4
          - id: fine
            trigger: {event: message.received}
            actions: [{add_tag: {tag: fine}}]
    """)
    result = engine.process(message("psid-1", "hi"))
    assert result.fired == ["fine"]
    rules = {r["rule_id"]: r for r in result.trace["steps"][0]["rules"]}
    assert rules["broken-at-runtime"]["result"] == "condition_error"
    assert "no field 'age'" in rules["broken-at-runtime"]["detail"]
    assert rules["type-error"]["result"] == "condition_error"
    assert tags(store, result.contact_id) == ["fine"]


def test_an_event_that_fails_midway_leaves_nothing_behind(make_engine, store, monkeypatch):
    engine = make_engine("""
        rules:
          - id: tag-then-fail
            trigger: {event: message.received}
            actions: [{add_tag: {tag: first}}, {set_field: {name: x, value: 1}}]
    """)
    from rules_engine.store import repository

    def explode(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(repository.StoreTx, "set_field", explode)
    with pytest.raises(RuntimeError):
        engine.process(message("psid-1", "hi", id="evt-atomic"))
    with store.read() as tx:
        assert tx.find_contact_by_identity("facebook", "psid-1") is None
        assert not tx.is_event_processed("evt-atomic")
    monkeypatch.undo()
    retried = engine.process(message("psid-1", "hi", id="evt-atomic"))
    assert retried.status == "applied"
    assert tags(store, retried.contact_id) == ["first"]


def test_simulate_changes_nothing(make_engine, store):
    engine = make_engine("""
        rules:
          - id: tag
            trigger: {event: message.received}
            actions: [{add_tag: {tag: simulated}}]
    """)
    result = engine.simulate(message("psid-1", "hi", id="sim-1"))
    assert result.status == "simulated" and result.fired == ["tag"]
    with store.read() as tx:
        assert tx.find_contact_by_identity("facebook", "psid-1") is None
        assert not tx.is_event_processed("sim-1")


def test_the_trace_is_stored_per_event(make_engine, store):
    engine = make_engine("""
        rules:
          - id: vip
            trigger: {event: message.received}
            conditions: ["'vip' in contact.tags"]
            actions: [{assign: {user: susan}}]
    """)
    result = engine.process(message("psid-1", "hi", id="evt-traced"))
    with store.read() as tx:
        stored = read_trace(tx, "evt-traced")
    assert stored == result.trace
    [rule] = stored["steps"][0]["rules"]
    assert rule["result"] == "conditions_false"
    assert rule["conditions"][0]["expr"] == "'vip' in contact.tags"
    assert stored["ruleset_version"] == engine.rules.version


def test_set_field_from_an_expression(make_engine, store):
    engine = make_engine("""
        rules:
          - id: remember
            trigger: {event: message.received}
            actions:
              - set_field: {name: last_text, expr: "upper(message.text)"}
              - set_field: {name: bad, expr: "contact.fields.missing"}
    """)
    result = engine.process(message("psid-1", "hi"))
    outcomes = [a["outcome"] for a in result.trace["steps"][0]["rules"][0]["actions"]]
    assert outcomes == ["applied", "error"]
    assert fields(store, result.contact_id) == {"last_text": "HI"}


def test_assign_without_an_open_conversation_is_a_noop(make_engine, store):
    engine = make_engine("""
        rules:
          - id: route
            trigger: {event: conversation.closed}
            actions: [{assign: {user: susan}}]
    """)
    contact_id = engine.process(message("psid-1", "hi")).contact_id
    closed = engine.process(event("conversation.close", contact={"id": contact_id}, actor="u"))
    [action] = closed.trace["steps"][1]["rules"][0]["actions"]
    assert action["outcome"] == "noop"


def test_dialogflow_companion_parameters(make_engine, store):
    engine = make_engine("""
        rules:
          - id: intent-rule
            trigger: {event: dialogflow.fulfillment}
            conditions: ["intent.display_name == 'billing.question'"]
            actions: [{assign: {team: billing}}]
    """)
    contact_id = engine.process(message("s-1", "hi", channel="dialogflow")).contact_id
    result = engine.process(event(
        "dialogflow.fulfillment", channel="dialogflow", contact={"external_id": "s-1"},
        intent={"display_name": "billing.question"},
        params={"RB_ADDTAGS": "billing, urgent", "RB_REMOVETAGS": "new", "RB_BOTSTATUS": "false",
                "RB_NOTIFY": "Customer asks about an invoice"}))
    assert result.fired == ["intent-rule"]
    assert tags(store, contact_id) == ["billing", "urgent"]
    with store.read() as tx:
        conversation = tx.open_conversation_of(contact_id)
    assert conversation.bot_active is False and conversation.team == "billing"
    operations = [b["operation"] for b in result.trace["steps"][0]["builtin"]]
    assert operations == ["add_tag", "remove_tag", "set_bot_status", "notify"]
    assert any(s["event"] == "conversation.bot_status_changed" for s in result.trace["steps"])


def test_welcome_on_a_channel_without_one_is_refused():
    with pytest.raises(EventError, match="no welcome event"):
        event("welcome", channel="webchat", contact={"external_id": "x"})


@pytest.mark.parametrize("data, fragment", [
    ({"type": "message.received"}, "missing required key 'id'"),
    ({"id": "1", "type": "message.erased", "contact": {"id": 1}}, "unknown value 'message.erased'"),
    ({"id": "1", "type": "message.received", "channel": "facebook",
      "contact": {"external_id": "x"}}, "missing required key 'message'"),
    ({"id": "1", "type": "message.received", "channel": "facebook", "contact": {"id": "7"},
      "message": {"text": "x"}}, "expected a whole number"),
    ({"id": "1", "type": "conversation.open", "contact": {"id": 1}}, "missing required key 'actor'"),
    ({"id": "1", "type": "welcome", "channel": "viber", "contact": {"id": 1},
      "timestamp": "yesterday"}, "not an ISO 8601 timestamp"),
])
def test_malformed_events_name_the_problem(data, fragment):
    from rules_engine import parse_event
    with pytest.raises(EventError) as caught:
        parse_event(data)
    assert fragment in str(caught.value)


def test_a_batch_applies_each_event_in_its_own_savepoint(make_engine, store):
    from rules_engine import NotFoundError

    engine = make_engine()
    outcomes = engine.process_many([
        message("psid-b1", "hello"),
        event("conversation.close", conversation_id=999, actor="maria", id="bad-close"),
        message("psid-b2", "hello again"),
        message("psid-b1", "hello", id="dup-in-batch"),
        message("psid-b1", "hello", id="dup-in-batch"),
    ])
    assert [type(o).__name__ for o in outcomes] == ["Result", "NotFoundError", "Result",
                                                     "Result", "Result"]
    assert isinstance(outcomes[1], NotFoundError)
    assert [o.status for o in outcomes if not isinstance(o, Exception)] == [
        "applied", "applied", "applied", "duplicate"]
    with store.read() as tx:
        assert not tx.is_event_processed("bad-close")  # undone with its savepoint only
        assert tx.find_contact_by_identity("facebook", "psid-b2") is not None


def _count_statements(store: Store, statements: list[str]) -> None:
    """Record every statement a connection of ``store`` sends from now on, as the driver
    sees it (SQLite's trace callback; psycopg's cursors), whatever layer issued it."""
    from sqlalchemy import event as sqlalchemy_event

    def counting(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if store.dialect == "sqlite":
            dbapi_connection.set_trace_callback(statements.append)
            return
        import psycopg

        class CountingCursor(psycopg.Cursor):  # type: ignore[type-arg]
            def execute(self, query: Any, params: Any = None, **options: Any) -> Any:
                statements.append(str(query))
                return super().execute(query, params, **options)

        dbapi_connection.cursor_factory = CountingCursor

    sqlalchemy_event.listen(store.engine, "checkout", counting)


def test_a_message_on_a_known_contact_costs_at_most_9_statements(store):
    """The example rules, a contact with an open conversation: the ledger, the contact's
    row (locked) and aggregate, when they last wrote (the platforms' reply windows), the
    trace; counted as the database sees them."""
    engine = Engine(store, load_rule_set([Path(__file__).resolve().parent.parent / "rules"]))
    engine.process(message("psid-count", "hello"))
    store.dispose()  # every connection from here on is a counted one
    statements: list[str] = []
    _count_statements(store, statements)
    result = engine.process(message("psid-count", "where is my order?"))
    assert result.status == "applied" and result.conversation_id is not None
    statements = [s for s in statements if not s.startswith("PRAGMA")]
    print("\n".join(statements))
    assert 2 <= len(statements) <= 9, "\n".join(statements)  # today: BEGIN, 7, COMMIT


def test_a_second_assignment_in_one_event_says_what_it_overwrote(make_engine, store):
    engine = make_engine("""
        rules:
          - id: refund
            trigger: {event: message.received}
            actions: [{assign: {team: billing}}, {set_field: {name: queue, value: refunds}}]
          - id: route-new
            trigger: {event: conversation.opened}
            actions: [{assign: {team: support}}, {set_field: {name: queue, value: general}}]
    """)
    result = engine.process(message("psid-1", "refund please"))
    details = {rule["rule_id"]: [a["detail"] for a in rule["actions"]]
               for step in result.trace["steps"] for rule in step["rules"]}
    assert details["refund"][0].endswith("to team billing")
    assert details["route-new"] == [
        f"assigned conversation {result.conversation_id} to team support (overwrites team "
        "billing set by rule 'refund' in this event)",
        "set queue (overwrites field queue refunds set by rule 'refund' in this event)"]
    again = engine.process(message("psid-1", "and another thing"))  # a new event: no overwrite
    assert not any("overwrites" in a["detail"] for step in again.trace["steps"]
                   for rule in step["rules"] for a in rule["actions"])
