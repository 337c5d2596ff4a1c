"""Every endpoint of the webhook app through Flask's test client, on a real SQLite store."""
from __future__ import annotations

import json
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from connectors import ConfigError, create_app

from . import webhook_payloads as p

REPO = Path(__file__).resolve().parent.parent
TEST_RULES = """\
rules:
  - id: intent-handover
    trigger: {event: dialogflow.fulfillment}
    conditions: ["intent.display_name == 'talk.to.human'"]
    actions: [{assign: {team: support}}]
  - id: close-on-thanks
    trigger: {event: message.received}
    conditions: ["lower(message.text) == 'thanks'"]
    actions: [{close_conversation: {}}]
"""


@pytest.fixture
def app(tmp_path, clean_environment, database_url):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text(TEST_RULES, "utf-8")
    application = create_app({**p.SECRETS, "rules_dir": str(rules), "max_body_bytes": 64_000,
                              "database_url": database_url})
    yield application
    application.extensions["rules_engine"].store.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


def api_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {p.SECRETS['api_token']}"}


def conversations_of(client, contact_id: int) -> list[dict[str, Any]]:
    response = client.get(f"/api/contacts/{contact_id}/conversations", headers=api_headers())
    assert response.status_code == 200
    return response.json


def contact_id_of(client, channel: str, external_id: str) -> int:
    response = client.get(f"/api/contacts?channel={channel}&external_id={external_id}",
                          headers=api_headers())
    [contact] = response.json
    return contact["id"]


def post_events(client, data: Any, secret: str = p.SECRETS["webhook_secret"], **headers: str):
    body = p.encode(data)
    return client.post("/webhooks/events", data=body, content_type="application/json",
                       headers={"X-Signature-256": "sha256=" + p.hmac_hex(secret, body), **headers})


def post_facebook(client, data: Any, secret: str = p.SECRETS["facebook_app_secret"]):
    body = p.encode(data)
    return client.post("/webhooks/facebook", data=body, content_type="application/json",
                       headers={"X-Hub-Signature-256": "sha256=" + p.hmac_hex(secret, body)})


def post_viber(client, data: Any, secret: str = p.SECRETS["viber_auth_token"]):
    body = p.encode(data)
    return client.post("/webhooks/viber", data=body, content_type="application/json",
                       headers={"X-Viber-Content-Signature": p.hmac_hex(secret, body)})


def post_dialogflow(client, data: Any, path: str = "/webhooks/dialogflow", **headers: str):
    headers.setdefault("Authorization", p.basic_auth("dialogflow", p.SECRETS["dialogflow_password"]))
    return client.post(path, data=p.encode(data), content_type="application/json", headers=headers)


# -- operations -------------------------------------------------------------------------------


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json["status"] == "ok"
    assert response.json["rules"] == 2


def test_openapi_describes_every_route_and_only_those(app, client):
    document = client.get("/openapi.json").json
    assert document["openapi"].startswith("3.1")
    documented = {(path, method) for path, item in document["paths"].items()
                  for method in item if method != "parameters"}
    served = set()
    for rule in app.url_map.iter_rules():
        path = rule.rule.replace("<id:", "{").replace("<path:", "{").replace("<", "{").replace(">", "}")
        served |= {(path, m.lower()) for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert documented == served
    for schema in document["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    assert "contact" in document["components"]["schemas"]["Event"]["properties"]


def test_no_secret_refuses_to_start_outside_development(clean_environment, database_url):
    with pytest.raises(ConfigError, match="no secret is configured"):
        create_app({"database_url": database_url, "rules_dir": str(REPO / "rules")})


@pytest.mark.parametrize("route, variable", [
    ("/webhooks/viber", "VIBER_AUTH_TOKEN"), ("/webhooks/whatsapp", "WHATSAPP_APP_SECRET"),
    ("/webhooks/telegram", "TELEGRAM_SECRET_TOKEN"), ("/webhooks/facebook", "FACEBOOK_APP_SECRET"),
    ("/webhooks/events", "RULES_ENGINE_WEBHOOK_SECRET")])
def test_an_unconfigured_endpoint_is_disabled_and_names_what_to_set(
        clean_environment, database_url, store, route, variable):
    app = create_app({"api_token": p.SECRETS["api_token"], "database_url": database_url,
                      "rules_dir": str(REPO / "rules")})
    response = app.test_client().post(route, json={"object": "page", "entry": []})
    assert response.status_code == 503 and response.json["error"]["code"] == "not_configured"
    assert variable in response.json["error"]["message"]


def test_whatsapp_verification_handshake(client):
    ok = client.get("/webhooks/whatsapp?hub.mode=subscribe&hub.challenge=1158201444"
                    f"&hub.verify_token={p.SECRETS['whatsapp_verify_token']}")
    assert ok.status_code == 200 and ok.get_data(as_text=True) == "1158201444"
    wrong = client.get("/webhooks/whatsapp?hub.mode=subscribe&hub.challenge=1&hub.verify_token=x")
    assert wrong.status_code == 403


@pytest.mark.parametrize("route, headers", [
    ("/webhooks/whatsapp", {"X-Hub-Signature-256": "sha256=" + "0" * 64}),
    ("/webhooks/whatsapp", {}),
    ("/webhooks/telegram", {"X-Telegram-Bot-Api-Secret-Token": "guess"}),
    ("/webhooks/telegram", {}),
])
def test_whatsapp_and_telegram_refuse_requests_they_did_not_sign(client, route, headers):
    body = (REPO / "tests/fixtures/channels" / route.rsplit("/", 1)[1] / "message_text.json").read_bytes()
    response = client.post(route, data=body, content_type="application/json", headers=headers)
    assert response.status_code == 401
    genuine = client.post(route, data=body, content_type="application/json",
                          headers=p.signed_headers(route, body))
    assert genuine.status_code == 200 and genuine.json["results"][0]["status"] == "applied"


# -- /webhooks/events ---------------------------------------------------------------------------


def test_events_webhook_applies_a_signed_event(client):
    response = post_events(client, {"id": "ext-1", "type": "message.received", "channel": "webchat",
                                    "contact": {"external_id": "visitor-1", "name": "Vi"},
                                    "message": {"text": "hello"}})
    assert response.status_code == 200
    [result] = response.json["results"]
    assert result["status"] == "applied"
    [conversation] = conversations_of(client, result["contact_id"])
    assert conversation["open_source"] == "incoming_message" and conversation["status"] == "open"


@pytest.mark.parametrize("headers", [{}, {"X-Signature-256": "sha256=" + "0" * 64},
                                     {"X-Signature-256": "not-even-hex"}])
def test_events_webhook_refuses_a_bad_signature(client, headers):
    response = client.post("/webhooks/events", json={"id": "x"}, headers=headers)
    assert response.status_code == 401
    assert response.json["error"]["code"] in ("missing_signature", "bad_signature")


def test_events_webhook_signed_with_another_secret_is_refused(client):
    response = post_events(client, {"id": "x"}, secret="wrong")
    assert response.status_code == 401


def test_a_replayed_event_is_applied_once(client):
    event = {"id": "ext-2", "type": "message.received", "channel": "webchat",
             "contact": {"external_id": "visitor-2"}, "message": {"text": "hello"}}
    first = post_events(client, event).json["results"][0]
    client.post(f"/api/conversations/{first['conversation_id']}/close",
                json={"user": "maria"}, headers=api_headers())
    again = post_events(client, event).json["results"][0]
    assert (first["status"], again["status"]) == ("applied", "duplicate")
    assert len(conversations_of(client, first["contact_id"])) == 1


def test_a_batch_with_one_bad_event_applies_nothing(client):
    good = {"id": "b-1", "type": "message.received", "channel": "webchat",
            "contact": {"external_id": "visitor-3"}, "message": {"text": "hi"}}
    bad = {"id": "b-2", "type": "message.received", "channel": "webchat",
           "contact": {"external_id": "visitor-3"}}
    response = post_events(client, [good, bad])
    assert response.status_code == 422
    assert response.json["error"]["path"] == "1"
    assert "missing required key 'message'" in response.json["error"]["message"]
    lookup = client.get("/api/contacts?channel=webchat&external_id=visitor-3", headers=api_headers())
    assert lookup.json == []


THREE_MISTAKES = {"id": "t-1", "type": "message.recieved", "message": {"text": "hi"}}


def test_every_problem_of_a_body_is_reported_at_once(client):
    """An event-type typo, and the contact and channel the meant type needs: one answer
    names all three, in the order of the body (the missing keys where they would be
    written, after the keys that are there), the first as the error itself."""
    response = post_events(client, THREE_MISTAKES)
    assert response.status_code == 422
    error = response.json["error"]
    assert [(p["path"], p["message"]) for p in error["problems"]] == [
        ("type", "unknown value 'message.recieved'"),
        (None, "missing required key 'contact'"),
        (None, "missing required key 'channel'")]
    assert error["problems"][0]["hint"] == "did you mean `message.received`?"
    assert "message.received" in error["problems"][2]["hint"]  # needed by the meant type
    assert (error["code"], error["path"], error["hint"]) == (
        "invalid_event", "type", "did you mean `message.received`?")
    schemas = client.get("/openapi.json").json["components"]["schemas"]
    Draft202012Validator(schemas["Error"]).validate(response.json)
    documented = (REPO / "docs" / "api.md").read_text("utf-8").split('```json\n{"error"')[1]
    assert json.loads('{"error"' + documented.split("```")[0]) == response.json


def test_a_batch_reports_every_problem_of_every_event_by_index_and_applies_nothing(client):
    good = {"id": "t-2", "type": "message.received", "channel": "webchat",
            "contact": {"external_id": "visitor-9"}, "message": {"text": "hi"}}
    late = {**good, "id": "t-3", "contact": {"external_id": 9}, "timestamp": "yesterday"}
    response = post_events(client, [good, THREE_MISTAKES, late])
    assert response.status_code == 422
    assert [p["path"] for p in response.json["error"]["problems"]] == [
        "1/type", "1", "1", "2/contact/external_id", "2/timestamp"]
    assert response.json["error"]["path"] == "1/type"
    lookup = client.get("/api/contacts?channel=webchat&external_id=visitor-9", headers=api_headers())
    assert lookup.json == []


@pytest.mark.parametrize("body, content_type, status, code", [
    (b"{not json", "application/json", 400, "malformed_json"),
    (b"\xff\xfe", "application/json", 400, "malformed_json"),
    (b"42", "application/json", 400, "invalid_body"),
    (b"[]", "application/json", 400, "invalid_body"),
    (b'{"id": "x"}', "text/plain", 415, "unsupported_media_type"),
    (b'{"id": "x", "type": "message.exploded", "contact": {"id": 1}}', "application/json", 422,
     "invalid_event"),
    (b'{"id": 5, "type": "welcome"}', "application/json", 422, "invalid_event"),
    (b'{"id": "x", "type": "conversation.open", "contact": {"id": 999}, "actor": "u"}',
     "application/json", 404, "not_found"),
    (b'{"id": "x", "type": "welcome", "channel": "sms", "contact": {"external_id": "1"}}',
     "application/json", 422, "invalid_event"),
])
def test_bad_bodies_get_a_4xx_json_error(client, body, content_type, status, code):
    response = client.post("/webhooks/events", data=body, content_type=content_type, headers={
        "X-Signature-256": "sha256=" + p.hmac_hex(p.SECRETS["webhook_secret"], body)})
    assert response.status_code == status, response.json
    assert response.json["error"]["code"] == code


def test_an_oversized_body_is_refused(client):
    body = p.encode({"id": "big", "type": "message.received", "channel": "webchat",
                     "contact": {"external_id": "v"}, "message": {"text": "x" * 70_000}})
    response = client.post("/webhooks/events", data=body, content_type="application/json",
                           headers={"X-Signature-256": "sha256=" + p.hmac_hex(p.SECRETS["webhook_secret"], body)})
    assert response.status_code == 413
    assert response.json["error"]["code"] == "request_entity_too_large"


# -- Facebook ----------------------------------------------------------------------------------


def test_facebook_verification_handshake(client):
    ok = client.get("/webhooks/facebook?hub.mode=subscribe&hub.challenge=1158201444"
                    f"&hub.verify_token={p.SECRETS['facebook_verify_token']}")
    assert ok.status_code == 200 and ok.data == b"1158201444"
    bad = client.get("/webhooks/facebook?hub.mode=subscribe&hub.challenge=1&hub.verify_token=nope")
    assert bad.status_code == 403


def test_facebook_first_message_opens_a_conversation(client):
    response = post_facebook(client, p.messenger(p.fb_message("PSID-1", "m_1", "hello")))
    assert response.status_code == 200
    contact_id = contact_id_of(client, "facebook", "PSID-1")
    [conversation] = conversations_of(client, contact_id)
    assert conversation["open_source"] == "incoming_message" and conversation["channel"] == "facebook"


def test_facebook_get_started_welcome_event_opens_a_conversation(client):
    post_facebook(client, p.messenger(p.fb_get_started("PSID-2", "m_gs")))
    [conversation] = conversations_of(client, contact_id_of(client, "facebook", "PSID-2"))
    assert conversation["open_source"] == "welcome_event"


def test_facebook_batch_is_applied_in_order_and_replays_apply_once(client):
    batch = p.messenger(p.fb_message("PSID-3", "m_a", "I need help", 1_764_061_200_000),
                        p.fb_message("PSID-3", "m_b", "thanks", 1_764_061_260_000),
                        p.fb_message("PSID-3", "m_c", "one more thing", 1_764_061_320_000))
    results = post_facebook(client, batch).json["results"]
    assert [r["status"] for r in results] == ["applied"] * 3
    history = conversations_of(client, results[0]["contact_id"])
    assert [(c["status"], c["close_source"]) for c in history] == [
        ("closed", "automation"), ("open", None)]
    replay = post_facebook(client, batch).json["results"]
    assert [r["status"] for r in replay] == ["duplicate"] * 3
    assert len(conversations_of(client, results[0]["contact_id"])) == 2


def test_facebook_bad_signature_is_refused_and_nothing_applied(client):
    response = post_facebook(client, p.messenger(p.fb_message("PSID-4", "m_x", "hi")), secret="nope")
    assert response.status_code == 401
    assert client.get("/api/contacts?channel=facebook&external_id=PSID-4",
                      headers=api_headers()).json == []


def test_facebook_echo_is_a_reply_and_its_delivery_a_status_event(client):
    echo = {"sender": {"id": "PAGE_1"}, "recipient": {"id": "PSID-5"}, "timestamp": 1_764_061_200_000,
            "message": {"mid": "m_echo", "text": "our reply", "is_echo": True}}
    delivery = {"sender": {"id": "PSID-5"}, "recipient": {"id": "PAGE_1"},
                "delivery": {"mids": ["m_echo"], "watermark": 1_764_061_200_000}}
    response = post_facebook(client, p.messenger(echo, delivery))
    assert response.status_code == 200
    reply, delivered = response.json["results"]
    assert reply["event_id"] == "facebook:m_echo"
    assert [c["operation"] for c in reply["changes"]] == ["create_contact"]
    assert delivered["event_id"] == "facebook:delivery:m_echo"
    # the page's reply went out through another tool, not our outbox: nothing to move
    assert (delivered["status"], delivered["contact_id"]) == ("noop", None)
    assert response.json["skipped"] == []
    assert conversations_of(client, reply["contact_id"]) == []


def test_facebook_a_message_beside_unusable_items_is_applied(client):
    """Receipts without timestamps, standby entries, chat-plugin guests (user_ref), feed
    changes and entries with nothing in them never cost the customer's message."""
    body = {"object": "page", "entry": [
        {"id": "PAGE_1", "time": 1_764_061_200_000, "messaging": [
            {"sender": {"id": "PSID-12"}, "recipient": {"id": "PAGE_1"},
             "delivery": {"mids": ["m_older"], "watermark": 1_764_061_100_000}},
            p.fb_message("PSID-12", "m_12", "where is my order?"),
            {"sender": {"user_ref": "guest-77"}, "recipient": {"id": "PAGE_1"},
             "timestamp": 1_764_061_200_500,
             "postback": {"title": "Talk to us", "payload": "CHAT_PLUGIN_START",
                          "referral": {"ref": "pricing-page", "source": "CUSTOMER_CHAT_PLUGIN",
                                       "type": "OPEN_THREAD"}}}]},
        {"id": "PAGE_1", "time": 1_764_061_200_000, "standby": [
            {"sender": {"id": "PSID-13"}, "recipient": {"id": "PAGE_1"},
             "timestamp": 1_764_061_200_000, "message": {"mid": "m_13", "text": "for the inbox"}}]},
        {"id": "PAGE_1", "time": 1_764_061_200, "changes": [{"field": "feed", "value": {}}]},
        {"id": "PAGE_1", "time": 1_764_061_200_000},
    ]}
    response = post_facebook(client, body)
    assert response.status_code == 200
    assert [r["event_id"] for r in response.json["results"]] == [
        "facebook:delivery:m_older", "facebook:m_12",
        "facebook:postback:user_ref:guest-77:1764061200500"]
    assert [(s["path"], s["reason"]) for s in response.json["skipped"]] == [
        ("entry/1/standby/0", "standby"),
        ("entry/2/changes/0", "changes"), ("entry/3", "empty_entry")]
    [conversation] = conversations_of(client, contact_id_of(client, "facebook", "PSID-12"))
    assert conversation["open_source"] == "incoming_message"
    assert conversations_of(client, contact_id_of(client, "facebook", "user_ref:guest-77"))
    assert client.get("/api/contacts?channel=facebook&external_id=PSID-13",
                      headers=api_headers()).json == []
    metrics = client.get("/metrics", headers=api_headers()).get_data(as_text=True)
    assert 'rules_engine_items_skipped_total{channel="facebook",reason="standby"}' in metrics


def test_facebook_an_echo_never_opens_a_conversation(client):
    echo = {"sender": {"id": "PAGE_1"}, "recipient": {"id": "PSID-14"},
            "timestamp": 1_764_061_200_000,
            "message": {"mid": "m_echo_14", "is_echo": True, "app_id": 1517776481860111,
                        "text": "Hi! An agent will be with you shortly."}}
    response = post_facebook(client, p.messenger(echo))
    [result] = response.json["results"]
    assert conversations_of(client, result["contact_id"]) == []
    trace = client.get("/api/events/facebook:m_echo_14/trace", headers=api_headers()).json
    assert trace["type"] == "message.sent"


@pytest.mark.parametrize("data, path", [
    ({"object": "user", "entry": []}, "object"),
    ({"object": "page", "entry": {}}, "entry"),
])
def test_facebook_a_body_not_in_its_format_is_refused(client, data, path):
    response = post_facebook(client, data)
    assert response.status_code == 400 and response.json["error"]["path"] == path


@pytest.mark.parametrize("item, path", [
    ({"sender": {}, "timestamp": 1_764_061_200_000, "message": {"mid": "m1", "text": "a"}},
     "entry/0/messaging/0/sender"),
    ({"sender": {"id": "x"}, "timestamp": "soon", "message": {"mid": "m2", "text": "a"}},
     "entry/0/messaging/0/timestamp"),
])
def test_facebook_an_unusable_item_is_skipped_naming_the_field(client, item, path):
    good = p.fb_message("PSID-9", "m_good", "hello")
    response = post_facebook(client, p.messenger(item, good))
    assert response.status_code == 200
    [skipped] = response.json["skipped"]
    assert skipped["path"] == path and skipped["reason"] == "invalid_item"
    [result] = response.json["results"]
    assert result["event_id"] == "facebook:m_good" and result["status"] == "applied"


# -- Viber ---------------------------------------------------------------------------------------


def test_viber_conversation_started_opens_a_conversation(client):
    response = post_viber(client, p.viber_conversation_started("vb-user-1=", 5_406_893_180_055_821_524))
    assert response.status_code == 200
    [conversation] = conversations_of(client, contact_id_of(client, "viber", "vb-user-1="))
    assert conversation["open_source"] == "welcome_event"


def test_viber_message_and_replay(client):
    first = post_viber(client, p.viber_message("vb-user-2=", 4_912_661_846_655_238_145, "hi"))
    again = post_viber(client, p.viber_message("vb-user-2=", 4_912_661_846_655_238_145, "hi"))
    assert first.json["results"][0]["status"] == "applied"
    assert again.json["results"][0]["status"] == "duplicate"
    [conversation] = conversations_of(client, first.json["results"][0]["contact_id"])
    assert conversation["open_source"] == "incoming_message"


@pytest.mark.parametrize("kind", ["subscribed", "webhook"])
def test_viber_other_callbacks_are_acknowledged(client, kind):
    response = post_viber(client, {"event": kind, "timestamp": 1_764_061_200_000,
                                   "message_token": 2, "user_id": "vb-user-3="})
    assert response.status_code == 200 and response.json["results"] == []
    assert response.json["skipped"][0]["reason"] == kind


def test_viber_bad_signature_is_refused(client):
    response = post_viber(client, p.viber_message("vb-user-4=", 1, "hi"), secret="nope")
    assert response.status_code == 401


# -- Dialogflow ------------------------------------------------------------------------------------


def test_dialogflow_rb_markdone_false_opens_and_true_closes(client):
    opened = post_dialogflow(client, p.dialogflow_es("resp-1", "sess-1",
                                                     parameters={"RB_MARKDONE": False}))
    assert opened.status_code == 200
    contact_id = contact_id_of(client, "dialogflow", "sess-1")
    assert conversations_of(client, contact_id)[0]["status"] == "open"
    closed = post_dialogflow(client, p.dialogflow_es("resp-2", "sess-1",
                                                     parameters={"RB_MARKDONE": "true"}))
    assert closed.status_code == 200
    [conversation] = conversations_of(client, contact_id)
    assert (conversation["status"], conversation["close_source"]) == ("closed", "dialogflow")


def test_dialogflow_context_parameter_closes_and_is_cleared_in_the_response(client):
    post_dialogflow(client, p.dialogflow_es("resp-3", "sess-2", parameters={"RB_MARKDONE": False}))
    context = p.es_context("sess-2", "order-followup", {"RB_MARKDONE": 1, "order": 42.0}, 3)
    response = post_dialogflow(client, p.dialogflow_es("resp-4", "sess-2", contexts=[context]))
    contact_id = contact_id_of(client, "dialogflow", "sess-2")
    assert conversations_of(client, contact_id)[0]["close_source"] == "dialogflow"
    [returned] = response.json["outputContexts"]
    assert returned["name"] == context["name"] and returned["lifespanCount"] == 3
    assert returned["parameters"] == {"RB_MARKDONE": None, "order": 42}
    # the next turn carries the cleared context: a new conversation stays open
    post_dialogflow(client, p.dialogflow_es("resp-5", "sess-2", parameters={"RB_MARKDONE": False}))
    stale = p.es_context("sess-2", "order-followup", returned["parameters"], 2)
    post_dialogflow(client, p.dialogflow_es("resp-6", "sess-2", contexts=[stale]))
    assert conversations_of(client, contact_id)[-1]["status"] == "open"


def test_dialogflow_repeated_response_id_applies_once(client):
    body = p.dialogflow_es("resp-7", "sess-3", parameters={"RB_MARKDONE": False,
                                                           "RB_ADDTAGS": "vip, returning"})
    first = post_dialogflow(client, body)
    again = post_dialogflow(client, body)
    assert first.headers["X-Rules-Engine-Status"] == "applied"
    assert again.headers["X-Rules-Engine-Status"] == "duplicate"
    contact = client.get("/api/contacts?channel=dialogflow&external_id=sess-3",
                         headers=api_headers()).json[0]
    assert contact["tags"] == ["returning", "vip"]


def test_dialogflow_intent_rules_and_bot_handover(client):
    post_dialogflow(client, p.dialogflow_es("resp-8", "sess-4", parameters={"RB_MARKDONE": False}))
    response = post_dialogflow(client, p.dialogflow_es(
        "resp-9", "sess-4", intent="talk.to.human", parameters={"RB_BOTSTATUS": False}))
    assert response.status_code == 200
    [conversation] = conversations_of(client, contact_id_of(client, "dialogflow", "sess-4"))
    assert conversation["team"] == "support" and conversation["bot_active"] is False
    trace = client.get("/api/events/dialogflow:resp-9/trace", headers=api_headers()).json
    assert trace["fired"] == ["intent-handover"]


def test_dialogflow_facebook_source_finds_the_messenger_contact(client):
    post_facebook(client, p.messenger(p.fb_message("PSID-9", "m_9", "hello")))
    body = p.dialogflow_es("resp-10", "sess-5", parameters={"RB_MARKDONE": True},
                           source="facebook", payload={"data": {"sender": {"id": "PSID-9"}}})
    post_dialogflow(client, body)
    [conversation] = conversations_of(client, contact_id_of(client, "facebook", "PSID-9"))
    assert conversation["close_source"] == "dialogflow"


@pytest.mark.parametrize("where", ["payload source", "generic context"])
def test_dialogflow_messenger_integration_closes_the_messenger_contacts_conversation(client, where):
    """Dialogflow ES's own Facebook integration: ``source`` only inside the payload, the PSID
    in ``payload.data.sender.id`` or only in the ``generic`` context's facebook_sender_id."""
    post_facebook(client, p.messenger(p.fb_message("PSID-11", "m_11", "hello")))
    payload = ({"source": "facebook", "data": {"sender": {"id": "PSID-11"}}}
               if where == "payload source" else {"source": "facebook", "data": {}})
    contexts = [p.es_context("sess-11", "generic", {"facebook_sender_id": "PSID-11"})]
    body = p.dialogflow_es("resp-11", "sess-11", parameters={"RB_MARKDONE": "true"},
                           payload=payload, contexts=contexts)
    assert post_dialogflow(client, body).status_code == 200
    [conversation] = conversations_of(client, contact_id_of(client, "facebook", "PSID-11"))
    assert (conversation["status"], conversation["close_source"]) == ("closed", "dialogflow")
    assert client.get("/api/contacts?channel=dialogflow&external_id=sess-11",
                      headers=api_headers()).json == []


def test_dialogflow_cx_detect_intent_suffix_names_the_same_session(client):
    opened = post_dialogflow(client, p.dialogflow_cx("cx-20", "dfMessenger-7", {"RB_MARKDONE": False}),
                             path="/webhooks/dialogflow-cx")
    closed = post_dialogflow(client, p.dialogflow_cx("cx-21", "dfMessenger-7:detectIntent",
                                                     {"RB_MARKDONE": True}),
                             path="/webhooks/dialogflow-cx")
    assert opened.status_code == closed.status_code == 200
    [conversation] = conversations_of(client, contact_id_of(client, "dialogflow", "dfMessenger-7"))
    assert (conversation["status"], conversation["close_source"]) == ("closed", "dialogflow")


def test_dialogflow_payload_contact_id(client):
    opened = post_facebook(client, p.messenger(p.fb_message("PSID-10", "m_10", "hi")))
    contact_id = opened.json["results"][0]["contact_id"]
    post_dialogflow(client, p.dialogflow_es("resp-11", "sess-6", parameters={"RB_MARKDONE": "yes"},
                                            payload={"contact_id": contact_id}))
    assert conversations_of(client, contact_id)[0]["close_source"] == "dialogflow"


def skipped_in(response) -> list[dict[str, str]]:
    """What a Dialogflow answer reports as skipped or refused (``payload.rules_engine``)."""
    assert response.status_code == 200
    return response.json["payload"]["rules_engine"]["skipped"]


def test_dialogflow_payload_contact_id_that_names_no_contact_acts_on_nobody(client):
    """The engine refuses a contact id that does not exist: nobody is created or closed, the
    answer says why, and the RB_* parameters are left as they are (not acted on)."""
    context = p.es_context("sess-30", "order-followup", {"RB_MARKDONE": True})
    response = post_dialogflow(client, p.dialogflow_es("resp-30", "sess-30", contexts=[context],
                                                       payload={"contact_id": 4}))
    assert skipped_in(response) == [{"path": "dialogflow:resp-30", "reason": "refused",
                                     "detail": "not_found: contact 4 does not exist"}]
    assert "outputContexts" not in response.json
    assert client.get("/api/contacts?channel=dialogflow&external_id=sess-30",
                      headers=api_headers()).json == []


PAYLOAD_AT = {"/webhooks/dialogflow": "originalDetectIntentRequest/payload",
              "/webhooks/dialogflow-cx": "payload"}


def fulfillment(route: str, session: str, payload: dict[str, Any]) -> dict[str, Any]:
    """An ES or a CX request (by ``route``) with RB_MARKDONE true and ``payload``."""
    if route == "/webhooks/dialogflow":
        return p.dialogflow_es(f"resp-{session}", session, parameters={"RB_MARKDONE": True},
                               payload=payload)
    return p.dialogflow_cx(f"cx-{session}", session, {"RB_MARKDONE": True}, payload=payload)


def messenger_contact(client, psid: str) -> int:
    """The contact of a Messenger user who wrote (so has an open conversation)."""
    response = post_facebook(client, p.messenger(p.fb_message(psid, f"m_{psid}", "hi")))
    return response.json["results"][0]["contact_id"]


@pytest.mark.parametrize("route", PAYLOAD_AT)
@pytest.mark.parametrize("by", ["contact_id", "external_id"])
def test_dialogflow_payload_names_the_person_on_a_registered_channel(client, route, by):
    contact_id = messenger_contact(client, "PSID-32")
    payload = {"channel": "facebook", by: contact_id if by == "contact_id" else "PSID-32"}
    response = post_dialogflow(client, fulfillment(route, "sess-32", payload), path=route)
    assert response.status_code == 200 and "payload" not in response.json
    [conversation] = conversations_of(client, contact_id)
    assert (conversation["status"], conversation["close_source"]) == ("closed", "dialogflow")


@pytest.mark.parametrize("route", PAYLOAD_AT)
@pytest.mark.parametrize("by", ["contact_id", "external_id"])
@pytest.mark.parametrize("channel, hint", [("<svg onload=alert(3)>", "one of api, dialogflow, "
                                            "facebook"), ("facebok", "did you mean `facebook`?")])
def test_dialogflow_payload_channel_must_be_one_events_may_carry(client, route, by, channel,
                                                                 hint):
    """A channel no adapter registers skips the request with the reason: it becomes no
    contact, no conversation label, no metrics label, and the person is not guessed."""
    contact_id = messenger_contact(client, "PSID-31")
    payload = {"channel": channel, by: contact_id if by == "contact_id" else "PSID-31"}
    [skipped] = skipped_in(post_dialogflow(client, fulfillment(route, "sess-31", payload),
                                           path=route))
    assert (skipped["path"], skipped["reason"]) == (f"{PAYLOAD_AT[route]}/channel", "invalid_item")
    assert hint in skipped["detail"]
    assert conversations_of(client, contact_id)[0]["status"] == "open"
    assert "svg" not in client.get("/metrics").get_data(as_text=True)
    assert client.get("/api/contacts?channel=dialogflow&external_id=sess-31",
                      headers=api_headers()).json == []


def test_dialogflow_cx_closes_and_nulls_the_session_parameter(client):
    post_dialogflow(client, p.dialogflow_cx("cx-1", "cx-sess-1", {"RB_MARKDONE": False}),
                    path="/webhooks/dialogflow-cx")
    response = post_dialogflow(client, p.dialogflow_cx("cx-2", "cx-sess-1", {"RB_MARKDONE": True}),
                               path="/webhooks/dialogflow-cx",
                               Authorization=f"Bearer {p.SECRETS['dialogflow_token']}")
    assert response.status_code == 200
    assert response.json == {"sessionInfo": {"parameters": {"RB_MARKDONE": None}}}
    [conversation] = conversations_of(client, contact_id_of(client, "dialogflow", "cx-sess-1"))
    assert conversation["close_source"] == "dialogflow"


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", p.basic_auth("dialogflow", "wrong"),
                                           "Basic !!!notbase64"])
def test_dialogflow_refuses_bad_credentials(client, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = client.post("/webhooks/dialogflow", json=p.dialogflow_es("r", "s"), headers=headers)
    assert response.status_code == 401


def test_dialogflow_reads_an_empty_list_as_an_object_only_where_protobuf_expects_one(client):
    """A real request's empty Struct sent as ``"parameters": []`` is read as ``{}``; the
    intent's ``parameters``, which is a list (as Google's own types print it), stays one."""
    body = p.dialogflow_es("resp-40", "sess-40", parameters={"RB_MARKDONE": False})
    body["queryResult"]["outputContexts"] = [{**p.es_context("sess-40", "generic", {}),
                                              "parameters": []}]
    body["queryResult"]["intent"]["parameters"] = []
    assert post_dialogflow(client, body).headers["X-Rules-Engine-Status"] == "applied"
    body = p.dialogflow_es("resp-41", "sess-40")
    body["queryResult"]["parameters"] = []
    body["originalDetectIntentRequest"]["payload"] = []
    assert post_dialogflow(client, body).headers["X-Rules-Engine-Status"] == "applied"
    [conversation] = conversations_of(client, contact_id_of(client, "dialogflow", "sess-40"))
    assert conversation["status"] == "open"


@pytest.mark.parametrize("body", [
    {"responseId": "r", "session": "projects/p/agent/sessions/s", "queryResult": 5},
    {"responseId": "r", "session": "projects/p/agent/sessions/s",
     "queryResult": {"parameters": "not an object"}},
    {"responseId": "r", "queryResult": {}},
])
def test_dialogflow_malformed_requests_are_4xx(client, body):
    response = post_dialogflow(client, body)
    assert response.status_code == 400 and response.json["error"]["code"] == "invalid_payload"


# -- the users' API -------------------------------------------------------------------------------


def test_api_requires_the_bearer_token(client):
    assert client.get("/api/conversations/1").status_code == 401
    assert client.get("/api/conversations/1", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_api_open_close_and_read(client):
    contact_id = post_facebook(client, p.messenger(p.fb_message("PSID-20", "m_20", "hi"))).json[
        "results"][0]["contact_id"]
    [first] = conversations_of(client, contact_id)
    noop = client.post(f"/api/contacts/{contact_id}/conversations", json={"user": "maria"},
                       headers=api_headers())
    assert noop.status_code == 200 and noop.json["conversation"]["id"] == first["id"]
    closed = client.post(f"/api/conversations/{first['id']}/close",
                         json={"user": "maria", "note": "sorted by phone"}, headers=api_headers())
    assert closed.status_code == 200
    assert closed.json["conversation"]["close_source"] == "user"
    assert closed.json["conversation"]["closing_note"] == "sorted by phone"
    opened = client.post(f"/api/contacts/{contact_id}/conversations",
                         json={"user": "maria", "assignee": "maria", "team": "support"},
                         headers=api_headers())
    assert opened.status_code == 201
    conversation = opened.json["conversation"]
    assert (conversation["open_source"], conversation["assignee"]) == ("user", "maria")
    listed = conversations_of(client, contact_id)
    assert [c["status"] for c in listed] == ["closed", "open"]
    for item in listed:
        assert {"id", "contact_id", "status", "open_source", "close_source", "opened_at",
                "closed_at", "assignee", "team"} <= set(item)
    one = client.get(f"/api/conversations/{conversation['id']}", headers=api_headers())
    assert one.json == conversation


def test_api_records_an_agents_reply_as_message_sent(client):
    contact_id = post_facebook(client, p.messenger(p.fb_message("PSID-25", "m_25", "hi"))).json[
        "results"][0]["contact_id"]
    [conversation] = conversations_of(client, contact_id)
    reply = client.post(f"/api/conversations/{conversation['id']}/replies",
                        json={"user": "maria", "text": "On its way!"}, headers=api_headers())
    assert reply.status_code == 200, reply.json
    recorded = reply.json["conversation"]
    assert recorded["first_response_at"] is not None
    assert recorded["last_reply_at"] == recorded["first_response_at"]
    assert len(conversations_of(client, contact_id)) == 1  # a reply never opens one
    missing = client.post("/api/conversations/999999/replies", json={"user": "m", "text": "x"},
                          headers=api_headers())
    assert missing.status_code == 404
    no_text = client.post(f"/api/conversations/{conversation['id']}/replies",
                          json={"user": "maria"}, headers=api_headers())
    assert no_text.status_code == 400 and no_text.json["error"]["path"] == "text"


def test_api_merge_closes_the_secondarys_conversation(client):
    primary = post_facebook(client, p.messenger(p.fb_message("PSID-30", "m_30", "hi"))).json[
        "results"][0]["contact_id"]
    secondary = post_viber(client, p.viber_message("vb-30=", 30, "hi")).json["results"][0]["contact_id"]
    response = client.post(f"/api/contacts/{primary}/merge",
                           json={"user": "maria", "secondary_id": secondary}, headers=api_headers())
    assert response.status_code == 200
    [closed] = conversations_of(client, secondary)
    assert closed["close_source"] == "contact_merge"
    assert contact_id_of(client, "viber", "vb-30=") == primary


def test_api_idempotency_key_applies_a_command_once(client):
    contact_id = post_facebook(client, p.messenger(p.fb_message("PSID-40", "m_40", "hi"))).json[
        "results"][0]["contact_id"]
    [conversation] = conversations_of(client, contact_id)
    headers = {**api_headers(), "Idempotency-Key": "close-40"}
    url = f"/api/conversations/{conversation['id']}/close"
    first = client.post(url, json={"user": "maria"}, headers=headers)
    client.post(f"/api/contacts/{contact_id}/conversations", json={"user": "maria"},
                headers=api_headers())
    again = client.post(url, json={"user": "maria"}, headers=headers)
    assert (first.json["status"], again.json["status"]) == ("applied", "duplicate")
    assert [c["status"] for c in conversations_of(client, contact_id)] == ["closed", "open"]


def test_api_trace_of_an_event(client):
    post_events(client, {"id": "traced-1", "type": "message.received", "channel": "webchat",
                         "contact": {"external_id": "t-1"}, "message": {"text": "thanks"}})
    trace = client.get("/api/events/traced-1/trace", headers=api_headers()).json
    assert trace["fired"] == ["close-on-thanks"]
    assert trace["steps"][0]["rules"][0]["conditions"][0]["result"] is True


@pytest.mark.parametrize("method, url, body, status", [
    ("get", "/api/conversations/999", None, 404),
    ("get", "/api/contacts/999/conversations", None, 404),
    ("get", "/api/events/nope/trace", None, 404),
    ("get", "/api/contacts?channel=facebook", None, 400),
    ("post", "/api/conversations/999/close", {"user": "u"}, 404),
    ("post", "/api/contacts/999/conversations", {"user": "u"}, 404),
    ("post", "/api/contacts/1/conversations", {}, 400),
    ("post", "/api/contacts/1/conversations", {"user": "u", "colour": "red"}, 400),
    ("post", "/api/contacts/1/merge", {"user": "u", "secondary_id": "two"}, 400),
    ("post", "/api/contacts/999/merge", {"user": "u", "secondary_id": 1}, 404),
    ("get", "/api/nothing-here", None, 404),
])
def test_api_errors_are_4xx_json(client, method, url, body, status):
    response = getattr(client, method)(url, json=body, headers=api_headers())
    assert response.status_code == status, response.json
    assert "error" in response.json


GARBAGE = [b"", b"null", b"[]", b"[1, 2]", b'"text"', b"{}", b'{"entry": [null]}',
           b'{"object": "page", "entry": [{"messaging": [null, 5]}]}',
           b'{"event": "message", "message_token": "x"}', b'{"event": 5}',
           b'{"event": "message", "message_token": 1, "timestamp": 1, "sender": {"id": ""}}',
           b'{"event": "message", "message_token": 1, "timestamp": 1, "sender": {"id": "a"}, '
           b'"message": {"type": "text", "text": 5}}',
           b'{"responseId": "r", "session": "", "queryResult": {"parameters": {"RB_MARKDONE": [1]}}}',
           b'{"detectIntentResponseId": "d", "sessionInfo": {"session": "s/"}}',
           b'{"id": "g", "type": "contacts.merge", "contact": {"id": 1}, "secondary_contact_id": 1, "actor": "u"}',
           b'{"id": "' + b"x" * 300 + b'", "type": "welcome"}', b"\x00\x01\x02"]


@pytest.mark.parametrize("body", GARBAGE)
def test_no_body_makes_any_endpoint_answer_5xx(client, body):
    post_facebook(client, p.messenger(p.fb_message("PSID-G", "m_g", "hi")))  # contact 1 exists
    signed = {
        "/webhooks/events": {"X-Signature-256": "sha256=" + p.hmac_hex(p.SECRETS["webhook_secret"], body)},
        "/webhooks/facebook": {"X-Hub-Signature-256": "sha256=" + p.hmac_hex(p.SECRETS["facebook_app_secret"], body)},
        "/webhooks/viber": {"X-Viber-Content-Signature": p.hmac_hex(p.SECRETS["viber_auth_token"], body)},
        "/webhooks/dialogflow": {"Authorization": f"Bearer {p.SECRETS['dialogflow_token']}"},
        "/webhooks/dialogflow-cx": {"Authorization": f"Bearer {p.SECRETS['dialogflow_token']}"},
        "/api/contacts/1/conversations": api_headers(),
        "/api/conversations/1/close": api_headers(),
        "/api/contacts/1/merge": api_headers(),
    }
    for url, headers in signed.items():
        response = client.post(url, data=body, content_type="application/json", headers=headers)
        assert 400 <= response.status_code < 500 or response.status_code == 200, (url, response.json)
        assert response.is_json, url


def test_api_noops_say_so_with_the_reason(client):
    opened = post_facebook(client, p.messenger(p.fb_message("PSID-N1", "m_n1", "hi")))
    contact_id = opened.json["results"][0]["contact_id"]
    again = client.post(f"/api/contacts/{contact_id}/conversations", json={"user": "maria"},
                        headers=api_headers())
    assert again.status_code == 200 and again.json["status"] == "noop"
    assert "already open" in again.json["reason"]
    other = post_facebook(client, p.messenger(p.fb_message("PSID-N2", "m_n2", "hi")))
    other_id = other.json["results"][0]["contact_id"]
    merge = {"user": "maria", "secondary_id": other_id}
    first = client.post(f"/api/contacts/{contact_id}/merge", json=merge, headers=api_headers())
    repeat = client.post(f"/api/contacts/{contact_id}/merge", json=merge, headers=api_headers())
    assert first.json["status"] == "applied"
    assert repeat.json["status"] == "noop" and "already merged" in repeat.json["reason"]


def test_a_conversation_opened_by_hand_is_on_the_contacts_channel(client):
    opened = post_viber(client, p.viber_message("vb-hand=", 77, "hi"))
    contact_id = opened.json["results"][0]["contact_id"]
    [conversation] = conversations_of(client, contact_id)
    client.post(f"/api/conversations/{conversation['id']}/close", json={"user": "maria"},
                headers=api_headers())
    reopened = client.post(f"/api/contacts/{contact_id}/conversations", json={"user": "maria"},
                           headers=api_headers())
    assert reopened.status_code == 201 and reopened.json["conversation"]["channel"] == "viber"


def test_json_responses_say_what_flasks_own_writer_says():
    """The app writes JSON with orjson; a client reads exactly what Flask's writer would
    have said, dates, decimals, UUIDs, dataclasses, integer keys and huge integers too."""
    import dataclasses
    import json
    import uuid
    from datetime import date, datetime
    from decimal import Decimal

    from flask import Flask
    from flask.json.provider import DefaultJSONProvider

    from connectors.http import FastJSONProvider

    @dataclasses.dataclass
    class Point:
        x: int
        when: datetime

    app = Flask(__name__)
    fast, reference = FastJSONProvider(app), DefaultJSONProvider(app)
    fast.sort_keys = reference.sort_keys = False
    moment = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
    values: list[Any] = [
        {"b": 1, "a": [1.5, None, True, "é ✓ \u2028"], 3: "an integer key"},
        {"when": moment, "day": date(2026, 11, 25), "price": Decimal("10.50"),
         "id": uuid.UUID(int=7), "point": Point(1, moment)},
        {"huge": 2 ** 70}, [], None]
    with app.app_context():
        for value in values:
            written = fast.response(value)
            assert written.mimetype == "application/json"
            assert written.get_data().endswith(b"\n")
            assert json.loads(written.get_data()) == json.loads(reference.response(value).get_data())
        assert list(json.loads(fast.response({"b": 1, "a": 2}).get_data())) == ["b", "a"]


def test_facebook_items_without_an_id_or_a_time_get_their_id_from_the_body(client):
    """A referral, or a postback without ``mid``, that carries no timestamp (a guest of the
    chat plugin, some test tools): the same body delivered again is a repeat, never a
    second welcome; a different one from the same person is a new event."""
    referral = {"sender": {"id": "PSID-NOTIME"}, "recipient": {"id": "PAGE_1"},
                "referral": {"ref": "summer-sale", "source": "SHORTLINK", "type": "OPEN_THREAD"}}
    postback = {"sender": {"id": "PSID-NOTIME"}, "recipient": {"id": "PAGE_1"},
                "postback": {"title": "Prices", "payload": "PRICES"}}
    other = {**postback, "postback": {"title": "Hours", "payload": "HOURS"}}
    first = post_facebook(client, p.messenger(referral, postback)).json["results"]
    again = post_facebook(client, p.messenger(referral, postback)).json["results"]
    assert [r["status"] for r in first] == ["applied", "applied"]
    assert [r["status"] for r in again] == ["duplicate", "duplicate"]
    assert [r["event_id"] for r in again] == [r["event_id"] for r in first]
    assert post_facebook(client, p.messenger(other)).json["results"][0]["status"] == "applied"
