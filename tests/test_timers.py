"""Time: idle conversations, waits and business hours, fired by durable timers (both databases)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from rules_engine import Engine
from rules_engine.store import repository

from .conftest import T0, event, message

IDLE_CLOSE = """
rules:
  - id: close-when-idle
    trigger: {event: conversation.idle, for: 24h}
    actions:
      - close_conversation: {note: "no activity for 24 hours"}
"""


def conversation_of(engine: Engine, external_id: str) -> dict:
    with engine.store.read() as tx:
        contact = tx.find_contact_by_identity("facebook", external_id)
        assert contact is not None
        return tx.conversations_of(contact.id)[-1].to_dict()


def tick(engine: Engine, at: datetime) -> list:
    return list(engine.fire_all_due(at))


def test_an_idle_conversation_closes_once_its_time_has_passed_and_not_before(make_engine):
    engine = make_engine(IDLE_CLOSE)
    engine.process(message("idle-1", "hello"))  # opens at T0: the clock runs out at T0 + 24h
    assert tick(engine, T0 + timedelta(hours=23, minutes=59)) == []
    assert conversation_of(engine, "idle-1")["status"] == "open"
    [(timer, result)] = tick(engine, T0 + timedelta(hours=24))
    assert timer.id.startswith("idle:close-when-idle:") and result.fired == ["close-when-idle"]
    closed = conversation_of(engine, "idle-1")
    assert closed["status"] == "closed" and closed["close_source"] == "automation"
    assert closed["closed_at"] == (T0 + timedelta(hours=24)).isoformat()  # the timer's time
    assert closed["closing_note"] == "no activity for 24 hours"
    assert tick(engine, T0 + timedelta(days=30)) == []  # fired once, never again


def test_a_message_restarts_the_clock(make_engine):
    engine = make_engine(IDLE_CLOSE)
    engine.process(message("idle-2", "hello"))
    engine.process(message("idle-2", "still there?", minutes=20 * 60))  # at T0 + 20h
    assert tick(engine, T0 + timedelta(hours=30)) == []  # 24h after the first, not the last
    assert conversation_of(engine, "idle-2")["status"] == "open"
    [(_, result)] = tick(engine, T0 + timedelta(hours=44))
    assert result.fired == ["close-when-idle"]


def test_an_older_event_arriving_late_never_moves_the_clock_back(make_engine):
    engine = make_engine(IDLE_CLOSE)
    engine.process(message("idle-3", "hello", minutes=600))
    engine.process(message("idle-3", "an old one, delivered late", minutes=0))
    assert tick(engine, T0 + timedelta(hours=24, minutes=1)) == []
    assert len(tick(engine, T0 + timedelta(hours=34))) == 1


def test_a_closed_conversations_timers_never_fire(make_engine, store):
    engine = make_engine(IDLE_CLOSE + """
  - id: nudge-later
    trigger: {event: message.received}
    actions:
      - wait: 1h
      - add_tag: nudged
""")
    engine.process(message("idle-4", "hello"))
    with store.read() as tx:
        assert {t.kind for t in tx.timers()} == {"idle", "wait"}
    engine.process(event("conversation.close", contact={"external_id": "idle-4"},
                         channel="facebook", actor="maria", minutes=5))
    with store.read() as tx:
        assert tx.timers() == []
    assert tick(engine, T0 + timedelta(days=3)) == []


def test_a_timer_dropped_by_an_earlier_firing_of_its_batch_never_fires(make_engine, store):
    """Both timers fall due together and are claimed in one batch: the idle clock fires
    first, closes the conversation and drops the wait, which then must not fire."""
    engine = make_engine(IDLE_CLOSE + """
  - id: nudge-later
    trigger: {event: message.received}
    actions:
      - wait: 24h
      - add_tag: nudged
""")
    contact_id = engine.process(message("idle-6", "hello")).contact_id
    fired = tick(engine, T0 + timedelta(days=3))
    assert [(timer.kind, result.fired) for timer, result in fired] == [
        ("idle", ["close-when-idle"])]
    with store.read() as tx:
        assert tx.timers() == [] and tx.contact_details(contact_id)["tags"] == []


def test_a_clock_a_message_moved_on_after_the_claim_read_it_waits_on(make_engine, store,
                                                                     monkeypatch):
    """What a claim can return on PostgreSQL: the row as its snapshot saw it, before a
    message that committed before the claim's lock moved the clock on (issue 19). That
    clock does not fire; the batch, left with nothing, claims again and fires the rest."""
    engine = make_engine(IDLE_CLOSE)
    moved = engine.process(message("idle-7", "hello")).conversation_id  # due at T0 + 24h
    other = engine.process(message("idle-8", "hello")).conversation_id  # this one too
    with store.read() as tx:
        as_read = [timer for timer in tx.timers() if timer.conversation_id == moved]
    engine.process(message("idle-7", "still there?", minutes=60))  # now due at T0 + 25h
    claims = iter([as_read])  # the first claim returns only that row, as it was
    claim = repository.StoreTx.claim_due_timers
    monkeypatch.setattr(repository.StoreTx, "claim_due_timers",
                        lambda tx, now, limit: next(claims, None) or claim(tx, now, limit))
    fired = tick(engine, T0 + timedelta(hours=24, minutes=30))
    assert [timer.conversation_id for timer, _ in fired] == [other]
    assert conversation_of(engine, "idle-7")["status"] == "open"
    [(timer, result)] = tick(engine, T0 + timedelta(hours=25))
    assert timer.due_at == T0 + timedelta(hours=25) and result.fired == ["close-when-idle"]


def test_idle_of_contact_ignores_agents_and_of_agent_ignores_the_contact(make_engine):
    engine = make_engine("""
rules:
  - id: contact-quiet
    trigger: {event: conversation.idle, for: 2h, of: contact}
    actions: [{add_tag: contact-quiet}]
  - id: agent-quiet
    trigger: {event: conversation.idle, for: 2h, of: agent}
    actions: [{add_tag: agent-quiet}]
""")
    engine.process(message("idle-5", "hello"))  # opens at T0: both clocks start
    engine.process(event("message.sent", channel="facebook", contact={"external_id": "idle-5"},
                         actor="susan", message={"text": "how can I help?"}, minutes=90))
    fired = [result.fired for _, result in tick(engine, T0 + timedelta(hours=2, minutes=1))]
    assert fired == [["contact-quiet"]]  # the agent's reply restarted only agent-quiet
    fired = [result.fired for _, result in tick(engine, T0 + timedelta(hours=3, minutes=31))]
    assert fired == [["agent-quiet"]]


def test_a_reply_is_recorded_never_opens_and_the_first_agent_reply_is_the_first_response(
        make_engine):
    engine = make_engine()
    sent = event("message.sent", channel="facebook", contact={"external_id": "reply-1"},
                 actor="susan", message={"text": "hi"})
    assert engine.process(sent).conversation_id is None  # no conversation: none opened
    engine.process(message("reply-1", "hello", minutes=1))
    engine.process(event("message.sent", channel="facebook", contact={"external_id": "reply-1"},
                         actor="app:263902037430900", message={"text": "bot"}, minutes=2))
    assert conversation_of(engine, "reply-1")["first_response_at"] is None  # a bot's reply
    engine.process(event("message.sent", channel="facebook", contact={"external_id": "reply-1"},
                         actor="susan", message={"text": "agent"}, minutes=11))
    engine.process(event("message.sent", channel="facebook", contact={"external_id": "reply-1"},
                         actor="susan", message={"text": "again"}, minutes=20))
    conversation = conversation_of(engine, "reply-1")
    assert conversation["first_response_at"] == (T0 + timedelta(minutes=11)).isoformat()
    assert conversation["last_reply_at"] == (T0 + timedelta(minutes=20)).isoformat()


WAIT_RULES = """
rules:
  - id: nudge-the-contact
    trigger: {event: message.received}
    conditions: ["contains(message.text, 'order')"]
    actions:
      - add_tag: asked
      - wait: {for: 2h, if: "conversation.is_open and 'answered' not in contact.tags"}
      - send_message: {text: "Still there? Your order question: {{ message.text }}"}
      - add_tag: nudged
"""


def test_a_wait_runs_the_rest_of_the_rule_after_its_duration(make_engine, store):
    engine = make_engine(WAIT_RULES)
    first = engine.process(message("wait-1", "where is my order?"))
    assert [a["action"] for a in first.trace["steps"][0]["rules"][0]["actions"]] == [
        "add_tag", "wait"]  # the rest waits
    assert tick(engine, T0 + timedelta(hours=1, minutes=59)) == []
    [(_, resumed)] = tick(engine, T0 + timedelta(hours=2))
    [rule] = resumed.trace["steps"][0]["rules"]
    assert rule["result"] == "resumed" and resumed.fired == ["nudge-the-contact"]
    assert [a["path"] for a in rule["actions"]] == ["actions/2", "actions/3"]
    assert rule["conditions"][0]["expr"].startswith("conversation.is_open")
    with store.read() as tx:
        [outbox] = tx.outbound.rows(limit=5)
        contact = tx.find_contact_by_identity("facebook", "wait-1")
        assert contact is not None and tx.tags(contact.id) == ["asked", "nudged"]
    assert outbox["body"]["text"] == "Still there? Your order question: where is my order?"


def test_a_wait_whose_if_is_false_skips_the_rest_and_says_so(make_engine, store):
    engine = make_engine(WAIT_RULES + """
  - id: mark-answered
    trigger: {event: message.received}
    conditions: ["message.text == 'ok, answered'"]
    actions: [{add_tag: answered}]
""")
    engine.process(message("wait-2", "my order?"))
    engine.process(message("wait-2", "ok, answered", minutes=30))
    [(_, resumed)] = tick(engine, T0 + timedelta(hours=3))
    [rule] = resumed.trace["steps"][0]["rules"]
    assert rule["result"] == "wait_if_false" and "the rest is skipped" in rule["detail"]
    assert resumed.fired == []
    with store.read() as tx:
        contact = tx.find_contact_by_identity("facebook", "wait-2")
        assert contact is not None and "nudged" not in tx.tags(contact.id)


def test_a_wait_is_dropped_when_its_rule_changed(make_engine, write_rules, store):
    from rules_engine import load_rule_set

    engine = make_engine(WAIT_RULES)
    engine.process(message("wait-3", "my order?"))
    engine.replace_rules(load_rule_set([write_rules(WAIT_RULES.replace("nudged", "poked"))]))
    [(_, resumed)] = tick(engine, T0 + timedelta(hours=3))
    [rule] = resumed.trace["steps"][0]["rules"]
    assert rule["result"] == "wait_dropped" and "changed" in rule["detail"]


BUSINESS = """
business_hours:
  timezone: Europe/Paris
  weekly:
    mon: ["09:00-18:00"]
    tue: ["09:00-18:00"]
    wed: ["09:00-18:00"]
    thu: ["09:00-18:00"]
    fri: ["09:00-18:00"]
  holidays: ["2026-12-25"]
rules:
  - id: out-of-hours
    trigger: {event: message.received}
    conditions: ["not in_business_hours()"]
    actions: [{add_tag: out-of-hours}]
"""


def at(iso: str) -> float:
    """Minutes from T0 to an ISO instant (the conftest builds events from T0)."""
    return (datetime.fromisoformat(iso) - T0).total_seconds() / 60


def test_business_hours_across_a_daylight_saving_change_and_on_a_holiday(make_engine):
    engine = make_engine(BUSINESS)

    def out_of_hours(iso: str) -> bool:
        return engine.process(message(f"bh-{iso}", "hi", minutes=at(iso))).fired == ["out-of-hours"]

    # Paris is UTC+1 until 2026-03-29 02:00, then UTC+2; 07:30 UTC is 08:30 then 09:30
    assert out_of_hours("2026-03-23T07:30:00+00:00")  # Monday, 08:30 in Paris: closed
    assert not out_of_hours("2026-03-30T07:30:00+00:00")  # Monday, 09:30 in Paris: open
    assert out_of_hours("2026-03-30T16:30:00+00:00")  # 18:30 in Paris: closed
    assert not out_of_hours("2026-03-27T16:30:00+00:00")  # Friday 17:30 in Paris (UTC+1)
    assert out_of_hours("2026-12-25T10:00:00+00:00")  # a Friday, but a holiday
    assert not out_of_hours("2026-12-24T10:00:00+00:00")


def test_in_business_hours_without_a_definition_is_a_validation_error(write_rules):
    import pytest

    from rules_engine import load_rule_set
    from rules_engine.domain.errors import RuleSetInvalid

    with pytest.raises(RuleSetInvalid, match="no rule file defines business_hours"):
        load_rule_set([write_rules(BUSINESS.split("rules:")[0].replace("business_hours", "x_")
                                   .split("x_")[0] + "rules:" + BUSINESS.split("rules:")[1])])


def test_a_rule_that_only_names_in_business_hours_in_its_text_needs_no_definition(write_rules):
    """Only a call in an expression (a condition, a wait's if) is a use: a description or
    a message that mentions the function is text."""
    from rules_engine import load_rule_set

    rules = load_rule_set([write_rules("""
rules:
  - id: explains-itself
    description: "does not call in_business_hours() at all"
    trigger: {event: message.received}
    actions:
      - send_message: {text: "we check in_business_hours() tomorrow"}
""")])
    assert len(rules) == 1 and rules.get("explains-itself") is not None


def test_a_key_yaml_reads_as_an_impossible_date_is_an_error_at_its_place(write_rules):
    import pytest

    from rules_engine import load_rule_set
    from rules_engine.domain.errors import RuleSetInvalid

    with pytest.raises(RuleSetInvalid) as raised:
        load_rule_set([write_rules("""
business_hours:
  timezone: Europe/Paris
  weekly: {mon: ["09:00-18:00"]}
  2026-02-30: closed
rules: []
""")])
    error = raised.value.errors[0]
    assert "2026-02-30" in error.message and error.line == 5, error


def test_replaying_old_events_sets_the_same_timers(make_engine, store, database_url):
    engine = make_engine(IDLE_CLOSE + WAIT_RULES.replace("rules:\n", ""))
    engine.process(message("replay-1", "my order", id="old-1", minutes=0))
    with store.read() as tx:
        first = sorted((t.id, t.due_at) for t in tx.timers())
    assert first == sorted([
        (first[0][0], T0 + timedelta(hours=24) if first[0][0].startswith("idle") else T0 + timedelta(hours=2)),
        (first[1][0], T0 + timedelta(hours=24) if first[1][0].startswith("idle") else T0 + timedelta(hours=2)),
    ])
    assert all(due < datetime.now(timezone.utc) for _, due in first)  # old: due already


def test_static_checks_know_idle_rules(write_rules):
    from rules_engine import load_rule_set

    rules = load_rule_set([write_rules("""
rules:
  - id: waits-while-idle
    trigger: {event: conversation.idle, for: 1h}
    actions: [{wait: 1h}, {close_conversation: {}}]
  - id: only-tags
    trigger: {event: conversation.idle, for: 2h}
    actions: [{add_tag: quiet}]
  - id: cooled-down
    trigger: {event: conversation.idle, for: 1h}
    cooldown: 1d
    actions: [{assign: {team: follow-up}}]
""")])
    warnings = {(w.rule_id, w.path): w.message for w in rules.warnings}
    assert "a wait in an idle rule" in warnings[("waits-while-idle", "actions/0")]
    assert "does nothing to the conversation" in warnings[("only-tags", "actions")]
    assert "longer than the idle time" in warnings[("cooled-down", "cooldown")]
    assert all("can never fire" not in message for message in warnings.values())


def test_for_belongs_to_idle_triggers_only(write_rules):
    import pytest

    from rules_engine import load_rule_set
    from rules_engine.domain.errors import RuleSetInvalid

    with pytest.raises(RuleSetInvalid) as caught:
        load_rule_set([write_rules("""
rules:
  - id: idle-without-for
    trigger: {event: conversation.idle}
    actions: [{close_conversation: {}}]
  - id: for-on-a-message
    trigger: {event: message.received, for: 2h}
    actions: [{add_tag: x}]
""")])
    text = str(caught.value)
    assert "idle-without-for" in text and "for" in text and "for-on-a-message" in text


def test_tick_fires_what_is_due_at_now_once(tmp_path, write_rules, database_url, store):
    from .test_validation import run_cli

    rules = write_rules(IDLE_CLOSE)
    engine = Engine(store, __import__("rules_engine").load_rule_set([rules]))
    for n in range(3):
        engine.process(message(f"tick-{n}", "hello", minutes=n))
    args = ("--rules", str(rules), "--database-url", database_url, "tick", "--now")
    status, output = run_cli(*args, (T0 + timedelta(hours=24, minutes=1)).isoformat())
    assert status == 0 and "fired 2 timers (2 rules fired)" in output
    assert "close-when-idle" in output
    status, output = run_cli(*args, (T0 + timedelta(hours=30)).isoformat())
    assert status == 0 and "fired 1 timer (1 rule fired)" in output
    assert output.endswith("; no timer pending\n")
    status, output = run_cli(*args, (T0 + timedelta(days=9)).isoformat())
    assert status == 0 and "tick: fired 0 timers due by 2026-" in output


def test_simulate_can_advance_the_clock_and_writes_nothing(tmp_path, write_rules, database_url,
                                                         store):
    import json

    from .test_validation import run_cli

    rules = write_rules(IDLE_CLOSE)
    event_file = tmp_path / "event.json"
    event_file.write_text(json.dumps({
        "id": "sim-1", "type": "message.received", "channel": "facebook",
        "timestamp": T0.isoformat(), "contact": {"external_id": "sim-1"},
        "message": {"text": "hello"}}), "utf-8")
    status, output = run_cli("--rules", str(rules), "--database-url", database_url,
                             "simulate", str(event_file), "--advance", "25h")
    assert status == 0, output
    assert "1 timer(s) fire" in output and "[FIRED] close-when-idle" in output
    with store.read() as tx:
        assert tx.timers() == [] and not tx.is_event_processed("sim-1")


CLOSED_THEN_LATER = IDLE_CLOSE + """
  - id: follow-up-after-close
    trigger: {event: conversation.closed}
    actions:
      - wait: 1h
      - add_tag: followed-up
"""


def test_simulate_advance_fires_only_the_timers_its_event_led_to(tmp_path, make_engine,
                                                                database_url):
    """Another contact's idle clock is due in the store: simulating a new contact's first
    message over 25 hours fires that contact's idle clock and the wait its close set, and
    never the other contact's; and an idle firing has no built-in line."""
    import json

    from .test_cli_as_a_user import cli, no_traceback

    engine = make_engine(CLOSED_THEN_LATER)
    engine.process(message("someone-else", "hello"))  # idle clock due at T0 + 24h
    event_file = tmp_path / "event.json"
    event_file.write_text(json.dumps({
        "id": "sim-2", "type": "message.received", "channel": "facebook",
        "timestamp": (T0 + timedelta(hours=1)).isoformat(),
        "contact": {"external_id": "newcomer"}, "message": {"text": "hello"}}), "utf-8")
    done = cli("--rules", str(tmp_path / "rules"), "--database-url", database_url,
               "simulate", str(event_file), "--advance", "25h")
    no_traceback(done)
    assert done.returncode == 0, done.stderr
    assert "2 timer(s) fire" in done.stdout
    fired = [line for line in done.stdout.splitlines() if line.startswith("event timer:")]
    assert len(fired) == 2 and all(", contact 2," in line for line in fired)  # the newcomer
    assert "[FIRED] close-when-idle" in done.stdout and "[resumed] follow-up-after-close" in done.stdout
    assert "built-in idle" not in done.stdout
    [(timer, _)] = tick(engine, T0 + timedelta(hours=24))  # the other's clock is still there
    assert timer.contact_id == 1


def test_an_idle_firing_names_its_conversation_without_a_built_in_line(make_engine):
    engine = make_engine(IDLE_CLOSE)
    opened = engine.process(message("idle-7", "hello"))
    [(_, result)] = tick(engine, T0 + timedelta(hours=24))
    assert result.trace["steps"][0]["builtin"] == []
    assert result.conversation_id == opened.conversation_id is not None
    assert result.trace["conversation_id"] == opened.conversation_id


def test_a_malformed_timer_is_dropped_and_never_blocks_the_others(make_engine, store):
    from rules_engine.domain.timers import Timer

    engine = make_engine(IDLE_CLOSE + WAIT_RULES.replace("rules:\n", ""))
    engine.process(message("bad-1", "my order?"))  # a good idle clock and a good wait
    contact_id = engine.process(message("bad-2", "hi")).contact_id
    assert contact_id is not None
    with store.transaction() as tx:  # an old-format wait: no "resume"; and one the code
        tx.set_timers([  # cannot turn into an event at all (an unknown trigger type)
            Timer("wait:old", "wait", contact_id, None, "nudge-the-contact",
                  T0 - timedelta(hours=1), "x", {"digest": "x"}),
            Timer("wait:broken", "wait", contact_id, None, "nudge-the-contact",
                  T0 - timedelta(hours=1), "x", {"resume": 2, "trigger": "no.such.type",
                                                 "digest": engine.rules.get(
                                                     "nudge-the-contact").digest})])
    fired = {timer.id: outcome for timer, outcome in tick(engine, T0 + timedelta(days=2))}
    assert fired["wait:old"].trace["steps"][0]["rules"][0]["result"] == "wait_dropped"
    assert "cannot fire" in str(fired["wait:broken"])
    assert sum(1 for o in fired.values() if getattr(o, "fired", None)) >= 3  # the good ones
    with store.read() as tx:
        assert tx.timers() == []


def test_the_worker_fires_due_timers_too(make_engine, write_rules, database_url, store):
    """`rules-engine worker --once` delivers the outbox and fires what is due (its clock
    is the real one: these timers fell due in 2026-11)."""
    import subprocess
    import sys

    engine = make_engine(IDLE_CLOSE)
    engine.process(message("worker-1", "hello"))
    rules = write_rules(IDLE_CLOSE)
    done = subprocess.run([sys.executable, "-m", "rules_engine.cli", "worker", "--once",
                           "--rules", str(rules), "--database-url", database_url],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert conversation_of(engine, "worker-1")["close_source"] == "automation"
    with store.read() as tx:
        assert tx.timers() == []


OPERATIONS = st.lists(st.tuples(
    st.sampled_from(["message", "reply", "bot-reply", "close", "tick"]),
    st.integers(min_value=0, max_value=2),  # which contact
    st.integers(min_value=1, max_value=90),  # minutes after the previous operation
), min_size=1, max_size=25)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(OPERATIONS)
def test_idle_clocks_match_a_model_of_the_lifecycle(operations):
    """Random messages, replies, closes and ticks over three contacts, against a model:
    a conversation is closed by its idle rule exactly when a tick finds it without a
    message (from anyone) for 60 minutes, at the moment its clock ran out; an open
    conversation always has exactly one idle timer, due 60 minutes after its last
    message (or its open); a closed one has none; no firing happens twice."""
    import tempfile
    from pathlib import Path

    from rules_engine import Store, load_rule_set

    folder = Path(tempfile.mkdtemp())
    (folder / "idle.yaml").write_text(IDLE_CLOSE.replace("24h", "60m"), "utf-8")
    store = Store("sqlite:///:memory:")
    engine = Engine(store, load_rule_set([folder]))
    last: dict[int, int] = {}  # contact -> minute of the last message of its open conversation
    closed_at: dict[int, list[int]] = {0: [], 1: [], 2: []}  # idle closes the model expects
    now = 0
    for step, (kind, who, gap) in enumerate(operations):
        now += gap
        contact = {"external_id": f"model-{who}"}
        if kind == "message":
            engine.process(event("message.received", channel="facebook", contact=contact,
                                 message={"text": "hi"}, minutes=now, id=f"m-{step}"))
            last[who] = now
        elif kind in ("reply", "bot-reply") and who in last:
            actor = "susan" if kind == "reply" else "bot:helper"
            engine.process(event("message.sent", channel="facebook", contact=contact, actor=actor,
                                 message={"text": "hello"}, minutes=now, id=f"r-{step}"))
            last[who] = now
        elif kind == "close" and who in last:
            engine.process(event("conversation.close", channel="facebook", contact=contact,
                                 actor="maria", minutes=now, id=f"c-{step}"))
            del last[who]
        elif kind == "tick":
            tick(engine, T0 + timedelta(minutes=now))
            for person, minute in list(last.items()):
                if minute + 60 <= now:
                    closed_at[person].append(minute + 60)
                    del last[person]
        with store.read() as tx:
            timers = {t.contact_id: t for t in tx.timers()}
            for person in range(3):
                found = tx.find_contact_by_identity("facebook", f"model-{person}")
                if found is None:
                    continue
                history = tx.conversations_of(found.id)
                idle_closes = [int((c.closed_at - T0).total_seconds() // 60) for c in history
                               if c.close_source is not None and c.close_source.value == "automation"]
                assert idle_closes == closed_at[person], (person, operations)
                is_open = bool(history) and history[-1].closed_at is None
                assert is_open == (person in last), (person, operations)
                if is_open:
                    assert timers[found.id].due_at == T0 + timedelta(minutes=last[person] + 60)
                else:
                    assert found.id not in timers
    with store.read() as tx:
        firings = [e for e in tx.recent_events(limit=1000) if e["event_id"].startswith("timer:")]
        assert len(firings) == len({e["event_id"] for e in firings})
    store.dispose()
