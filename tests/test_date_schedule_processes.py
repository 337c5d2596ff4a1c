"""Date and schedule triggers across real ``rules-engine tick`` processes: one killed with
SIGKILL in the middle of a schedule's firing, then four started at the same instant; each
contact's date and each schedule firing happen exactly once, at 08:00 and 09:00 in Paris
on both sides of the spring daylight-saving change (2027-03-28)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select, text

from rules_engine.store import tables

from .test_timer_processes import (
    cli,
    environment,
    ticks_waiting,
    wait_for_dead_transactions,
)

RULES = """
business_hours:
  timezone: Europe/Paris
  weekly: {mon: ["09:00-18:00"]}
rules:
  - id: keep-renewal-date
    trigger: {event: message.received}
    actions: [{set_field: {name: renewal_date, expr: "message.text[8:]"}}]
  - id: remind
    trigger: {event: date, field: contact.fields.renewal_date, offset: -3d, at: "09:00"}
    actions: [{add_tag: reminded}]
  - id: monday-check
    trigger: {event: schedule, cron: "0 8 * * mon", applies_to: contacts}
    actions: [{set_field: {name: checked_at, expr: "event.timestamp"}}]
"""
CONTACTS = 450  # three batches of the tick's 200
LINE = re.compile(r"^((?:schedule|date):[\w:-]+) \(due ([^)]+)\): (\w+): (.*)$")


def ingest(database_url: str, rules: Path, folder: Path) -> None:
    """One message per contact on 2027-03-20: each keeps renewal date 2027-04-02, so its
    reminder is due on 2027-03-30 at 09:00 in Paris (summer time: 07:00 UTC)."""
    events = folder / "events.jsonl"
    with events.open("w", encoding="utf-8") as out:
        for n in range(CONTACTS):
            out.write(json.dumps({
                "id": f"msg-{n}", "type": "message.received", "channel": "webchat",
                "timestamp": datetime(2027, 3, 20, 10, tzinfo=UTC).isoformat(),
                "contact": {"external_id": f"person-{n}"},
                "message": {"text": "renewal 2027-04-02"}}) + "\n")
    done = subprocess.run(cli(database_url, rules, "ingest", str(events)), check=False,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and f"{CONTACTS} applied" in done.stdout, done.stderr


def tick(database_url: str, rules: Path, now: str) -> list[tuple[str, str, str, str]]:
    done = subprocess.run(cli(database_url, rules, "tick", "--now", now), check=False,
                          capture_output=True, text=True, timeout=120, env=environment())
    assert done.returncode == 0, done.stderr
    return lines_of(done.stdout)


def lines_of(output: str) -> list[tuple[str, str, str, str]]:
    return [m.groups() for m in map(LINE.match, output.splitlines()) if m]


def audit(store) -> Counter[str]:
    """What the firings did, read with SQL: the ledger's firings by kind and due time, the
    contacts' last check stamps and their reminders."""
    with store.read() as tx:
        run = tx.connection.execute
        fired = run(text("SELECT event_id FROM processed_events WHERE event_id LIKE "
                         "'schedule:%' OR event_id LIKE 'timer:date:%'")).scalars()
        f = tables.contact_fields
        stamps = run(select(f.c.value).where(f.c.name == "checked_at")).scalars()
        tags = run(text("SELECT tag FROM contact_tags WHERE tag = 'reminded'")).scalars()
        return Counter([*(f"{event_id.split(':')[0]} {event_id.split('@')[1][:25]}"
                          for event_id in fired),
                        *(f"stamped {stamp}" for stamp in stamps),
                        *tags])


def test_date_and_schedule_firings_survive_a_killed_tick_and_concurrent_ticks_exactly_once(
        database_url, store, write_rules, tmp_path):
    rules = write_rules(RULES)
    ingest(database_url, rules, tmp_path)
    assert tick(database_url, rules, "2027-03-21T00:00:00+00:00") == []  # arms the schedule

    # Monday 2027-03-22 at 08:00 in Paris (winter time: 07:00 UTC); killed after a batch
    killed = subprocess.Popen(cli(database_url, rules, "tick", "--now", "2027-03-22T07:00:00+00:00"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=environment(), start_new_session=True)
    assert killed.stdout is not None
    printed = [killed.stdout.readline()]  # the first batch committed: its lines come
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    wait_for_dead_transactions(store)
    assert LINE.match(printed[0]), printed
    rest = tick(database_url, rules, "2027-03-22T07:00:00+00:00")
    assert 0 < len(rest) < CONTACTS and {status for _, _, status, _ in rest} == {"applied"}
    assert tick(database_url, rules, "2027-03-22T07:00:00+00:00") == []

    # after the change to summer time: the next Monday at 08:00 is 06:00 UTC
    assert tick(database_url, rules, "2027-03-29T05:59:00+00:00") == []
    with ticks_waiting(database_url, rules, tmp_path, 4, now="2027-03-30T07:00:00+00:00") as (
            release, ticks):
        release()
        outputs = [t.communicate(timeout=120) for t in ticks]
    assert [t.returncode for t in ticks] == [0] * 4, [err for _, err in outputs]
    together = [line for out, _ in outputs for line in lines_of(out)]
    assert sorted({(timer.split(":")[0], due) for timer, due, _, _ in together}) == [
        ("date", "2027-03-30T07:00:00+00:00"), ("schedule", "2027-03-29T06:00:00+00:00")]
    assert {status for _, _, status, _ in together} == {"applied"}  # none a duplicate
    assert len(together) == 2 * CONTACTS
    assert tick(database_url, rules, "2027-04-04T00:00:00+00:00") == []

    assert audit(store) == {
        "schedule 2027-03-22T07:00:00+00:00": CONTACTS,
        "schedule 2027-03-29T06:00:00+00:00": CONTACTS,
        "timer 2027-03-30T07:00:00+00:00": CONTACTS,
        "stamped 2027-03-29T06:00:00+00:00": CONTACTS, "reminded": CONTACTS}
