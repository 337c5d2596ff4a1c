"""What Meta's send APIs answer and report later, read by the WhatsApp and Messenger adapters.

``tests/fixtures/outbound/{whatsapp,messenger}/`` hold the published answers to a send and
the published status webhooks, with ``expected.json``: what Meta's documentation says each
one means. Every answer must become that verdict, every status that event.
"""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.channels.base import (
    Answer,
    AnswerKind,
    MetaWebhook,
    Pace,
    Unsendable,
    Verdict,
)
from connectors.channels.messenger import ADAPTER as MESSENGER
from connectors.channels.whatsapp import ADAPTER as WHATSAPP
from rules_engine import EventType

from . import webhook_payloads as p

FIXTURES = Path(__file__).parent / "fixtures" / "outbound"
PEERS = Path(__file__).resolve().parents[2] / "shared" / "peer-fixtures"  # beside the clone
ADAPTERS: dict[str, MetaWebhook] = {"whatsapp": WHATSAPP, "messenger": MESSENGER}
# expected.json's outcome of a status webhook -> the event it must become (None: skipped).
STATUS_EVENT = {"delivered": EventType.MESSAGE_DELIVERED, "read": EventType.MESSAGE_READ,
                "failed": EventType.MESSAGE_FAILED, "sent": None}
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
ENVIRON = {"WHATSAPP_ACCESS_TOKEN": "wa-token", "WHATSAPP_PHONE_NUMBER_ID": "106540352242922",
           "FACEBOOK_PAGE_ACCESS_TOKEN": "fb-token"}


def _expected(folder: str) -> dict[str, Any]:
    return json.loads((FIXTURES / folder / "expected.json").read_text("utf-8"))


def _is_webhook(name: str) -> bool:
    return name.startswith(("status_", "webhook_"))


def _cases(webhooks: bool) -> list[tuple[str, str]]:
    return [(folder, name) for folder in ADAPTERS for name in sorted(_expected(folder))
            if _is_webhook(name) is webhooks]


def _headers(**values: str) -> Message:
    headers = Message()
    for name, value in values.items():
        headers[name.replace("_", "-")] = value
    return headers


def answer(body: bytes | dict[str, Any], status: int = 400, **headers: str) -> Answer:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Answer(status, _headers(**headers), raw)


def parse(adapter: MetaWebhook, body: bytes | dict[str, Any]):
    raw = body if isinstance(body, bytes) else p.encode(body)
    config = {s.name: p.SECRETS.get(s.name, s.default) for s in adapter.settings}
    return adapter.parse(raw, {}, config=config, received_at=NOW)


# -- the answer to a send ------------------------------------------------------------------


@pytest.mark.parametrize("folder, name", _cases(webhooks=False))
def test_a_published_answer_means_what_meta_documents(folder, name):
    wanted = _expected(folder)[name]
    # Meta publishes no HTTP status for most answers (and says to read the code, not the
    # status): a 2xx for an acceptance, a 400 for an error, unless the docs give one.
    status = wanted["http_status"] or (200 if wanted["outcome"] == "sent" else 400)
    verdict = ADAPTERS[folder].classify(answer((FIXTURES / folder / name).read_bytes(), status))
    assert isinstance(verdict, Verdict)
    assert verdict.kind is AnswerKind(wanted["kind"] or "sent")
    assert verdict.code == (None if wanted["code"] is None else str(wanted["code"]))
    assert verdict.retry_after == wanted["retry_after"]
    assert verdict.platform_message_id == wanted["message_id"]
    if verdict.kind is not AnswerKind.SENT:  # the platform's own words, on one line
        error = json.loads((FIXTURES / folder / name).read_text("utf-8"))["error"]
        assert verdict.message.startswith(" ".join(error["message"].split())[:100])


@pytest.mark.parametrize("adapter", ADAPTERS.values(), ids=ADAPTERS)
def test_the_code_decides_before_the_http_status(adapter):
    throttled = {"error": {"message": "(#4) Application request limit reached", "code": 4}}
    assert adapter.classify(answer(throttled, 400)).kind is AnswerKind.RATE_LIMITED
    assert adapter.classify(answer(throttled, 500)).kind is AnswerKind.RATE_LIMITED
    expired = {"error": {"message": "Invalid OAuth access token.", "code": 190}}
    assert adapter.classify(answer(expired, 400)).kind is AnswerKind.AUTH


@pytest.mark.parametrize("adapter", ADAPTERS.values(), ids=ADAPTERS)
def test_retry_after_is_kept_on_a_rate_limit(adapter):
    verdict = adapter.classify(answer({"error": {"message": "(#613) Calls to this api have "
                                                            "exceeded the rate limit.", "code": 613}},
                                      400, Retry_After="120"))
    assert (verdict.kind, verdict.code, verdict.retry_after) == (AnswerKind.RATE_LIMITED, "613", 120.0)


@pytest.mark.parametrize("adapter", ADAPTERS.values(), ids=ADAPTERS)
def test_an_unknown_code_falls_back_to_the_http_status(adapter):
    unknown = {"error": {"message": "(#987654) Something new", "code": 987654,
                         "error_data": {"details": "Meta added a code"}}}
    for status, kind in ((400, AnswerKind.PERMANENT), (503, AnswerKind.TRANSIENT),
                         (429, AnswerKind.RATE_LIMITED), (401, AnswerKind.AUTH)):
        verdict = adapter.classify(answer(unknown, status))
        assert (verdict.kind, verdict.code) == (kind, "987654")
        assert verdict.message == "(#987654) Something new: Meta added a code"


@pytest.mark.parametrize("adapter", ADAPTERS.values(), ids=ADAPTERS)
def test_an_answer_that_is_not_meta_json_is_read_by_its_status(adapter):
    assert adapter.classify(answer(b"<html>Bad Gateway</html>", 502)).kind is AnswerKind.TRANSIENT
    assert adapter.classify(answer(b"", 429, Retry_After="7")) == Verdict(
        AnswerKind.RATE_LIMITED, "429", "", 7.0)
    assert adapter.classify(answer(b"", 401)).kind is AnswerKind.AUTH


@pytest.mark.parametrize("adapter", ADAPTERS.values(), ids=ADAPTERS)
def test_a_2xx_without_a_message_id_is_sent_without_one(adapter):
    """Meta documents no 2xx that is not an acceptance; calling again could send twice."""
    verdict = adapter.classify(answer(b"ok", 200))
    assert (verdict.kind, verdict.platform_message_id) == (AnswerKind.SENT, None)
    assert "without a message id" in verdict.message


def test_the_subcode_ends_the_message_and_the_code_stays_metas():
    verdict = MESSENGER.classify(answer((FIXTURES / "messenger" /
                                         "constructed_error_10_2018278_outside_window.json").read_bytes()))
    assert verdict.code == "10" and verdict.message.endswith("(subcode 2018278)")


# -- status webhooks ------------------------------------------------------------------------


@pytest.mark.parametrize("folder, name", _cases(webhooks=True))
def test_a_published_status_becomes_its_event(folder, name):
    wanted = _expected(folder)[name]
    body = (FIXTURES / folder / name).read_bytes()
    parsed = parse(ADAPTERS[folder], body)
    kind = STATUS_EVENT[wanted["outcome"]]
    if kind is None:
        assert parsed.events == ()
        [skipped] = parsed.skipped
        assert skipped.reason == "status" and skipped.detail.startswith("sent")
        return
    [event] = parsed.events
    assert parsed.skipped == ()
    assert (event.type, event.channel, event.message) == (kind, ADAPTERS[folder].channel, None)
    if wanted["message_id"] is not None:
        assert event.params["platform_message_id"] == wanted["message_id"]
    else:  # Messenger's read names a time: every message sent before it was read
        assert event.params["watermark"] == "2016-07-10T12:11:46.921Z"
    if kind is EventType.MESSAGE_FAILED:
        assert event.params["error"]["kind"] == wanted["kind"]
        assert event.params["error"]["code"] == str(wanted["code"])
        assert event.params["error"]["message"]
    assert set(event.params) <= {"platform_message_id", "watermark", "error"}
    assert parse(ADAPTERS[folder], body).events == parsed.events  # a repeat is the same event


def test_a_whatsapp_status_names_the_message_the_person_and_the_time():
    body = (FIXTURES / "whatsapp" / "status_failed_131047_reengagement.json").read_bytes()
    [event] = parse(WHATSAPP, body).events
    assert event.id == "whatsapp:status:wamid.H=====================================:failed"
    assert event.contact.external_id == "86501452171734"
    assert event.timestamp == datetime.fromtimestamp(1744609253, UTC)
    assert event.params["error"] == {
        "kind": "permanent", "code": "131047",
        "message": "Re-engagement message: Message failed to send because more than 24 hours "
                   "have passed since the customer last replied to this number."}


def _whatsapp_statuses(*statuses: Any) -> dict[str, Any]:
    return {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [
        {"field": "messages", "value": {"messaging_product": "whatsapp", "statuses": list(statuses)}}]}]}


def test_a_whatsapp_status_of_a_hidden_number_names_the_user_id():
    body = (Path(__file__).parent / "fixtures" / "channels" / "whatsapp" /
            "status_delivered_bsuid_no_phone.json").read_bytes()
    [event] = parse(WHATSAPP, body).events
    assert event.contact.external_id == "US.13491208655302741918"


def test_whatsapp_statuses_that_are_not_a_delivery_read_or_failure_are_skipped():
    parsed = parse(WHATSAPP, _whatsapp_statuses(
        {"id": "wamid.1", "status": "played", "timestamp": "1750030073", "recipient_id": "1650"},
        {"id": "wamid.2", "status": "failed", "timestamp": "1750030073", "recipient_id": "1650"},
        {"status": "delivered", "timestamp": "1750030073", "recipient_id": "1650"}))
    [failed] = parsed.events
    assert failed.params["error"] == {"kind": "permanent", "code": "",
                                      "message": "the platform reported the failure without an error"}
    assert [(s.path.split("value/")[1], s.reason) for s in parsed.skipped] == [
        ("statuses/0", "status"), ("statuses/2/id", "invalid_item")]


def _messenger(*items: dict[str, Any]) -> dict[str, Any]:
    return p.messenger(*items)


def test_a_messenger_delivery_is_one_event_per_message():
    parsed = parse(MESSENGER, _messenger({
        "sender": {"id": "PSID-1"}, "recipient": {"id": "PAGE_1"}, "timestamp": 1_764_061_200_500,
        "delivery": {"mids": ["m_1", "m_2"], "watermark": 1_764_061_200_000}}))
    assert [(e.id, e.type, e.contact.external_id, dict(e.params)) for e in parsed.events] == [
        ("facebook:delivery:m_1", EventType.MESSAGE_DELIVERED, "PSID-1", {"platform_message_id": "m_1"}),
        ("facebook:delivery:m_2", EventType.MESSAGE_DELIVERED, "PSID-1", {"platform_message_id": "m_2"})]
    assert parsed.events[0].timestamp == datetime.fromtimestamp(1_764_061_200.5, UTC)


def test_a_messenger_delivery_without_mids_names_its_watermark():
    """Meta: "watermark is always present and mids is sometimes present"; the documented
    example has no timestamp, and some captured ones carry 0: the time of receipt."""
    for stamp in ({}, {"timestamp": 0}):
        [event] = parse(MESSENGER, _messenger({
            "sender": {"id": "PSID-2"}, "recipient": {"id": "PAGE_1"}, **stamp,
            "delivery": {"watermark": 1_764_061_200_000}})).events
        assert (event.id, event.type) == ("facebook:delivery:PSID-2:1764061200000",
                                          EventType.MESSAGE_DELIVERED)
        assert dict(event.params) == {"watermark": "2025-11-25T09:00:00.000Z"}
        assert event.timestamp == NOW


def test_a_messenger_read_names_its_watermark():
    [event] = parse(MESSENGER, _messenger({
        "sender": {"id": "PSID-3"}, "recipient": {"id": "PAGE_1"}, "timestamp": 1_764_061_300_000,
        "read": {"watermark": 1_764_061_200_000}})).events
    assert (event.id, event.type, event.contact.external_id) == (
        "facebook:read:PSID-3:1764061200000", EventType.MESSAGE_READ, "PSID-3")
    assert dict(event.params) == {"watermark": "2025-11-25T09:00:00.000Z"}


def test_an_unusable_messenger_receipt_is_skipped():
    parsed = parse(MESSENGER, _messenger(
        {"sender": {"id": "PSID-4"}, "recipient": {"id": "PAGE_1"}, "read": {"watermark": "soon"}},
        {"sender": {"id": "PSID-4"}, "recipient": {"id": "PAGE_1"}, "delivery": [1]},
        p.fb_message("PSID-4", "m_4", "still here")))
    assert [e.id for e in parsed.events] == ["facebook:m_4"]
    assert [s.reason for s in parsed.skipped] == ["invalid_item", "invalid_item"]


@pytest.mark.skipif(not PEERS.is_dir(), reason="no peer fixtures on this machine")
@pytest.mark.parametrize("folder, name, kind", [
    ("whatsapp", "pywa-message-status-delivered.json", EventType.MESSAGE_DELIVERED),
    ("whatsapp", "pywa-message-status-read.json", EventType.MESSAGE_READ),
    ("whatsapp", "pywa-message-status-failed.json", EventType.MESSAGE_FAILED),
    ("whatsapp", "pywa-message-status-group.json", EventType.MESSAGE_READ),
    ("whatsapp", "pywa-message-status-sent.json", None),
    ("whatsapp", "pywa-message-status-with-tracker.json", None),
    ("whatsapp", "pywa-message-status-played.json", None),
    ("messenger", "bottender-delivery.json", EventType.MESSAGE_DELIVERED),
    ("messenger", "fbm-delivery-payload.json", EventType.MESSAGE_DELIVERED),
    ("messenger", "bottender-read.json", EventType.MESSAGE_READ),
    ("messenger", "fbm-read-payload.json", EventType.MESSAGE_READ),
])
def test_peer_libraries_status_bodies_become_events(folder, name, kind):
    path = PEERS / folder / name
    if not path.is_file():
        pytest.skip(f"{name} is not among the peer fixtures")
    body = json.loads(path.read_text("utf-8"))
    parsed = parse(ADAPTERS[folder], body)
    if kind is None:
        assert parsed.events == () and [s.reason for s in parsed.skipped] == ["status"]
        return
    assert parsed.events and {e.type for e in parsed.events} == {kind}
    if folder == "messenger":
        item = body["entry"][0]["messaging"][0]
        receipt = item.get("delivery") or item["read"]
        assert [e.params.get("platform_message_id") for e in parsed.events] == (
            receipt.get("mids") or [None])
        assert all(e.contact.external_id == item["sender"]["id"] for e in parsed.events)
    else:
        [status] = body["entry"][0]["changes"][0]["value"]["statuses"]
        [event] = parsed.events
        assert event.id == f"whatsapp:status:{status['id']}:{status['status']}"
        assert event.contact.external_id == status["recipient_id"]


# -- what is sent ---------------------------------------------------------------------------


def test_whatsapp_sends_text_and_reads_the_answer_itself():
    call = WHATSAPP.outbound("16505551234", {"channel": "whatsapp", "text": "hello"}, ENVIRON)
    assert call.body == {"messaging_product": "whatsapp", "recipient_type": "individual",
                         "to": "16505551234", "type": "text",
                         "text": {"preview_url": False, "body": "hello"}}
    assert call.classify == WHATSAPP.classify


def test_whatsapp_sends_a_template_with_positional_parameters():
    call = WHATSAPP.outbound("16505551234", {"channel": "whatsapp", "template": {
        "name": "order_update", "language": "en_US", "parameters": ["Ada", "#1234"]}}, ENVIRON)
    assert call.body["type"] == "template" and "text" not in call.body
    assert call.body["template"] == {
        "name": "order_update", "language": {"code": "en_US"},
        "components": [{"type": "body", "parameters": [{"type": "text", "text": "Ada"},
                                                       {"type": "text", "text": "#1234"}]}]}


def test_whatsapp_sends_a_template_with_named_parameters():
    call = WHATSAPP.outbound("US.13491208655302741918", {"channel": "whatsapp", "template": {
        "name": "order_confirmation", "language": "en_US",
        "parameters": {"customer_name": "Jessica", "order_number": "SKBUP2"}}}, ENVIRON)
    assert call.body["recipient"] == "US.13491208655302741918"
    assert call.body["template"]["components"] == [{"type": "body", "parameters": [
        {"type": "text", "parameter_name": "customer_name", "text": "Jessica"},
        {"type": "text", "parameter_name": "order_number", "text": "SKBUP2"}]}]


def test_a_template_without_parameters_has_no_components():
    call = WHATSAPP.outbound("16505551234", {"channel": "whatsapp", "template": {
        "name": "hello_world", "language": "en_US"}}, ENVIRON)
    assert call.body["template"] == {"name": "hello_world", "language": {"code": "en_US"}}


@pytest.mark.parametrize("adapter, content", [
    (WHATSAPP, {"channel": "whatsapp", "text": "hi", "tag": "HUMAN_AGENT"}),
    (WHATSAPP, {"channel": "whatsapp", "template": {"name": "x"}}),
    (WHATSAPP, {"channel": "whatsapp", "template": {"name": "x", "language": "en", "parameters": 3}}),
    (MESSENGER, {"channel": "facebook", "template": {"name": "x", "language": "en"}}),
    (MESSENGER, {"channel": "facebook", "text": "hi", "tag": "PROMOTION"}),
    (MESSENGER, {"channel": "facebook"}),
], ids=["tag-on-whatsapp", "template-without-language", "parameters-not-a-list",
        "template-on-messenger", "unknown-tag", "no-text"])
def test_content_the_channel_cannot_carry_is_unsendable(adapter, content):
    with pytest.raises(Unsendable):
        adapter.outbound("16505551234", content, ENVIRON)


def test_messenger_sends_text_as_a_response_or_with_a_tag():
    plain = MESSENGER.outbound("PSID-1", {"channel": "facebook", "text": "hi"}, ENVIRON)
    assert plain.body == {"recipient": {"id": "PSID-1"}, "messaging_type": "RESPONSE",
                          "message": {"text": "hi"}}
    assert plain.classify == MESSENGER.classify
    tagged = MESSENGER.outbound("PSID-1", {"channel": "facebook", "text": "an agent here",
                                           "tag": "HUMAN_AGENT"}, ENVIRON)
    assert tagged.body == {"recipient": {"id": "PSID-1"}, "messaging_type": "MESSAGE_TAG",
                           "tag": "HUMAN_AGENT", "message": {"text": "an agent here"}}


def test_the_windows_and_the_pace_are_meta_documented_ones():
    assert WHATSAPP.reply_window == MESSENGER.reply_window == timedelta(hours=24)
    assert WHATSAPP.tag_windows == {}
    assert MESSENGER.tag_windows == {"HUMAN_AGENT": timedelta(days=7), "ACCOUNT_UPDATE": None,
                                     "CONFIRMED_EVENT_UPDATE": None, "POST_PURCHASE_UPDATE": None}
    assert WHATSAPP.pace == Pace(recipient_interval=6.0, channel_interval=1 / 80)
    assert MESSENGER.pace == Pace(channel_interval=1 / 300)


# -- nothing a platform (or anyone) sends makes them raise ----------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20)
ERRORS = st.fixed_dictionaries({}, optional={
    "message": JSON, "title": JSON, "code": st.integers() | JSON, "error_subcode": JSON,
    "error_data": st.fixed_dictionaries({}, optional={"details": JSON}) | JSON})


@settings(max_examples=300, deadline=None, derandomize=True)
@given(status=st.integers(100, 599), body=st.binary(max_size=200) | st.builds(
    lambda error, extra: json.dumps({"error": error, **extra}).encode(),
    ERRORS, st.dictionaries(st.sampled_from(["messages", "message_id"]), JSON, max_size=2)),
    retry_after=st.none() | st.text(max_size=30))
def test_classify_always_returns_a_verdict(status, body, retry_after):
    headers = {} if retry_after is None else {"Retry_After": retry_after}
    for adapter in ADAPTERS.values():
        try:
            reply = answer(body, status, **headers)
        except ValueError:  # a header value email.message refuses: not an answer we can get
            return
        verdict = adapter.classify(reply)
        assert isinstance(verdict, Verdict) and isinstance(verdict.kind, AnswerKind)
        assert len(verdict.message) <= 303


STATUS_ITEM = st.fixed_dictionaries({}, optional={
    "id": JSON, "status": st.sampled_from(["sent", "delivered", "read", "failed"]) | JSON,
    "timestamp": st.just("1750030073") | JSON, "recipient_id": JSON, "recipient_user_id": JSON,
    "errors": st.lists(ERRORS, max_size=2) | JSON}) | JSON
RECEIPT = st.fixed_dictionaries({}, optional={"mids": st.lists(JSON, max_size=3) | JSON,
                                              "watermark": st.integers() | JSON}) | JSON


@settings(max_examples=300, deadline=None, derandomize=True)
@given(statuses=st.lists(STATUS_ITEM, max_size=3), receipt=RECEIPT,
       key=st.sampled_from(["delivery", "read"]), sender=JSON, timestamp=JSON)
def test_status_parsing_never_raises_and_skips_what_it_cannot_use(statuses, receipt, key,
                                                                  sender, timestamp):
    parsed = parse(WHATSAPP, _whatsapp_statuses(*statuses))
    assert len(parsed.skipped) + len({e.params["platform_message_id"] for e in parsed.events}) >= 1 \
        or statuses == []
    item = {"sender": sender, "recipient": {"id": "PAGE_1"}, "timestamp": timestamp, key: receipt}
    parsed = parse(MESSENGER, _messenger(item))
    assert parsed.events or [s.reason for s in parsed.skipped] == ["invalid_item"]
