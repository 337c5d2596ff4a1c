"""Real bodies the platforms publish, driven through the app with their real signatures.

Each folder under ``tests/fixtures/channels/`` holds bodies copied from the platform's
documentation or from public projects' test fixtures (``SOURCES.md`` names each source),
and ``expected.json``: what the platform's documentation says each item means (a message
from the person, a welcome, the page's own echo, an opt-out, or something informational).
The tests turn those documented meanings into what the engine must do with them.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from connectors import create_app
from connectors.channels import adapters
from rules_engine import EventType, queries
from rules_engine.domain.model import MESSAGE_STATUS_TYPES

from . import webhook_payloads as p

FIXTURES = Path(__file__).parent / "fixtures" / "channels"
ROUTES = {"messenger": "/webhooks/facebook", "viber": "/webhooks/viber",
          "whatsapp": "/webhooks/whatsapp", "telegram": "/webhooks/telegram",
          "dialogflow_es": "/webhooks/dialogflow", "dialogflow_cx": "/webhooks/dialogflow-cx"}
CHANNEL_OF = {"messenger": "facebook", "viber": "viber", "whatsapp": "whatsapp",
              "telegram": "telegram"}
# The documented meaning of an item -> the engine event it must become (None: acknowledged).
EVENT_OF_KIND = {"message": EventType.MESSAGE_RECEIVED, "welcome": EventType.WELCOME,
                 "referral": EventType.WELCOME, "echo": EventType.MESSAGE_SENT,
                 "unsubscribed": EventType.CONTACT_UNSUBSCRIBED, "acknowledged": None,
                 "optin": None, "subscribed": None, "reaction": EventType.MESSAGE_REACTION,
                 # what became of a message we sent (a platform's status callback)
                 "delivered": EventType.MESSAGE_DELIVERED, "read": EventType.MESSAGE_READ,
                 "failed": EventType.MESSAGE_FAILED}
STATUS_KINDS = {"delivered", "read", "failed"}
# Each platform's media vocabulary -> the documented attachment types of our events.
ATTACHMENT_OF = {
    "messenger": {"image": "image", "video": "video", "audio": "audio", "file": "file",
                  "location": "location", "fallback": "link"},
    "viber": {"picture": "image", "video": "video", "file": "file", "sticker": "sticker",
              "url": "link", "contact": "contact", "location": "location"},
    "telegram": {"photo": "image", "document": "file", "sticker": "sticker", "voice": "audio",
                 "location": "location", "contact": "contact"},
    "whatsapp": {"image": "image", "video": "video", "audio": "audio", "document": "file",
                 "sticker": "sticker", "location": "location", "contacts": "contact"},
}

def _expected(folder: str) -> dict[str, Any]:
    return json.loads((FIXTURES / folder / "expected.json").read_text("utf-8"))


def _cases(*folders: str) -> list[tuple[str, str]]:
    return [(folder, name) for folder in folders for name in sorted(_expected(folder))]


@pytest.fixture
def app(tmp_path, clean_environment, database_url):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text("rules: []\n", "utf-8")
    application = create_app({**p.SECRETS, "rules_dir": str(rules), "database_url": database_url})
    yield application
    application.extensions["rules_engine"].store.dispose()


def _post(client, folder: str, body: bytes):
    route = ROUTES[folder]
    return client.post(route, data=body, content_type="application/json",
                       headers=p.signed_headers(route, body))


def _parse(folder: str, body: bytes):
    """The same body read by the channel's adapter alone (to compare the events' fields)."""
    adapter = next(a for a in adapters().values() if a.route == ROUTES[folder])
    config = {s.name: p.SECRETS.get(s.name, s.default) for s in adapter.settings}
    return adapter.parse(body, {}, config=config, received_at=datetime.now(timezone.utc))


def _identity(folder: str, expected: str, event) -> None:
    external_id = event.contact.external_id
    if folder == "messenger" and external_id.startswith("user_ref:"):
        external_id = external_id.removeprefix("user_ref:")  # a chat-plugin guest's user_ref
    assert external_id == str(expected)


def _check_message(folder: str, item: dict[str, Any], event) -> None:
    message = event.message
    assert message.text == (item.get("text") or "")
    kinds = [a["type"] for a in message.attachments]
    media = item.get("media_type") or item.get("type")
    if folder == "messenger":
        assert kinds == [ATTACHMENT_OF[folder][k] for k in item.get("attachments", [])]
        assert message.quick_reply == item.get("quick_reply")
        assert message.postback == item.get("postback")
        assert message.reply_to == item.get("reply_to")
        if "referral" in item:
            wanted = {k: v for k, v in item["referral"].items() if v is not None}
            assert {k: v for k, v in event.params["referral"].items() if k in wanted} == wanted
    elif media in ATTACHMENT_OF[folder]:
        assert kinds == [ATTACHMENT_OF[folder][media]]
    if folder == "viber":
        assert event.id == f"viber:{item['token']}"
        if item.get("media"):
            assert message.attachments[0]["url"] == item["media"]
        if item.get("location") and abs(item["location"]["lat"]) <= 90:
            assert message.attachments[0]["latitude"] == item["location"]["lat"]
    if folder == "telegram":
        assert event.id == f"telegram:{item['update_id']}"
        assert event.contact.name == item["name"]
        assert message.postback == item.get("callback_data")
        assert message.edited is bool(item.get("edited"))
        if item.get("reply_to") is not None:
            assert message.reply_to == str(item["reply_to"])
    if folder == "whatsapp":
        assert event.id == f"whatsapp:{item['wamid']}"
        assert event.contact.name == item["name"]
        assert message.postback == item.get("interactive_id")
        if item.get("reply_to"):
            assert message.reply_to == item["reply_to"]
        if item.get("location"):
            assert message.attachments[0]["latitude"] == item["location"]["latitude"]


def _check_status(folder: str, item: dict[str, Any], event) -> None:
    """A status callback names the message we sent, and a failure its reason."""
    assert event.message is None
    if folder == "viber":  # Viber calls a read message "seen"
        callback = {"delivered": "delivered", "read": "seen", "failed": "failed"}[item["kind"]]
        assert event.id == f"viber:{callback}:{item['token']}"
        assert event.params["platform_message_id"] == str(item["token"])
    if "error" in item:
        assert event.params["error"]["message"] == item["error"]


@pytest.mark.parametrize("folder, name", _cases("messenger", "viber", "whatsapp", "telegram"))
def test_a_published_body_is_understood(app, folder, name):
    body = (FIXTURES / folder / name).read_bytes()
    items = _expected(folder)[name]["items"]
    client = app.test_client()
    response = _post(client, folder, body)
    assert response.status_code == 200, response.json
    wanted = [(item, EVENT_OF_KIND[item["kind"]]) for item in items]
    events = [(item, kind) for item, kind in wanted if kind is not None]
    assert len(response.json["results"]) == len(events)
    assert len(response.json["skipped"]) == len(wanted) - len(events)
    # a status about a message the engine did not send changes nothing (it is not ours)
    assert [result["status"] for result in response.json["results"]] == [
        "noop" if kind in MESSAGE_STATUS_TYPES else "applied" for _, kind in events]
    parsed = _parse(folder, body)
    assert [e.type for e in parsed.events] == [kind for _, kind in events]
    store = app.extensions["rules_engine"].store
    for (item, kind), event, result in zip(events, parsed.events, response.json["results"]):
        if "contact" in item:
            _identity(folder, item["contact"], event)
        assert event.channel == CHANNEL_OF[folder] and result["event_id"] == event.id
        if kind is EventType.MESSAGE_RECEIVED:
            _check_message(folder, item, event)
        if kind is EventType.MESSAGE_REACTION:  # the emoji, and the message reacted to
            assert (event.params["emoji"], event.params["message_id"]) == (
                item["emoji"], item["message_id"])
        if kind in MESSAGE_STATUS_TYPES:
            _check_status(folder, item, event)
            continue
        conversations = queries.contact_conversations(store, result["contact_id"])
        if kind in (EventType.MESSAGE_RECEIVED, EventType.WELCOME):
            source = "incoming_message" if kind is EventType.MESSAGE_RECEIVED else "welcome_event"
            assert [(c["status"], c["open_source"]) for c in conversations] == [("open", source)]
        else:  # a reply by the page, an opt-out, a reaction: never opens one
            assert conversations == []
    again = _post(client, folder, body)
    assert [r["status"] for r in again.json["results"]] == [
        "noop" if kind in MESSAGE_STATUS_TYPES else "duplicate" for _, kind in events]


def _status_cases() -> list[tuple[str, str]]:
    return [(folder, name) for folder, name in _cases("messenger", "whatsapp")
            if any(item["kind"] in STATUS_KINDS for item in _expected(folder)[name]["items"])]


@pytest.mark.parametrize("folder, name", _status_cases())
def test_a_published_status_is_read_as_its_event(folder, name):
    """What the adapter makes of a status webhook, without the engine."""
    items = _expected(folder)[name]["items"]
    parsed = _parse(folder, (FIXTURES / folder / name).read_bytes())
    assert [e.type for e in parsed.events] == [EVENT_OF_KIND[item["kind"]] for item in items]
    assert all(e.channel == CHANNEL_OF[folder] and e.message is None for e in parsed.events)
    assert parsed.skipped == ()


@pytest.mark.parametrize("folder, name", _cases("dialogflow_es", "dialogflow_cx"))
def test_a_published_fulfillment_finds_the_person_and_honours_rb_markdone(app, folder, name):
    body = (FIXTURES / folder / name).read_bytes()
    item = _expected(folder)[name]
    client = app.test_client()
    if item["contact"] is None:  # a request that names no session: nobody to act on
        response = _post(client, folder, body)
        assert response.status_code == 200
        assert response.json == {"payload": {"rules_engine": {"skipped": [
            {"path": "sessionInfo/session", "reason": "no_session",
             "detail": "the request names no session"}]}}}
        return
    opened = client.post("/webhooks/events", data=p.encode(
        {"id": f"open-{name}", "type": "message.received", "channel": item["contact_channel"],
         "contact": {"external_id": item["contact"]}, "message": {"text": "hi"}}),
        content_type="application/json", headers=p.signed_headers("/webhooks/events", p.encode(
            {"id": f"open-{name}", "type": "message.received", "channel": item["contact_channel"],
             "contact": {"external_id": item["contact"]}, "message": {"text": "hi"}})))
    assert opened.status_code == 200
    contact_id = opened.json["results"][0]["contact_id"]
    response = _post(client, folder, body)
    assert response.status_code == 200, response.json
    [result] = _parse(folder, body).events
    assert (result.channel, result.contact.external_id) == (item["contact_channel"], item["contact"])
    assert (result.intent["display_name"] or None) == item["intent"]
    [conversation] = queries.contact_conversations(app.extensions["rules_engine"].store, contact_id)
    if item["markdone"]:
        assert (conversation["status"], conversation["close_source"]) == ("closed", "dialogflow")
    else:
        assert conversation["status"] == "open"
