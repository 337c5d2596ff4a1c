"""Rules run by hand: ``trigger: {event: manual}``, run on one contact through the users' API
(``POST /api/rules/{id}/run``) or ``rules-engine run``, recorded as the person who ran it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from . import webhook_payloads as p

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def app(example_app):
    return example_app


@pytest.fixture
def client(app):
    return app.test_client()


def api(client, path: str, body: dict, **headers: str):
    return client.post(path, json=body, headers={
        "Authorization": f"Bearer {p.SECRETS['api_token']}", **headers})


def contact_with_conversation(client) -> int:
    body = p.encode(p.messenger(p.fb_message("PSID-M", "m_m", "hi")))
    answer = client.post("/webhooks/facebook", data=body, content_type="application/json",
                         headers=p.signed_headers("/webhooks/facebook", body))
    assert answer.status_code == 200, answer.json
    return int(answer.json["results"][0]["contact_id"])


def test_an_agent_runs_a_manual_rule_on_a_contact_and_the_trace_names_them(client):
    contact_id = contact_with_conversation(client)
    ran = api(client, "/api/rules/escalate-by-hand/run", {"contact_id": contact_id, "user": "susan"})
    assert ran.status_code == 200, ran.json
    assert ran.json["fired"] == ["escalate-by-hand"]
    conversation = client.get(f"/api/conversations/{ran.json['conversation_id']}", headers={
        "Authorization": f"Bearer {p.SECRETS['api_token']}"}).json
    assert conversation["team"] == "supervisors"
    trace = client.get(f"/api/events/{ran.json['event_id']}/trace", headers={
        "Authorization": f"Bearer {p.SECRETS['api_token']}"}).json
    assert trace["actor"] == "susan" and trace["type"] == "manual"
    assert trace["channel"] == "api" and trace["steps"][0]["channel"] == "facebook"


def test_a_rules_note_is_listed_by_the_api_and_on_the_dashboard(client):
    contact_id = contact_with_conversation(client)
    ran = api(client, "/api/rules/escalate-by-hand/run",
              {"contact_id": contact_id, "user": "<b>susan</b>"})
    assert ran.status_code == 200, ran.json
    headers = {"Authorization": f"Bearer {p.SECRETS['api_token']}"}
    notes = client.get(f"/api/conversations/{ran.json['conversation_id']}/notes", headers=headers)
    assert notes.status_code == 200
    [note] = notes.json
    assert note["text"] == "Escalated by <b>susan</b> from the inbox"
    assert note["author"] == "rule 'escalate-by-hand'" and note["event_id"] == ran.json["event_id"]
    page = client.get("/dashboard", headers=headers).get_data(as_text=True)
    assert "Escalated by &lt;b&gt;susan&lt;/b&gt; from the inbox" in page  # escaped
    assert client.get("/api/conversations/999999/notes", headers=headers).status_code == 404


def test_an_unknown_rule_is_404_and_a_rule_not_run_by_hand_is_refused_applying_nothing(client):
    contact_id = contact_with_conversation(client)
    key = {"Idempotency-Key": "run-1"}
    missing = api(client, "/api/rules/no-such-rule/run", {"contact_id": contact_id, "user": "susan"}, **key)
    assert missing.status_code == 404 and "no rule 'no-such-rule'" in missing.json["error"]["message"]
    refused = api(client, "/api/rules/close-on-thanks/run", {"contact_id": contact_id, "user": "susan"}, **key)
    assert refused.status_code in (400, 422), refused.json
    assert "not run by hand" in refused.json["error"]["message"]
    assert "manual" in refused.json["error"]["hint"]
    # nothing was recorded: the same key runs the right rule afterwards
    ran = api(client, "/api/rules/escalate-by-hand/run", {"contact_id": contact_id, "user": "susan"}, **key)
    assert ran.status_code == 200 and ran.json["status"] == "applied"


@pytest.mark.parametrize("body, path", [
    ({"user": "susan"}, "contact_id"),
    ({"user": "susan", "contact_id": "7"}, "contact_id"),
    ({"user": "susan", "contact_id": 1, "params": [1]}, "params"),
    ({"user": "susan", "contact_id": 1, "params": {"rule_id": "other"}}, "params"),
])
def test_a_malformed_run_is_400_with_its_place(client, body, path):
    answer = api(client, "/api/rules/escalate-by-hand/run", body)
    assert answer.status_code == 400 and answer.json["error"]["path"] == path


def test_a_run_on_a_contact_that_does_not_exist_is_404(client):
    answer = api(client, "/api/rules/escalate-by-hand/run", {"contact_id": 999999, "user": "susan"})
    assert answer.status_code == 404


def test_the_command_line_runs_a_manual_rule(tmp_path):
    url = f"sqlite:///{tmp_path / 'run.db'}"

    def cli(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "rules_engine.cli", "--rules", str(REPO / "rules"),
                               "--database-url", url, *arguments], capture_output=True, text=True,
                              cwd=tmp_path)

    events = tmp_path / "events.jsonl"
    events.write_text('{"id": "e1", "type": "message.received", "channel": "viber", '
                      '"timestamp": "2026-12-01T10:00:00Z", "contact": {"external_id": "v-1"}, '
                      '"message": {"text": "hello"}}\n', "utf-8")
    assert cli("db", "upgrade").returncode == 0
    assert cli("ingest", str(events)).returncode == 0
    ran = cli("run", "escalate-by-hand", "--contact", "1", "--as", "susan")
    assert ran.returncode == 0, ran.stderr
    assert "escalate-by-hand" in ran.stdout and "fired" in ran.stdout
    again = cli("run", "close-on-thanks", "--contact", "1")
    assert again.returncode != 0 and "not run by hand" in again.stderr
    missing = cli("run", "escalate-by-hand", "--contact", "42")
    assert missing.returncode != 0 and "contact 42 does not exist" in missing.stderr
