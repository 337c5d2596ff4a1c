"""Run-once and cooldowns, enforced by the store."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from .conftest import event, message


def results_of(result, rule_id: str) -> list[str]:
    return [r["result"] for step in result.trace["steps"] for r in step["rules"]
            if r["rule_id"] == rule_id]


def test_once_per_contact(make_engine):
    engine = make_engine("""
        rules:
          - id: greet-once
            trigger: {event: message.received}
            once_per: contact
            actions: [{add_tag: {tag: greeted}}]
    """)
    first = engine.process(message("psid-1", "hi"))
    again = engine.process(message("psid-1", "hi again", minutes=60 * 24 * 30))
    other = engine.process(message("psid-2", "hi"))
    assert results_of(first, "greet-once") == ["fired"]
    assert results_of(again, "greet-once") == ["skipped_once"]
    assert "already fired once for this contact" in again.trace["steps"][0]["rules"][0]["detail"]
    assert results_of(other, "greet-once") == ["fired"]


def test_once_per_conversation(make_engine):
    engine = make_engine("""
        rules:
          - id: survey-once
            trigger: {event: message.received}
            once_per: conversation
            actions: [{set_field: {name: surveyed, expr: "conversation.id"}}]
    """)
    contact = engine.process(message("psid-1", "hi")).contact_id
    assert results_of(engine.process(message("psid-1", "more", minutes=1)), "survey-once") == ["skipped_once"]
    engine.process(event("conversation.close", contact={"id": contact}, actor="u", minutes=2))
    second_conversation = engine.process(message("psid-1", "new topic", minutes=3))
    assert results_of(second_conversation, "survey-once") == ["fired"]


def test_cooldown_per_contact(make_engine):
    engine = make_engine("""
        rules:
          - id: nudge
            trigger: {event: message.received}
            cooldown: 10m
            actions: [{add_tag: {tag: nudged}}]
    """)
    outcomes = [results_of(engine.process(message("psid-1", "hi", minutes=m)), "nudge")[0]
                for m in (0, 5, 9.9, 10, 15, 21)]
    assert outcomes == ["fired", "skipped_cooldown", "skipped_cooldown", "fired",
                        "skipped_cooldown", "fired"]


def test_once_and_cooldown_together_record_nothing_when_refused(make_engine):
    engine = make_engine("""
        rules:
          - id: both
            trigger: {event: message.received}
            once_per: conversation
            cooldown: 1h
            actions: [{add_tag: {tag: t}}]
    """)
    contact = engine.process(message("psid-1", "hi")).contact_id
    engine.process(event("conversation.close", contact={"id": contact}, actor="u", minutes=1))
    # a new conversation, but within the contact's cooldown: refused, and its once is not spent
    assert results_of(engine.process(message("psid-1", "again", minutes=2)), "both") == ["skipped_cooldown"]
    assert results_of(engine.process(message("psid-1", "later", minutes=90)), "both") == ["fired"]


def test_once_holds_under_concurrency(make_engine, store):
    engine = make_engine("""
        rules:
          - id: once
            trigger: {event: message.received}
            once_per: contact
            actions: [{set_field: {name: welcomed, value: true}}]
    """)
    engine.process(message("psid-1", "first"))
    with store.transaction() as tx:
        tx.connection.exec_driver_sql("DELETE FROM rule_runs")
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda n: engine.process(message("psid-1", f"m{n}")), range(40)))
    assert sum(results_of(r, "once") == ["fired"] for r in results) == 1
