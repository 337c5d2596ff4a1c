"""The command line on the example rules and demo events: ingest, simulate, validate."""
from __future__ import annotations

import json
from pathlib import Path

from rules_engine import Store

from .test_validation import REPO, run_cli


def test_ingest_the_demo_events_opens_and_closes_every_way(database_url):
    url = database_url
    demo = str(REPO / "rules" / "events" / "demo.jsonl")
    status, output = run_cli("--rules", str(REPO / "rules"), "--database-url", url, "ingest", demo)
    assert status == 0, output
    assert "10 applied, 1 duplicate(s) skipped, 0 rejected" in output
    store = Store(url)
    with store.read() as tx:
        rows = [c for contact_id in (1, 2, 3) for c in tx.conversations_of(contact_id)]
    assert {str(c.open_source) for c in rows} == {"incoming_message", "user", "welcome_event"}
    assert {str(c.close_source) for c in rows if c.close_source} == {
        "user", "automation", "dialogflow", "contact_merge"}
    # running the same file again applies nothing twice
    status, output = run_cli("--rules", str(REPO / "rules"), "--database-url", url, "ingest", demo)
    assert "0 applied, 11 duplicate(s) skipped" in output


def test_ingest_reports_bad_lines_with_their_number_and_keeps_the_good_ones(tmp_path, database_url):
    events = tmp_path / "events.jsonl"
    events.write_text(
        '{"id": "a", "type": "message.received", "channel": "viber", '
        '"contact": {"external_id": "u1"}, "message": {"text": "hi"}}\n'
        "not json\n"
        '{"id": "b", "type": "message.received", "channel": "viber", "contact": {"external_id": "u1"}}\n',
        "utf-8")
    url = database_url
    status, output = run_cli("--rules", str(REPO / "rules"), "--database-url", url, "ingest",
                             str(events))
    assert status == 1
    assert f"{events}:2: rejected: not JSON" in output
    assert f"{events}:3: rejected: missing required key 'message'" in output
    assert "1 applied" in output


def test_simulate_prints_why_and_writes_nothing(tmp_path, database_url):
    event_file = tmp_path / "event.json"
    event_file.write_text(json.dumps({
        "id": "sim-1", "type": "message.received", "channel": "facebook",
        "contact": {"external_id": "psid-9"}, "message": {"text": "thanks"}}), "utf-8")
    url = database_url
    Store(url).dispose()
    status, output = run_cli("--rules", str(REPO / "rules"), "--database-url", url, "simulate",
                             str(event_file))
    assert status == 0
    assert "nothing was written." in output
    assert "[FIRED] close-on-thanks" in output
    assert "[no] vip-facebook-to-susan" in output and "'vip' in contact.tags  -> false" in output
    with Store(url).read() as tx:
        assert tx.find_contact_by_identity("facebook", "psid-9") is None


def test_invalid_rules_stop_ingest_with_the_errors(tmp_path, database_url):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "bad.yaml").write_text("rules:\n  - id: x\n", "utf-8")
    status, output = run_cli("--rules", str(rules), "--database-url",
                             database_url, "ingest", str(Path(__file__)))
    assert status == 1
    assert "the rules are invalid" in output and "bad.yaml:2:" in output
