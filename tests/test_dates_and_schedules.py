"""Date and schedule triggers: their times across daylight-saving changes, their timers set,
moved and dropped with the contacts' fields, schedules run in batches that resume, and the
static checks (both databases)."""
from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from rules_engine import Engine, load_rule_set
from rules_engine.domain.errors import RuleSetInvalid
from rules_engine.domain.schedules import CronNeverFires, next_firing
from rules_engine.domain.timers import DateTrigger

from .conftest import T0, event, message

PARIS = ZoneInfo("Europe/Paris")
HOURS = """
business_hours:
  timezone: Europe/Paris
  weekly: {mon: ["09:00-18:00"]}
"""
# A contact writing "renewal 2027-03-31" keeps that date; a reminder comes 3 days before.
DATED = HOURS + """
rules:
  - id: keep-renewal-date
    trigger: {event: message.received}
    conditions: ["startswith(message.text, 'renewal ')"]
    actions: [{set_field: {name: renewal_date, expr: "message.text[8:]"}}]
  - id: remind
    trigger: {event: date, field: contact.fields.renewal_date, offset: -3d, at: "%s"}
    actions: [{add_tag: reminded}]
"""
SCHEDULED = HOURS + """
rules:
  - id: tag-vips
    trigger: {event: message.received}
    conditions: ["message.text == 'vip'"]
    actions: [{add_tag: vip}]
  - id: monday-vip-check
    trigger: {event: schedule, cron: "0 8 * * mon", applies_to: contacts}
    conditions: ["'vip' in contact.tags"]
    actions: [{add_tag: checked}]
"""


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


@pytest.mark.parametrize(("day", "at", "due"), [
    ("2027-03-30", "09:00", utc(2027, 3, 27, 8)),  # winter time (UTC+1)
    ("2027-04-02", "09:00", utc(2027, 3, 30, 7)),  # summer time (UTC+2), after the change
    ("2027-03-31", "02:30", utc(2027, 3, 28, 1, 30)),  # 02:30 does not exist: 03:30 CEST
    ("2027-11-03", "02:30", utc(2027, 10, 31, 0, 30)),  # 02:30 happens twice: the first
    ("2027-03-31T18:00:00+02:00", "09:00", utc(2027, 3, 28, 7)),  # a date-time's date
])
def test_a_date_trigger_is_due_at_its_local_time_across_daylight_saving_changes(day, at, due):
    hour, minute = map(int, at.split(":"))
    assert DateTrigger("renewal_date", -3, time(hour, minute)).due(day, PARIS) == due


@pytest.mark.parametrize("value", ["soon", "2027-02-30", 20270331, None, ["2027-03-31"]])
def test_a_value_that_is_not_a_date_sets_no_time(value):
    assert DateTrigger("renewal_date", 0, time(9)).due(value, PARIS) is None


@pytest.mark.parametrize(("cron", "after", "due"), [
    ("0 8 * * mon", utc(2027, 3, 23), utc(2027, 3, 29, 6)),  # 08:00 CEST, the day after
    ("0 8 * * mon", utc(2027, 3, 16), utc(2027, 3, 22, 7)),  # 08:00 CET
    ("30 2 * * *", utc(2027, 3, 27, 12), utc(2027, 3, 28, 1)),  # in the gap: 03:00 CEST
    ("30 2 * * *", utc(2027, 10, 30, 12), utc(2027, 10, 31, 0, 30)),  # twice: the first
    ("30 2 * * *", utc(2027, 10, 31, 0, 30), utc(2027, 11, 1, 1, 30)),  # and not again
])
def test_a_cron_fires_at_its_local_time_across_daylight_saving_changes(cron, after, due):
    assert next_firing(cron, after, PARIS) == due


_FIELD = {"minute": (0, 59), "hour": (0, 23), "day": (1, 28), "month": (1, 12),
          "weekday": (0, 6)}


def _field(name: str) -> st.SearchStrategy[str]:
    low, high = _FIELD[name]
    return st.one_of(st.just("*"), st.lists(st.integers(low, high), min_size=1, max_size=3,
                                            unique=True).map(lambda xs: ",".join(map(str, xs))))


def _allowed(field: str) -> set[int]:
    return set(range(60)) if field == "*" else set(map(int, field.split(",")))


@settings(max_examples=300, deadline=None)
@given(fields=st.tuples(*map(_field, _FIELD)),
       after=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1),
                          timezones=st.just(UTC)))
def test_the_next_firing_of_a_cron_is_after_its_start_and_matches_the_cron(fields, after):
    minute, hour, day, month, weekday = fields
    found = next_firing(" ".join(fields), after, ZoneInfo("UTC"))
    assert found > after and found.tzinfo is not None and found.second == 0
    assert found.minute in _allowed(minute) and found.hour in _allowed(hour)
    assert found.month in _allowed(month)
    on_day = found.day in _allowed(day)
    on_weekday = (found.isoweekday() % 7) in _allowed(weekday)
    # cron's rule: with both restricted, either matches; else the restricted one must
    assert (on_day or on_weekday) if "*" not in (day, weekday) else (on_day and on_weekday)


@settings(max_examples=300, deadline=None)
@given(cron=st.one_of(st.text(max_size=30), st.lists(
    st.text(alphabet="0123456789*/,-LW#monthuesatfrijan?", min_size=1, max_size=6),
    min_size=5, max_size=5).map(" ".join)),
       zone=st.sampled_from(["UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe"]))
def test_any_text_as_a_cron_fires_in_the_future_or_is_refused_never_crashes(cron, zone):
    after = utc(2026, 10, 25)
    try:
        found = next_firing(cron, after, ZoneInfo(zone))
    except CronNeverFires as refused:
        assert cron in str(refused)
    else:
        assert found > after


def contact_of(engine: Engine, external_id: str):
    with engine.store.read() as tx:
        contact = tx.find_contact_by_identity("facebook", external_id)
        assert contact is not None
        return contact


def date_timers(engine: Engine) -> dict[str, datetime]:
    with engine.store.read() as tx:
        return {timer.id: timer.due_at for timer in tx.timers() if timer.kind == "date"}


def tags_of(engine: Engine, external_id: str) -> set[str]:
    contact = contact_of(engine, external_id)
    with engine.store.read() as tx:
        return set(tx.tags(contact.id))


def test_a_date_timer_is_set_moved_and_dropped_with_its_field_and_fires_once(make_engine):
    engine = make_engine(DATED % "09:00")
    engine.process(message("d-1", "renewal 2027-03-30"))
    timer_id = f"date:remind:{contact_of(engine, 'd-1').id}"
    assert date_timers(engine) == {timer_id: utc(2027, 3, 27, 8)}
    engine.process(message("d-1", "renewal 2027-04-02", minutes=1))  # moved, even earlier
    assert date_timers(engine) == {timer_id: utc(2027, 3, 30, 7)}
    engine.process(message("d-1", "renewal someday", minutes=2))  # not a date: dropped
    assert date_timers(engine) == {}
    engine.process(message("d-1", "renewal 2027-04-02", minutes=3))
    assert list(engine.fire_all_due(utc(2027, 3, 30, 6, 59))) == []
    [(timer, result)] = engine.fire_all_due(utc(2027, 3, 30, 7))
    assert timer.id == timer_id and result.fired == ["remind"]
    assert "reminded" in tags_of(engine, "d-1")
    assert list(engine.fire_all_due(utc(2028, 1, 1))) == []  # once


def test_a_date_that_fired_is_not_set_again_when_another_field_changes(make_engine):
    engine = make_engine(DATED % "09:00" + """
  - id: note-plan
    trigger: {event: message.received}
    conditions: ["message.text == 'gold'"]
    actions: [{set_field: {name: plan, value: gold}}]
""")
    engine.process(message("d-5", "renewal 2027-04-02"))
    [(_, result)] = engine.fire_all_due(utc(2027, 3, 30, 7))
    assert result.fired == ["remind"]
    engine.process(message("d-5", "gold", minutes=5))  # before the date: it could be set again
    assert date_timers(engine) == {}
    assert list(engine.fire_all_due(utc(2027, 4, 1))) == []


def test_a_date_already_past_sets_no_timer(make_engine):
    engine = make_engine(DATED % "09:00")
    engine.process(message("d-2", "renewal 2026-11-04"))  # 3 days before is before T0
    assert date_timers(engine) == {}


def test_a_merge_moves_the_date_timer_to_the_contact_that_keeps_the_field(make_engine):
    engine = make_engine(DATED % "09:00")
    engine.process(message("d-3", "renewal 2027-03-30"))
    engine.process(message("d-4", "hello"))
    primary, secondary = contact_of(engine, "d-4").id, contact_of(engine, "d-3").id
    engine.process(event("contacts.merge", contact={"id": primary}, actor="u",
                         secondary_contact_id=secondary, minutes=5))
    assert date_timers(engine) == {f"date:remind:{primary}": utc(2027, 3, 27, 8)}


def schedule_timer(engine: Engine):
    with engine.store.read() as tx:
        [timer] = tx.schedule_timers()
    return timer


def ledger(engine: Engine, pattern: str) -> int:
    with engine.store.read() as tx:
        return tx.connection.execute(text(
            "SELECT count(*) FROM processed_events WHERE event_id LIKE :p"), {"p": pattern}
        ).scalar_one()


def test_a_schedule_runs_in_batches_that_resume_after_a_restart_each_contact_once(
        make_engine):
    engine = make_engine(SCHEDULED)
    for n in range(5):
        engine.process(message(f"s-{n}", "vip" if n % 2 == 0 else "hello"))
    engine.arm_schedules(T0)  # Monday 2026-11-02 at 10:00 in Paris
    due = utc(2026, 11, 9, 7)  # the next Monday at 08:00 in Paris
    assert schedule_timer(engine).due_at == due
    assert list(engine.fire_all_due(due - timedelta(minutes=1))) == []
    first = engine.run_schedule_batch(due, limit=2)
    assert first is not None and len(first) == 2
    progress = schedule_timer(engine)
    assert progress.due_at == due and progress.payload["after"] == contact_of(engine, "s-1").id

    restarted = make_engine(SCHEDULED)  # a new process: the progress is in the database
    rest = list(restarted.fire_all_due(due + timedelta(minutes=3), limit=2))
    assert len(rest) == 3
    runs = [outcome for _, outcome in first + rest]
    assert sorted(r.contact_id for r in runs) == [contact_of(engine, f"s-{n}").id for n in range(5)]
    assert [r.fired for r in runs].count(["monday-vip-check"]) == 3
    assert {n for n in range(5) if "checked" in tags_of(engine, f"s-{n}")} == {0, 2, 4}
    assert schedule_timer(engine).due_at == utc(2026, 11, 16, 7)
    assert schedule_timer(engine).payload["after"] == 0
    assert list(restarted.fire_all_due(due + timedelta(hours=1))) == []  # never twice
    assert ledger(engine, "schedule:monday-vip-check@%") == 5


def test_a_schedule_on_open_conversations_runs_for_those_only_on_them(make_engine):
    engine = make_engine(HOURS + """
rules:
  - id: nudge-open
    trigger: {event: schedule, cron: "0 8 * * *", applies_to: open_conversations}
    actions: [{assign: {team: follow-up}}]
""")
    engine.process(message("o-1", "hello"))
    engine.process(message("o-2", "hello"))
    engine.process(event("conversation.close", contact={"id": contact_of(engine, "o-2").id},
                         actor="u", minutes=1))
    engine.arm_schedules(T0)
    [(_, result)] = engine.fire_all_due(utc(2026, 11, 3, 7))
    assert result.contact_id == contact_of(engine, "o-1").id
    assert result.conversation_id is not None and result.fired == ["nudge-open"]


def test_a_schedule_skips_contacts_merged_away_and_fires_missed_times_once(make_engine):
    engine = make_engine(SCHEDULED)
    engine.process(message("m-1", "vip"))
    engine.process(message("m-2", "vip"))
    kept, gone = contact_of(engine, "m-1").id, contact_of(engine, "m-2").id
    engine.process(event("contacts.merge", contact={"id": kept}, actor="u",
                         secondary_contact_id=gone, minutes=1))
    engine.arm_schedules(T0)
    late = utc(2026, 12, 1)  # four Mondays were missed
    [(_, result)] = engine.fire_all_due(late)
    assert result.contact_id == kept and result.fired == ["monday-vip-check"]
    assert schedule_timer(engine).due_at == utc(2026, 12, 7, 7)


def test_a_schedule_whose_cron_changed_is_set_again_and_one_removed_is_dropped(
        make_engine):
    engine = make_engine(SCHEDULED)
    engine.arm_schedules(T0)
    assert schedule_timer(engine).due_at == utc(2026, 11, 9, 7)
    make_engine(SCHEDULED.replace("0 8 * * mon", "0 8 * * tue")).arm_schedules(T0)
    assert schedule_timer(engine).due_at == utc(2026, 11, 3, 7)
    make_engine(SCHEDULED.replace("0 8 * * mon", "0 8 * * tue").replace(
        "applies_to: contacts", "applies_to: open_conversations")).arm_schedules(T0)
    assert schedule_timer(engine).payload["applies_to"] == "open_conversations"
    make_engine(HOURS + "rules: []\n").arm_schedules(T0)
    with engine.store.read() as tx:
        assert tx.schedule_timers() == []


def test_a_cron_that_never_fires_is_an_error_at_its_place(write_rules):
    with pytest.raises(RuleSetInvalid) as caught:
        load_rule_set([write_rules("""
rules:
  - id: never
    trigger: {event: schedule, cron: "0 9 31 4 *", applies_to: contacts}
    actions: [{add_tag: x}]
""")])
    [error] = caught.value.errors
    assert (error.rule_id, error.path, error.line) == ("never", "trigger/cron", 4)
    assert "can never fire" in error.message and "0 9 31 4 *" in error.message
    assert error.hint and "day of the month" in error.hint


def test_a_date_field_not_under_contact_fields_is_an_error(write_rules):
    with pytest.raises(RuleSetInvalid) as caught:
        load_rule_set([write_rules("""
rules:
  - id: on-a-date
    trigger: {event: date, field: conversation.opened_at}
    actions: [{add_tag: x}]
""")])
    assert any(error.rule_id == "on-a-date" and error.path == "trigger/field"
               for error in caught.value.errors), caught.value


def test_a_date_field_set_elsewhere_to_a_value_that_is_not_a_date_is_a_warning(write_rules):
    rules = load_rule_set([write_rules(DATED % "09:00" + """
  - id: forget-renewal
    trigger: {event: message.received}
    conditions: ["message.text == 'cancel'"]
    actions: [{set_field: {name: renewal_date, value: "cancelled"}}]
  - id: plan-renewal
    trigger: {event: message.received}
    conditions: ["message.text == 'renew'"]
    actions: [{set_field: {name: renewal_date, value: "2027-01-31"}}]
""")])
    [warning] = [w for w in rules.warnings if "not a date" in w.message]
    assert (warning.rule_id, warning.path) == ("forget-renewal", "actions/0/set_field/value")
    assert "'remind'" in warning.message and warning.hint


def test_two_date_rules_or_two_schedules_never_run_in_one_firing(write_rules):
    rules = load_rule_set([write_rules(HOURS + """
rules:
  - id: first-date
    trigger: {event: date, field: contact.fields.renewal_date}
    actions: [{set_field: {name: stage, value: renewal}}]
  - id: second-date
    trigger: {event: date, field: contact.fields.birthday}
    actions: [{set_field: {name: stage, value: birthday}}]
  - id: first-schedule
    trigger: {event: schedule, cron: "0 8 * * *", applies_to: contacts}
    actions: [{set_field: {name: stage, value: morning}}]
  - id: second-schedule
    trigger: {event: schedule, cron: "0 20 * * *", applies_to: contacts}
    actions: [{set_field: {name: stage, value: evening}}]
""")])
    assert not [w for w in rules.warnings if "the later one wins" in w.message], rules.warnings


@pytest.mark.parametrize(("trigger", "wrong"), [
    ("{event: message.received, cron: '0 8 * * *'}", "cron"),
    ("{event: schedule, cron: '0 8 * * *'}", "applies_to"),
    ("{event: message.received, field: contact.fields.x}", "field"),
    ("{event: date, field: contact.fields.x, channels: [webchat]}", "channels"),
])
def test_the_options_of_date_and_schedule_belong_to_them(write_rules, trigger, wrong):
    with pytest.raises(RuleSetInvalid) as caught:
        load_rule_set([write_rules(f"""
rules:
  - id: r
    trigger: {trigger}
    actions: [{{add_tag: x}}]
""")])
    assert wrong in str(caught.value)
