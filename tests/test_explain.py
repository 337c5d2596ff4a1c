"""Why / why not: ``rules-engine explain`` on stored traces, and trace retention."""
from __future__ import annotations

import json
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import select, update

from rules_engine import Engine, load_rule_set, parse_event
from rules_engine.store.tables import event_traces
from rules_engine.trace.forms import read_trace

from .conftest import message
from .test_validation import run_cli

RULES = """
rules:
  - id: vip-route
    name: VIPs go to Susan
    trigger: {event: message.received}
    conditions:
      all:
        - conversation.is_open
        - "'vip' in contact.tags"
    actions: [{assign: {user: susan}}]
    priority: 10
  - id: refunds
    trigger: {event: message.received}
    conditions: ["contains(message.text, 'refund')"]
    actions: [{add_tag: {tag: refund}}]
  - id: viber-only
    trigger: {event: message.received, channels: [viber]}
    actions: [{add_tag: {tag: viber}}]
"""


def test_explain_names_the_condition_that_stopped_a_rule(tmp_path, store, database_url):
    rules_dir = tmp_path / "explained-rules"
    rules_dir.mkdir()
    (rules_dir / "rules.yaml").write_text(textwrap.dedent(RULES), "utf-8")
    engine = Engine(store, load_rule_set([rules_dir]))
    engine.process(message("psid-1", "I want a refund", id="evt-explain"))
    status, output = run_cli("--rules", str(rules_dir), "--database-url", database_url,
                             "explain", "evt-explain")
    assert status == 0
    lines = output.splitlines()
    assert lines[0].startswith("event evt-explain: message.received on facebook")
    vip = next(i for i, line in enumerate(lines) if "[no] vip-route" in line)
    assert "false: conditions/all/1" in lines[vip]
    assert "conditions/all/0: conversation.is_open  -> true" in lines[vip + 1]
    assert "conditions/all/1: 'vip' in contact.tags  -> false" in lines[vip + 2]
    assert any("[FIRED] refunds" in line for line in lines)
    assert any("actions/0 add_tag: applied (added refund)" in line for line in lines)
    assert any("[not considered] viber-only" in line and "(viber) leave out facebook" in line
               for line in lines)
    status, output = run_cli("--database-url", database_url, "explain", "evt-explain",
                             "--format", "json")
    assert json.loads(output)["fired"] == ["refunds"]


def test_explain_an_unknown_event(database_url, store):
    status, output = run_cli("--database-url", database_url, "explain", "nope")
    assert status == 1 and "no trace for event 'nope'" in output


def test_old_traces_are_pruned_and_the_ledger_stays(make_engine, store, database_url):
    engine = make_engine()
    engine.process(message("psid-1", "old", id="old-event"))
    engine.process(message("psid-1", "new", id="new-event"))
    with store.transaction() as tx:
        tx.connection.execute(
            update(event_traces).where(event_traces.c.event_id == "old-event")
            .values(recorded_at=datetime.now(timezone.utc) - timedelta(days=40)))
    status, output = run_cli("--database-url", database_url, "prune-traces", "--keep-days", "30")
    assert status == 0 and output.startswith("pruned 1 trace(s)")
    with store.read() as tx:
        assert read_trace(tx, "old-event") is None and read_trace(tx, "new-event") is not None
        assert tx.is_event_processed("old-event")  # a replay is still recognised
    assert engine.process(message("psid-1", "old", id="old-event")).status == "duplicate"


EXAMPLE_RULES = Path(__file__).resolve().parent.parent / "rules"


def test_the_stored_trace_reads_back_as_the_trace_the_event_returned(store):
    """Compact on disk (rule summaries, condition texts and arguments once per rule set),
    the same full trace when read back, for every event of a varied run."""
    engine = Engine(store, load_rule_set([EXAMPLE_RULES]))
    results = [engine.process(message(f"round-trip-{n % 3}", text, id=f"rt-{n}"))
               for n, text in enumerate(["hello", "I want a refund", "thanks", "hi", "thank you!",
                                         "refund please", "ok"])]
    assert any(r.fired for r in results) and any(r.changes for r in results)
    with store.read() as tx:
        for result in results:
            assert read_trace(tx, result.event_id) == json.loads(json.dumps(result.trace))


def test_a_trace_stays_explained_after_its_rules_change(tmp_path, store, database_url):
    """The catalog of the version that processed the event explains it, whatever the rule
    files say now."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(textwrap.dedent("""\
        rules:
          - id: tag-refunds
            trigger: {event: message.received}
            conditions: ["contains(message.text, 'refund')"]
            actions: [{add_tag: refund}]
        """), "utf-8")
    Engine(store, load_rule_set([rules])).process(message("later", "a refund?", id="before-edit"))
    (rules / "r.yaml").write_text("rules: []\n", "utf-8")
    status, output = run_cli("--rules", str(rules), "--database-url", database_url,
                             "explain", "before-edit")
    assert status == 0, output
    assert "tag-refunds" in output and "contains(message.text, 'refund')" in output
    assert "r.yaml:2" in output and "add_tag" in output


def test_the_median_stored_trace_of_the_example_rules_is_at_most_1_kb(store, tmp_path):
    """The issue's bound, on the events bench/ingest_floor.py generates."""
    import statistics
    import sys

    sys.path.insert(0, str(EXAMPLE_RULES.parent / "bench"))
    from ingest_floor import write_events

    events_file = tmp_path / "events.jsonl"
    write_events(events_file, 1500, 150)  # ten messages a contact, as the benchmark
    engine = Engine(store, load_rule_set([EXAMPLE_RULES]))
    for line in events_file.read_text("utf-8").splitlines():
        engine.process(parse_event(json.loads(line)))
    with store.read() as tx:
        sizes = [len(json.dumps(row.trace, separators=(",", ":")))
                 for row in tx.connection.execute(select(event_traces.c.trace))]
    assert len(sizes) == 1500
    assert statistics.median(sizes) <= 1024, statistics.median(sizes)


def test_a_trace_stored_whole_by_an_older_release_reads_back_as_it_was(store):
    """Before the compact form, traces were stored whole (rule summaries in every event);
    an upgraded database still explains those events."""
    whole = {"event_id": "old-1", "type": "message.received", "channel": "facebook",
             "contact_id": 1, "conversation_id": None, "timestamp": "2026-01-01T00:00:00+00:00",
             "received_at": "2026-01-01T00:00:01+00:00", "ruleset_version": "0123456789ab",
             "steps": [{"event": "message.received", "depth": 0, "channel": "facebook",
                        "contact_id": 1, "conversation_id": None, "rules": [
                            {"rule_id": "r", "file": "rules/a.yaml", "line": 3, "priority": 0,
                             "conditions": [{"path": "conditions/0", "expr": "true",
                                             "result": True}],
                             "actions": [], "result": "fired"}]}],
             "changes": [], "fired": ["r"],
             "depth_bound": {"max_depth": 5, "reached": False, "dropped": []}}
    received = datetime(2026, 1, 1, 0, 0, 1, tzinfo=timezone.utc)
    with store.transaction() as tx:
        tx.record_event("old-1", "message.received", "facebook", received, contact_id=1)
        tx.connection.execute(event_traces.insert().values(event_id="old-1", trace=whole,
                                                           recorded_at=received))
    with store.read() as tx:
        assert read_trace(tx, "old-1") == whole
