"""Every kind of message means what the platform documents, the same on every channel.

An edit is the contact writing again (``message.received``, ``message.edited``); a
deletion (``message.deleted``) and a reaction (``message.reaction``) never open or reopen
a conversation and never restart an idle clock; a reply typed in a business app that the
platform echoes is an agent's reply (``message.sent``); Telegram Business messages are the
contact's, and replies go back through the business connection; a structured reply keeps
its answers in ``params.answers``; a callback without an id of its own is named by its
body. Bodies are posted signed to the app running the example rules (``rules/``).
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from connectors import create_app
from connectors.channels import adapters
from connectors.outbox import OutboxWorker
from rules_engine import EventType, outbox, queries

from . import webhook_payloads as p
from .receiver import receiving
from .test_outbox import clock_from, environ_for

REPO = Path(__file__).resolve().parents[1]
# Sunday 1 November 2026, 03:00 in Paris: outside the example rules' business hours, where
# any message from a contact queues reply-outside-business-hours.
SUNDAY = datetime(2026, 11, 1, 2, 0, tzinfo=timezone.utc)
WA_USER = "16505551234"


@pytest.fixture
def app(example_app):
    return example_app


def post(app, route: str, data: dict[str, Any]) -> dict[str, Any]:
    body = p.encode(data)
    response = app.test_client().post(route, data=body, content_type="application/json",
                                      headers=p.signed_headers(route, body))
    assert response.status_code == 200, response.json
    return response.json


def conversations(app, contact_id: int) -> list[dict[str, Any]]:
    return queries.contact_conversations(app.extensions["rules_engine"].store, contact_id)


def timers(app) -> list[tuple[str, datetime]]:
    with app.extensions["rules_engine"].store.read() as tx:
        return [(timer.id, timer.due_at) for timer in tx.timers()]


def queued(app) -> int:
    return len(outbox.list_outbound(app.extensions["rules_engine"].store, limit=1000))


def opened(result: dict[str, Any]) -> bool:
    return any(c["operation"] == "open_conversation" for c in result["changes"])


# -- bodies, in the platforms' documented shapes ------------------------------------------------


def whatsapp(at: datetime, *messages: dict[str, Any], field: str = "messages") -> dict[str, Any]:
    """A Cloud API body: ``messages[]`` (or, for smb_message_echoes, ``message_echoes[]``)."""
    key = "message_echoes" if field == "smb_message_echoes" else "messages"
    stamped = [{"timestamp": str(int(at.timestamp())), **m} for m in messages]
    return {"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [
        {"field": field, "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
            "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": WA_USER}],
            key: stamped}}]}]}


def wa_text(wamid: str, text: str) -> dict[str, Any]:
    return {"from": WA_USER, "id": wamid, "type": "text", "text": {"body": text}}


def wa_edit(wamid: str, original: str, text: str) -> dict[str, Any]:
    return {"from": WA_USER, "id": wamid, "type": "edit", "edit": {
        "original_message_id": original, "message": {"type": "text", "text": {"body": text}}}}


def wa_revoke(wamid: str, original: str) -> dict[str, Any]:
    return {"from": WA_USER, "id": wamid, "type": "revoke",
            "revoke": {"original_message_id": original}}


def telegram_business(update_id: int, at: datetime, *, text: str, sender: int = 42,
                      kind: str = "business_message") -> dict[str, Any]:
    return {"update_id": update_id, kind: {
        "business_connection_id": "BC-1", "message_id": update_id, "date": int(at.timestamp()),
        "chat": {"id": 42, "type": "private", "first_name": "Ada"},
        "from": {"id": sender, "is_bot": False, "first_name": "Ada" if sender == 42 else "Shop"},
        "text": text}}


# Per platform: a message from the contact, and the same contact reacting to it.
def _reaction_bodies(at: datetime) -> dict[str, tuple[str, dict[str, Any], dict[str, Any]]]:
    ms = int(at.timestamp() * 1000)
    later = at + timedelta(hours=1)
    return {
        "whatsapp": ("/webhooks/whatsapp", whatsapp(at, wa_text("wamid.R1", "hello")),
                     whatsapp(later, {"from": WA_USER, "id": "wamid.R2", "type": "reaction",
                                      "reaction": {"message_id": "wamid.OURS", "emoji": "👍"}})),
        "telegram": ("/webhooks/telegram",
                     {"update_id": 500, "message": {
                         "message_id": 7, "date": int(at.timestamp()), "text": "hello",
                         "chat": {"id": 42, "type": "private"},
                         "from": {"id": 42, "is_bot": False, "first_name": "Ada"}}},
                     {"update_id": 501, "message_reaction": {
                         "chat": {"id": 42, "type": "private"}, "message_id": 8,
                         "user": {"id": 42, "is_bot": False, "first_name": "Ada"},
                         "date": int(later.timestamp()), "old_reaction": [],
                         "new_reaction": [{"type": "emoji", "emoji": "👍"}]}}),
        "facebook": ("/webhooks/facebook", p.messenger(p.fb_message("PSID-9", "m_1", "hello", ms)),
                     p.messenger({"sender": {"id": "PSID-9"}, "recipient": {"id": "PAGE_1"},
                                  "timestamp": ms + 3_600_000, "reaction": {
                                      "reaction": "like", "emoji": "👍", "action": "react",
                                      "mid": "m_ours"}})),
    }


# -- edits and deletions ------------------------------------------------------------------------


def test_a_whatsapp_edit_to_thank_you_closes_through_close_on_thanks(app):
    [first] = post(app, "/webhooks/whatsapp", whatsapp(SUNDAY, wa_text("wamid.A", "where is it?")))["results"]
    [edit] = post(app, "/webhooks/whatsapp", whatsapp(
        SUNDAY + timedelta(minutes=5), wa_edit("wamid.B", "wamid.A", "thank you")))["results"]
    assert "close-on-thanks" in edit["fired"]
    [conversation] = conversations(app, first["contact_id"])
    assert (conversation["status"], conversation["close_source"]) == ("closed", "automation")
    trace = queries.event_trace(app.extensions["rules_engine"].store, edit["event_id"])
    assert trace["type"] == "message.received"


def test_a_revoke_after_a_close_reopens_nothing_and_queues_nothing(app):
    post(app, "/webhooks/whatsapp", whatsapp(SUNDAY, wa_text("wamid.C", "thanks")))
    before = queued(app)
    [revoke] = post(app, "/webhooks/whatsapp", whatsapp(
        SUNDAY + timedelta(minutes=5), wa_revoke("wamid.D", "wamid.C")))["results"]
    assert revoke["status"] == "applied" and revoke["event_id"] == "whatsapp:deleted:wamid.D"
    assert "note-deleted-message" in revoke["fired"] and not opened(revoke)
    assert [c["status"] for c in conversations(app, revoke["contact_id"])] == ["closed"]
    assert queued(app) == before  # no out-of-hours reply: the contact did not write


def test_a_telegram_business_deletion_is_one_message_deleted_per_message(app):
    post(app, "/webhooks/telegram", telegram_business(600, SUNDAY, text="hello"))
    before = timers(app)
    results = post(app, "/webhooks/telegram", {"update_id": 601, "deleted_business_messages": {
        "business_connection_id": "BC-1", "chat": {"id": 42, "type": "private"},
        "message_ids": [600, 599]}})["results"]
    assert [r["event_id"] for r in results] == ["telegram:601:600", "telegram:601:599"]
    assert [r["status"] for r in results] == ["applied", "applied"]
    assert timers(app) == before  # the idle clocks run on from the contact's last message


# -- reactions ----------------------------------------------------------------------------------


@pytest.mark.parametrize("platform", ["whatsapp", "telegram", "facebook"])
def test_a_reaction_is_message_reaction_opens_nothing_and_restarts_no_idle_clock(app, platform):
    route, message, reaction = _reaction_bodies(SUNDAY)[platform]
    post(app, route, message)
    clocks = timers(app)
    assert clocks  # the example rules' idle clocks started with the conversation
    [reacted] = post(app, route, reaction)["results"]
    assert reacted["status"] == "applied" and not opened(reacted)
    assert timers(app) == clocks
    trace = queries.event_trace(app.extensions["rules_engine"].store, reacted["event_id"])
    assert trace["type"] == "message.reaction" and "unhappy-reaction-flags" not in reacted["fired"]
    assert post(app, route, reaction)["results"][0]["status"] == "duplicate"


@pytest.mark.parametrize("platform", ["whatsapp", "telegram", "facebook"])
def test_a_reaction_from_someone_with_no_open_conversation_opens_none(app, platform):
    route, _, reaction = _reaction_bodies(SUNDAY)[platform]
    [reacted] = post(app, route, reaction)["results"]
    assert conversations(app, reacted["contact_id"]) == [] and queued(app) == 0


def test_a_thumbs_down_flags_the_contact_through_the_example_rule(app):
    reaction = {"from": WA_USER, "id": "wamid.E", "type": "reaction",
                "reaction": {"message_id": "wamid.OURS", "emoji": "👎"}}
    [result] = post(app, "/webhooks/whatsapp", whatsapp(SUNDAY, reaction))["results"]
    assert "unhappy-reaction-flags" in result["fired"]


# -- replies from a business app, and Telegram Business -----------------------------------------


def test_a_business_app_echo_is_the_first_response(app):
    [wrote] = post(app, "/webhooks/whatsapp", whatsapp(SUNDAY, wa_text("wamid.F", "hello?")))["results"]
    echo = {"from": "15550783881", "to": WA_USER, "id": "wamid.G", "type": "text",
            "text": {"body": "Hi Sheena, how can we help?"}}
    [reply] = post(app, "/webhooks/whatsapp", whatsapp(
        SUNDAY + timedelta(minutes=3), echo, field="smb_message_echoes"))["results"]
    assert reply["contact_id"] == wrote["contact_id"] and not opened(reply)
    [conversation] = conversations(app, wrote["contact_id"])
    answered = (SUNDAY + timedelta(minutes=3)).isoformat()
    assert (conversation["first_response_at"], conversation["last_reply_at"]) == (answered, answered)


def test_a_telegram_business_message_opens_and_the_reply_goes_through_its_connection(app):
    [wrote] = post(app, "/webhooks/telegram", telegram_business(700, SUNDAY, text="open?"))["results"]
    [conversation] = conversations(app, wrote["contact_id"])
    assert (conversation["status"], conversation["open_source"]) == ("open", "incoming_message")
    store = app.extensions["rules_engine"].store
    with receiving() as api:  # reply-outside-business-hours queued the out-of-hours reply
        OutboxWorker(store, worker_id="w1", environ=environ_for(api.url),
                     clock=clock_from(SUNDAY + timedelta(minutes=1))).run_once()
    [delivery] = api.deliveries
    assert delivery.path.endswith("/sendMessage")
    assert (delivery.body["business_connection_id"], delivery.body["chat_id"]) == ("BC-1", 42)


def test_the_business_accounts_own_message_is_a_reply_not_the_contact_writing(app):
    post(app, "/webhooks/telegram", telegram_business(800, SUNDAY, text="hello"))
    [reply] = post(app, "/webhooks/telegram", telegram_business(
        801, SUNDAY + timedelta(minutes=2), text="Hi!", sender=1000))["results"]
    trace = queries.event_trace(app.extensions["rules_engine"].store, reply["event_id"])
    assert trace["type"] == "message.sent" and not opened(reply)
    [conversation] = conversations(app, reply["contact_id"])
    assert conversation["first_response_at"] == (SUNDAY + timedelta(minutes=2)).isoformat()


# -- opt-outs and ids from the body -------------------------------------------------------------


def test_a_viber_unsubscribe_without_a_token_is_recorded_and_a_repeat_is_a_duplicate(app):
    post(app, "/webhooks/viber", p.viber_message("01234567890A=", 4912661846655238145, "hi"))
    gone = {"event": "unsubscribed", "timestamp": 1_764_061_320_000, "user_id": "01234567890A="}
    [result] = post(app, "/webhooks/viber", gone)["results"]
    assert result["status"] == "applied" and result["event_id"].startswith("viber:unsubscribed:")
    assert "unsubscribed-closes" in result["fired"]
    with app.extensions["rules_engine"].store.read() as tx:
        identity = tx.identity("viber", "01234567890A=")
    assert identity["opted_out_at"] is not None
    assert post(app, "/webhooks/viber", gone)["results"][0]["status"] == "duplicate"


# -- structured replies -------------------------------------------------------------------------

ANSWERS_RULES = """
rules:
  - id: poor-delivery
    trigger: {event: message.received, channels: [whatsapp]}
    conditions: ["params.reply_type == 'nfm_reply'", "params.answers.delivery_rating in ('1', '2')"]
    actions: [{add_tag: {tag: poor-delivery}}]
  - id: picked
    trigger: {event: message.received, channels: [whatsapp]}
    conditions: ["params.reply_type == 'list_reply'"]
    actions: [{set_field: {name: picked, expr: params.answers.id}}]
"""


def test_a_flow_and_a_list_reply_keep_their_answers_for_conditions(tmp_path, clean_environment,
                                                                   database_url):
    (tmp_path / "rules.yaml").write_text(ANSWERS_RULES, "utf-8")
    app = create_app({**p.SECRETS, "rules_dir": str(tmp_path), "database_url": database_url})
    flow = {"from": WA_USER, "id": "wamid.H", "type": "interactive", "interactive": {
        "type": "nfm_reply", "nfm_reply": {"name": "flow", "body": "Sent", "response_json": json.dumps(
            {"flow_token": "T-1", "delivery_rating": "2", "comment_text": "late"})}}}
    choice = {"from": WA_USER, "id": "wamid.I", "type": "interactive", "interactive": {
        "type": "list_reply", "list_reply": {"id": "size-m", "title": "Medium"}}}
    try:
        [rated] = post(app, "/webhooks/whatsapp", whatsapp(SUNDAY, flow))["results"]
        [picked] = post(app, "/webhooks/whatsapp", whatsapp(SUNDAY, choice))["results"]
        assert rated["fired"] == ["poor-delivery"] and picked["fired"] == ["picked"]
        with app.extensions["rules_engine"].store.read() as tx:
            assert tx.fields(picked["contact_id"])["picked"] == "size-m"
    finally:
        app.extensions["rules_engine"].store.dispose()


# -- what the adapters read, alone --------------------------------------------------------------


def parse(channel: str, data: dict[str, Any]):
    adapter = adapters()[channel]
    config = {s.name: p.SECRETS.get(s.name, s.default) for s in adapter.settings}
    return adapter.parse(p.encode(data), {}, config=config, received_at=SUNDAY)


@pytest.mark.parametrize("channel, data", [
    ("whatsapp", whatsapp(SUNDAY, {"from": WA_USER, "id": "wamid.J", "type": "reaction",
                                   "reaction": {"message_id": "wamid.OURS"}})),
    ("telegram", {"update_id": 900, "message_reaction": {
        "chat": {"id": 42, "type": "private"}, "message_id": 8, "date": int(SUNDAY.timestamp()),
        "user": {"id": 42, "is_bot": False, "first_name": "Ada"},
        "old_reaction": [{"type": "emoji", "emoji": "👍"}], "new_reaction": []}}),
    ("facebook", p.messenger({"sender": {"id": "PSID-9"}, "recipient": {"id": "PAGE_1"},
                              "timestamp": 1_764_061_200_000, "reaction": {
                                  "reaction": "like", "emoji": "👍", "action": "unreact",
                                  "mid": "m_ours"}})),
])
def test_a_reaction_taken_back_is_skipped_on_every_platform(channel, data):
    parsed = parse(channel, data)
    assert parsed.events == () and [s.reason for s in parsed.skipped] == ["reaction_removed"]


def test_what_each_kind_carries():
    [messenger] = parse("facebook", _reaction_bodies(SUNDAY)["facebook"][2]).events
    assert messenger.id == f"facebook:reaction:PSID-9:{int(SUNDAY.timestamp() * 1000) + 3_600_000}"
    assert dict(messenger.params) == {"emoji": "👍", "message_id": "m_ours", "reaction": "like"}
    call = {"from": WA_USER, "id": "wamid.K", "type": "interactive", "interactive": {
        "type": "call_permission_reply", "call_permission_reply": {
            "response": "accept", "expiration_timestamp": 1_753_186_982,
            "response_source": "user_action"}}}
    [permission] = parse("whatsapp", whatsapp(SUNDAY, call)).events
    assert permission.params["answers"] == {"response": "accept", "expiration_timestamp": 1_753_186_982,
                                            "response_source": "user_action"}
    by_bot = telegram_business(901, SUNDAY, text="On it!", sender=1000)
    by_bot["business_message"]["sender_business_bot"] = {"id": 77, "is_bot": True,
                                                         "username": "shop_bot"}
    [reply] = parse("telegram", by_bot).events
    assert (reply.type, reply.actor, reply.contact.external_id) == (
        EventType.MESSAGE_SENT, "bot:shop_bot", "business:BC-1:42")
