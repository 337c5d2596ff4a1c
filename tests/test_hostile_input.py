"""Each request that once got a 500 (or hung a worker), as its minimal body: now a 4xx that
names the problem, or an item skipped, and never a 5xx."""
from __future__ import annotations

import http.client
import json
import time

import pytest

from connectors import create_app

from . import webhook_payloads as p
from .test_server import start_server, stop_server

API = {"Authorization": f"Bearer {p.SECRETS['api_token']}"}


@pytest.fixture
def client(tmp_path, clean_environment, database_url):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text("rules: []\n", "utf-8")
    app = create_app({**p.SECRETS, "rules_dir": str(rules), "database_url": database_url,
                      "max_body_bytes": 64_000})
    yield app.test_client()
    app.extensions["rules_engine"].store.dispose()


def signed(client, route: str, raw: bytes):
    return client.post(route, data=raw, content_type="application/json",
                       headers=p.signed_headers(route, raw))


def event(**fields) -> dict:
    return {"id": "evt-h", "type": "message.received", "channel": "webchat",
            "contact": {"external_id": "web-h"}, "message": {"text": "hi"}, **fields}


@pytest.mark.parametrize("raw, fragment", [
    (b"[" * 1000 + b"]" * 1000, "nested more than 64 levels"),
    (b'{"id": ' + b"1" * 5000 + b"}", "5000 digits"),
    (json.dumps(event()).replace('"hi"', "NaN").encode(), "NaN"),
    (json.dumps(event()).replace('"hi"', "1e999").encode(), "out of range"),
    (json.dumps(event()).replace('"web-h"', '"\\ud800"').encode(), "surrogate"),
    (b"\xff\xfe{}", "not UTF-8"),
])
def test_a_body_the_decoder_refuses_is_a_400_on_every_webhook(client, raw, fragment):
    for route in ("/webhooks/events", "/webhooks/facebook", "/webhooks/viber",
                  "/webhooks/whatsapp", "/webhooks/telegram", "/webhooks/dialogflow",
                  "/webhooks/dialogflow-cx"):
        response = signed(client, route, raw)
        assert response.status_code == 400, (route, response.json)
        assert fragment in response.json["error"]["message"]


@pytest.mark.parametrize("fields, path", [
    ({"timestamp": "9999-12-31T23:59:59-23:59"}, "timestamp"),
    ({"timestamp": "0001-01-01T00:00:00+00:00"}, "timestamp"),
    ({"contact": {"id": 9223372036854775808}}, "contact/id"),
    ({"contact": {"id": 2147483648}}, "contact/id"),
    ({"type": "conversation.open", "contact": {"id": 1}, "actor": "u",
      "params": {"team": {"a": 1}}}, "params/team"),
    ({"type": "conversation.close", "contact": {"id": 1}, "actor": "u",
      "params": {"note": ["x"]}}, "params/note"),
    ({"type": "conversation.open", "contact": {"id": 1}, "actor": "u",
      "params": {"assignee": "x" * 201}}, "params/assignee"),
    ({"type": "contacts.merge", "contact": {"id": 1}, "actor": "u",
      "secondary_contact_id": 9223372036854775808}, "secondary_contact_id"),
])
def test_an_event_out_of_range_or_of_the_wrong_type_is_a_422_naming_it(client, fields, path):
    body = event(**fields)
    if body["type"] != "message.received":
        body.pop("message")
    response = signed(client, "/webhooks/events", json.dumps(body).encode())
    assert response.status_code == 422 and response.json["error"]["path"] == path


@pytest.mark.parametrize("timestamp", [1e20, 10**20, -1, 0, "soon"])
def test_platform_timestamps_out_of_range_skip_the_item_only(client, timestamp):
    bad = p.fb_message("PSID-H1", "m_bad", "hello")
    bad["timestamp"] = timestamp
    response = signed(client, "/webhooks/facebook", p.encode(p.messenger(bad, p.fb_message(
        "PSID-H2", "m_good", "hello"))))
    assert response.status_code == 200
    assert [r["event_id"] for r in response.json["results"]] == ["facebook:m_good"]
    assert response.json["skipped"][0]["path"] == "entry/0/messaging/0/timestamp"
    viber = p.viber_message("vb-h=", 7, "hi")
    viber["timestamp"] = timestamp
    response = signed(client, "/webhooks/viber", p.encode(viber))
    assert response.status_code == 200 and response.json["results"] == []


@pytest.mark.parametrize("contact_id", [10**12, 2**63, -5])
def test_a_dialogflow_contact_id_past_the_database_range_is_skipped(client, contact_id):
    body = p.dialogflow_es("r-h", "s-h", payload={"contact_id": contact_id})
    response = client.post("/webhooks/dialogflow", data=p.encode(body),
                           content_type="application/json",
                           headers=p.signed_headers("/webhooks/dialogflow", b""))
    assert response.status_code == 200
    [skipped] = response.json["payload"]["rules_engine"]["skipped"]
    assert skipped["path"] == "originalDetectIntentRequest/payload/contact_id"
    assert client.get("/api/events/dialogflow:r-h/trace", headers=API).status_code == 404


@pytest.mark.parametrize("url, status", [
    ("/api/conversations/9223372036854775808", 404),
    ("/api/conversations/2147483648", 404),
    ("/api/contacts/99999999999/conversations", 404),
    ("/api/outbox?limit=²", 400),
    ("/api/outbox?limit=-1", 400),
    ("/api/outbox?limit=99999999999999999999", 400),
    ("/api/reports/conversations?until=9999-12-31", 422),
    ("/api/reports/conversations?since=0001-01-02", 422),
    ("/api/reports/conversations?since=2026-11-30&until=2026-11-01", 422),
    ("/dashboard?since=0001-01-02&until=9999-12-30", 422),
    ("/dashboard?since=2000-01-01&until=2026-01-01", 422),
])
def test_urls_out_of_range_are_refused_at_once(client, url, status):
    started = time.process_time()
    response = client.get(url, headers=API)
    assert response.status_code == status and response.is_json
    assert time.process_time() - started < 1


def test_merge_ids_past_the_range_are_a_400(client):
    response = client.post("/api/contacts/1/merge", json={"user": "u", "secondary_id": 2**63},
                           headers=API)
    assert response.status_code == 400 and response.json["error"]["path"] == "secondary_id"


def test_a_chunked_body_over_the_limit_is_a_413_not_a_bad_signature(database_url, tmp_path):
    process, base = start_server(database_url, 1, tmp_path / "server.log")
    try:
        host, port = base.removeprefix("http://").split(":")
        body = p.encode(event(message={"text": "x" * 2_000_000}))
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        connection.putrequest("POST", "/webhooks/events")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Transfer-Encoding", "chunked")
        connection.putheader("X-Signature-256",
                             "sha256=" + p.hmac_hex(p.SECRETS["webhook_secret"], body))
        connection.endheaders()
        for start in range(0, len(body), 65536):
            chunk = body[start:start + 65536]
            try:
                connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (BrokenPipeError, ConnectionResetError):
                break  # the server answered before reading everything
        else:
            connection.send(b"0\r\n\r\n")
        response = connection.getresponse()
        assert response.status == 413
        assert json.loads(response.read())["error"]["code"] == "request_entity_too_large"
    finally:
        stop_server(process)


def whatsapp_text(name: str, text: str, message_id: str) -> dict:
    """A WhatsApp Cloud API text message notification (Meta's documented shape)."""
    return {"object": "whatsapp_business_account", "entry": [{"id": "WABA_ID", "changes": [{
        "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001111", "phone_number_id": "PHONE_ID"},
            "contacts": [{"profile": {"name": name}, "wa_id": "16315551181"}],
            "messages": [{"from": "16315551181", "id": message_id, "timestamp": "1764061200",
                          "type": "text", "text": {"body": text}}]}}]}]}


def test_a_message_with_nul_characters_is_kept_on_every_database(tmp_path, clean_environment,
                                                                database_url):
    rules = tmp_path / "rules-nul"
    rules.mkdir()
    (rules / "rules.yaml").write_text("""rules:
  - id: tag-world
    trigger: {event: message.received}
    conditions: ["contains(message.text, 'world')"]
    actions: [{set_field: {name: said, expr: message.text}}]
""", "utf-8")
    app = create_app({**p.SECRETS, "rules_dir": str(rules), "database_url": database_url})
    client = app.test_client()
    body = p.encode(whatsapp_text("Ana\u0000Lima", "hello\u0000world", "wamid.NUL1"))
    answer = signed(client, "/webhooks/whatsapp", body)
    assert answer.status_code == 200, answer.json
    assert answer.json["skipped"] == []
    [result] = answer.json["results"]
    assert result["status"] == "applied"
    contact = client.get("/api/contacts?channel=whatsapp&external_id=16315551181",
                         headers=API).json[0]
    assert contact["name"] == "Ana\N{SYMBOL FOR NULL}Lima"
    assert result["fired"] == ["tag-world"]  # the rules read the text as it came
    with app.extensions["rules_engine"].store.read() as tx:
        assert tx.fields(contact["id"]) == {"said": "hello\N{SYMBOL FOR NULL}world"}
    again = signed(client, "/webhooks/whatsapp", body)
    assert again.json["results"][0]["status"] == "duplicate"
    app.extensions["rules_engine"].store.dispose()


def test_a_value_the_database_refuses_is_a_4xx_without_the_database_s_words(client):
    answer = client.post("/webhooks/events", data=(raw := p.encode(event(
        contact={"external_id": "web-long", "name": "n" * 5000}))),
        content_type="application/json", headers=p.signed_headers("/webhooks/events", raw))
    assert answer.status_code in (400, 422)
    text = json.dumps(answer.json).lower()
    assert "psycopg" not in text and "sqlalchemy" not in text and "character varying" not in text
