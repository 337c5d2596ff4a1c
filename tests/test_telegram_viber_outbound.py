"""What Telegram's and Viber's send APIs answer, and what Viber reports later.

Each folder under ``tests/fixtures/outbound/`` holds answers the platforms publish (their
documentation, their own server source, public SDKs' fixtures; ``SOURCES.md`` names each)
and ``expected.json``: what the documentation says each answer means. The adapter's
``classify`` must read every one of them that way. Viber's ``callback_*`` bodies are
status webhooks: they become ``message.delivered``, ``message.read`` and
``message.failed``. The peer libraries' callbacks (``shared/peer-fixtures``) are read in
place when present, never copied.
"""
from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.channels.base import Answer, AnswerKind, Unsendable, Verdict, one_line
from connectors.channels.telegram import ADAPTER as TELEGRAM
from connectors.channels.viber import ADAPTER as VIBER
from rules_engine import EventType

from . import webhook_payloads as p

OUTBOUND = Path(__file__).parent / "fixtures" / "outbound"
PEERS = Path(__file__).resolve().parents[2] / "shared" / "peer-fixtures"
ADAPTERS = {"telegram": TELEGRAM, "viber": VIBER}
# expected.json's vocabulary -> the outbox's (an accepted send is "sent", with no kind).
KIND_OF = {"sent": AnswerKind.SENT, "transient": AnswerKind.TRANSIENT,
           "rate_limited": AnswerKind.RATE_LIMITED, "permanent": AnswerKind.PERMANENT,
           "auth": AnswerKind.AUTH}
STATUS_OF_CALLBACK = {"delivered": EventType.MESSAGE_DELIVERED, "seen": EventType.MESSAGE_READ,
                      "failed": EventType.MESSAGE_FAILED}
ENVIRON = {"TELEGRAM_BOT_TOKEN": "123:tg-token", "VIBER_AUTH_TOKEN": "viber-token"}


def _expected(folder: str) -> dict[str, Any]:
    return json.loads((OUTBOUND / folder / "expected.json").read_text("utf-8"))


def _answers(folder: str) -> list[tuple[str, str]]:
    return [(folder, name) for name in sorted(_expected(folder))
            if not name.startswith("callback_")]


def answer(status: int, body: bytes | str, **headers: str) -> Answer:
    found: Any = Message()  # as the worker's HTTP client gives them
    for name, value in headers.items():
        found[name.replace("_", "-")] = value
    return Answer(status, found, body.encode() if isinstance(body, str) else body)


def parse_viber(body: bytes):
    """A Viber callback as the webhook reads it: signed with the bot's token, then parsed."""
    headers = p.signed_headers("/webhooks/viber", body)
    config = {s.name: p.SECRETS.get(s.name, s.default) for s in VIBER.settings}
    VIBER.authenticate(body, headers, config=config, dev=False)
    return VIBER.parse(body, headers, config=config, received_at=datetime.now(UTC))


# -- every published answer ---------------------------------------------------------------------


@pytest.mark.parametrize("folder, name", _answers("telegram") + _answers("viber"))
def test_a_published_answer_means_what_the_docs_say(folder, name):
    item = _expected(folder)[name]
    body = (OUTBOUND / folder / name).read_bytes()
    # Viber documents no HTTP status: its refusals come in a 200's body.
    verdict = ADAPTERS[folder].classify(answer(item["http_status"] or 200, body))
    assert verdict.kind is KIND_OF[item["kind"] or item["outcome"]]
    if verdict.kind is AnswerKind.SENT:
        assert verdict.code is None
        assert verdict.platform_message_id == str(item["message_id"])
    else:
        assert verdict.code == str(item["code"])
        assert verdict.platform_message_id is None
        assert verdict.message  # the platform's own words are kept
    assert verdict.retry_after == item["retry_after"]


def test_a_telegram_refusal_keeps_its_description_and_where_the_group_went():
    verdict = TELEGRAM.classify(answer(400, (OUTBOUND / "telegram" /
                                             "error_400_migrate_to_chat_id.json").read_bytes()))
    assert verdict.message == ("Bad Request: group chat was upgraded to a supergroup chat "
                               "(migrate_to_chat_id -1001557912345)")
    blocked = TELEGRAM.classify(answer(403, (OUTBOUND / "telegram" /
                                             "error_403_bot_blocked.json").read_bytes()))
    assert blocked.message == "Forbidden: bot was blocked by the user"


def test_a_viber_refusal_keeps_its_status_message():
    verdict = VIBER.classify(answer(200, (OUTBOUND / "viber" /
                                          "constructed_error_6_receiverNotSubscribed.json").read_bytes()))
    assert (verdict.kind, verdict.code, verdict.message) == (
        AnswerKind.PERMANENT, "6", "receiverNotSubscribed")


# -- Telegram: what the fixtures do not show ----------------------------------------------------


def test_telegram_429_without_parameters_waits_as_the_retry_after_header_says():
    body = '{"ok":false,"error_code":429,"description":"Too Many Requests"}'
    assert TELEGRAM.classify(answer(429, body, Retry_After="35")).retry_after == 35
    assert TELEGRAM.classify(answer(429, body)).retry_after is None


def test_telegram_parameters_retry_after_wins_and_an_absurd_wait_is_bounded():
    body = '{"ok":false,"error_code":429,"description":"x","parameters":{"retry_after":%s}}'
    assert TELEGRAM.classify(answer(429, body % 5, Retry_After="60")).retry_after == 5
    assert TELEGRAM.classify(answer(429, body % 10**9)).retry_after == 7 * 86400
    assert TELEGRAM.classify(answer(429, body % -3, Retry_After="60")).retry_after == 60


@pytest.mark.parametrize("status, body, kind", [
    (502, "<html><head><title>502 Bad Gateway</title></head><body>nginx/1.6.2</body></html>",
     AnswerKind.TRANSIENT),  # an outage's HTML page (nickoala/telepot#31)
    (504, "", AnswerKind.TRANSIENT),
    (401, "Unauthorized", AnswerKind.AUTH),
    (404, '{"ok":false,"error_code":404,"description":"Not Found"}', AnswerKind.PERMANENT),
    (200, "<html>captive portal</html>", AnswerKind.PERMANENT),
    (200, '{"ok":false,"description":"no code"}', AnswerKind.PERMANENT),
])
def test_telegram_answers_that_are_not_the_usual_json(status, body, kind):
    verdict = TELEGRAM.classify(answer(status, body))
    assert verdict.kind is kind and verdict.code == str(status)


def test_telegram_success_without_a_message_id_is_still_sent():
    verdict = TELEGRAM.classify(answer(200, '{"ok":true,"result":true}'))
    assert verdict == Verdict(AnswerKind.SENT)


# -- Viber: what the fixtures do not show -------------------------------------------------------


@pytest.mark.parametrize("status", [14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24])
def test_viber_other_documented_refusals_are_permanent(status):
    verdict = VIBER.classify(answer(200, json.dumps({"status": status, "status_message": "x"})))
    assert (verdict.kind, verdict.code) == (AnswerKind.PERMANENT, str(status))


@pytest.mark.parametrize("status", [-1, 25, 1000])
def test_viber_an_undocumented_status_is_the_general_error_to_try_again(status):
    assert VIBER.classify(answer(200, json.dumps({"status": status}))).kind is AnswerKind.TRANSIENT


@pytest.mark.parametrize("status, body, kind", [
    (500, '{"status":0}', AnswerKind.TRANSIENT),  # by the HTTP status, whatever the body says
    (429, "", AnswerKind.RATE_LIMITED),
    (401, "", AnswerKind.AUTH),
    (200, "<html>not Viber</html>", AnswerKind.PERMANENT),
    (200, '{"status_message":"ok"}', AnswerKind.PERMANENT),
    (200, '{"status":"0"}', AnswerKind.PERMANENT),
])
def test_viber_answers_that_are_not_the_usual_json(status, body, kind):
    assert VIBER.classify(answer(status, body)).kind is kind


def test_viber_a_string_message_token_is_kept_as_it_is():
    verdict = VIBER.classify(answer(200, '{"status":0,"message_token":"5270000620594975192"}'))
    assert verdict.platform_message_id == "5270000620594975192"


# -- the call ------------------------------------------------------------------------------------


@pytest.mark.parametrize("adapter", [TELEGRAM, VIBER], ids=["telegram", "viber"])
def test_the_call_carries_the_adapters_reading_of_the_answer(adapter):
    call = adapter.outbound("5342492667", {"channel": adapter.channel, "text": "hi"}, ENVIRON)
    assert call.classify == adapter.classify
    assert call.body["text"] == "hi"


@pytest.mark.parametrize("adapter", [TELEGRAM, VIBER], ids=["telegram", "viber"])
@pytest.mark.parametrize("content", [
    {"template": {"name": "order_update", "language": "en", "parameters": []}},
    {"text": "hi", "tag": "HUMAN_AGENT"},
    {},
])
def test_a_template_or_a_tag_cannot_go_out_here(adapter, content):
    with pytest.raises(Unsendable):
        adapter.outbound("5342492667", {"channel": adapter.channel, **content}, ENVIRON)


def test_the_published_limits():
    assert (TELEGRAM.pace.recipient_interval, TELEGRAM.pace.channel_interval) == (1.0, 1 / 30)
    assert (VIBER.pace.recipient_interval, VIBER.pace.channel_interval) == (0.0, 0.0)
    for adapter in (TELEGRAM, VIBER):  # neither limits when a bot may write
        assert adapter.reply_window is None and adapter.tag_windows == {}


# -- Viber's status callbacks -------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(n for n in _expected("viber") if n.startswith("callback_")))
def test_a_viber_status_callback_is_an_event(name):
    body = (OUTBOUND / "viber" / name).read_bytes()
    data = json.loads(body)
    item = _expected("viber")[name]
    [event] = parse_viber(body).events
    assert event.type is STATUS_OF_CALLBACK[data["event"]]
    assert event.id == f"viber:{data['event']}:{item['message_id']}"
    assert (event.channel, event.contact.external_id) == ("viber", data["user_id"])
    assert event.timestamp == datetime.fromtimestamp(data["timestamp"] / 1000, tz=UTC)
    assert event.message is None
    params: dict[str, Any] = {"platform_message_id": str(item["message_id"])}
    if item["kind"] is not None:  # the failure, with Viber's words
        params["error"] = {"kind": item["kind"], "code": item["code"], "message": data["desc"]}
    assert event.params == params
    assert parse_viber(body).events[0].id == event.id  # a repeat is the same event


def test_viber_sends_a_long_desc_as_one_bounded_line():
    body = p.encode({"event": "failed", "timestamp": 1457764197627, "message_token": 7,
                     "user_id": "vb-1=", "desc": "bad\n" + "x" * 1000})
    [event] = parse_viber(body).events
    assert event.params["error"]["message"] == one_line("bad\n" + "x" * 1000)


@pytest.mark.parametrize("broken", [{"message_token": None}, {"message_token": 1.5},
                                    {"user_id": ""}, {"timestamp": "yesterday"}])
def test_an_unusable_status_callback_is_skipped(broken):
    data = {"event": "failed", "timestamp": 1457764197627, "message_token": 7,
            "user_id": "vb-1=", "desc": "x", **broken}
    parsed = parse_viber(p.encode(data))
    assert parsed.events == () and [s.reason for s in parsed.skipped] == ["invalid_item"]


def test_a_failure_whose_reason_is_not_text_is_still_a_failure():
    data = {"event": "failed", "timestamp": 1457764197627, "message_token": 7,
            "user_id": "vb-1=", "desc": {"code": 5}}
    [event] = parse_viber(p.encode(data)).events
    assert event.params["error"] == {"kind": "permanent", "code": None, "message": ""}


def _peer_callbacks() -> list[str]:
    folder = PEERS / "viber"
    if not folder.is_dir():
        return []
    return sorted(f.name for f in folder.glob("*.json")
                  if json.loads(f.read_bytes()).get("event") in STATUS_OF_CALLBACK)


@pytest.mark.skipif(not (PEERS / "viber").is_dir(), reason="shared/peer-fixtures is absent")
@pytest.mark.parametrize("name", _peer_callbacks() or ["none"])
def test_a_peer_librarys_viber_status_callback_is_an_event(name):
    data = json.loads((PEERS / "viber" / name).read_bytes())
    [event] = parse_viber((PEERS / "viber" / name).read_bytes()).events
    token = str(data["message_token"])
    assert event.type is STATUS_OF_CALLBACK[data["event"]]
    assert event.id == f"viber:{data['event']}:{token}"
    assert event.params["platform_message_id"] == token
    assert event.contact.external_id == data["user_id"]
    if data["event"] == "failed":
        assert event.params["error"] == {"kind": "permanent", "code": None, "message": data["desc"]}


# -- never a crash -------------------------------------------------------------------------------

def _json(floats: st.SearchStrategy[float], text: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    return st.recursive(
        st.none() | st.booleans() | st.integers() | floats | text,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
        max_leaves=12)


# Anything JSON can say (NaN too, which Python's encoder writes), for the send APIs' answers.
JSON = _json(st.floats(), st.text(max_size=20))
# What a webhook body can hold past the guarded decoder (no NaN, no lone surrogate).
WEBHOOK_JSON = _json(st.floats(allow_nan=False, allow_infinity=False),
                     st.text(st.characters(codec="utf-8"), max_size=20))
# Bodies shaped like the platforms' answers, with anything in their fields.
TELEGRAM_LIKE = st.fixed_dictionaries(
    {"ok": JSON}, optional={"error_code": JSON, "description": JSON, "result": JSON,
                            "parameters": JSON | st.fixed_dictionaries(
                                {}, optional={"retry_after": JSON, "migrate_to_chat_id": JSON})})
VIBER_LIKE = st.fixed_dictionaries(
    {"status": JSON}, optional={"status_message": JSON, "message_token": JSON,
                                "failed_list": st.lists(JSON | st.fixed_dictionaries(
                                    {}, optional={"status": JSON, "status_message": JSON}))})


def _encoded(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


BODIES = (st.binary(max_size=200) | JSON.map(_encoded) | TELEGRAM_LIKE.map(_encoded)
          | VIBER_LIKE.map(_encoded))


@settings(max_examples=300, deadline=None)
@given(status=st.integers(100, 599), body=BODIES,
       retry_after=st.none() | st.text(max_size=30) | st.integers(-5, 10**12).map(str))
def test_classify_never_raises_and_always_gives_a_verdict(status, body, retry_after):
    headers = {"Retry_After": retry_after} if retry_after is not None else {}
    for adapter in (TELEGRAM, VIBER):
        verdict = adapter.classify(answer(status, body, **headers))
        assert isinstance(verdict, Verdict) and isinstance(verdict.kind, AnswerKind)
        assert verdict.retry_after is None or (
            math.isfinite(verdict.retry_after) and 0 <= verdict.retry_after <= 7 * 86400)
        assert verdict.code is None or isinstance(verdict.code, str)
        assert isinstance(verdict.message, str) and len(verdict.message) <= 310


CALLBACK_FIELDS = st.fixed_dictionaries(
    {"event": st.sampled_from(sorted(STATUS_OF_CALLBACK))},
    optional={"timestamp": WEBHOOK_JSON | st.integers(0, 4 * 10**12),
              "message_token": WEBHOOK_JSON, "user_id": WEBHOOK_JSON, "desc": WEBHOOK_JSON,
              "chat_hostname": WEBHOOK_JSON})


@settings(max_examples=300, deadline=None)
@given(data=CALLBACK_FIELDS)
def test_viber_status_callbacks_of_any_shape_never_raise(data):
    parsed = parse_viber(json.dumps(data).encode())
    assert len(parsed.events) + len(parsed.skipped) == 1
    if parsed.skipped:
        assert parsed.skipped[0].reason == "invalid_item"
    else:
        assert parsed.events[0].type is STATUS_OF_CALLBACK[data["event"]]
