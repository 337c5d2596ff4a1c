"""Issue 18: the real outbox worker against a fake platform that answers with the platforms'
published bodies (tests/fixtures/outbound, each with its source): what each answer leads to,
the status callbacks that move a sent row on, the reply window, opted-out contacts, pauses,
and the operators' view (CLI, API, metrics)."""
from __future__ import annotations

import io
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from connectors.outbox import OutboxWorker
from rules_engine import outbox
from rules_engine.cli import main as cli

from . import webhook_payloads as p
from .conftest import T0, event, message
from .receiver import Delivery, receiving
from .test_outbox import clock_from, environ_for, rows, workers_running

FIXTURES = Path(__file__).parent / "fixtures" / "outbound"
CHANNEL_OF = {"whatsapp": "whatsapp", "messenger": "facebook", "telegram": "telegram",
              "viber": "viber"}
RECIPIENT = {"whatsapp": "16505551234", "facebook": "psid-1", "telegram": "5342492667",
             "viber": "vb-1"}
SEND_PATH = {"whatsapp": "/wa/106540352242922/messages", "facebook": "/graph/me/messages",
             "telegram": "/tg/bot123:tg-token/sendMessage", "viber": "/viber/send_message"}
REPLYING = """
rules:
  - id: reply
    trigger: {event: message.received}
    actions: [{send_message: {text: "Hello"}}]
  - id: on-failure
    trigger: {event: message.failed}
    actions: [{add_tag: {tag: unreachable}}, {set_field: {name: failure, expr: "params.error.kind"}}]
"""
BACKOFF = 60.0  # seconds: a retried row is never due again within a test


def expected(folder: str) -> dict[str, Any]:
    return json.loads((FIXTURES / folder / "expected.json").read_text("utf-8"))


def answers() -> list[tuple[str, str]]:
    """Every published answer to a send (not the status callbacks)."""
    return [(folder, name) for folder in CHANNEL_OF for name in sorted(expected(folder))
            if not name.startswith(("status_", "webhook_", "callback_"))]


def http_status(folder: str, wanted: dict[str, Any]) -> int:
    """The status the platform answers with: the documented one; else Viber's refusals come
    in a 200, and Meta's errors in a 400 (Meta says to read the code, not the status)."""
    if wanted["http_status"]:
        return int(wanted["http_status"])
    return 200 if folder == "viber" or wanted["outcome"] == "sent" else 400


def platform(folder: str, name: str, status: int):
    """A fake platform answering every send with the published body."""
    body = (FIXTURES / folder / name).read_bytes()
    return receiving(lambda delivery, seen: (status, body, 0))


def worker(store, url: str, engine=None, **options) -> OutboxWorker:
    options.setdefault("clock", clock_from(T0 + timedelta(minutes=1)))
    options.setdefault("backoff_seconds", BACKOFF)
    return OutboxWorker(store, worker_id="w", environ=environ_for(url), engine=engine, **options)


def calls(receiver, channel: str) -> list[Delivery]:
    return [d for d in receiver.deliveries if d.path.split("?")[0] == SEND_PATH[channel]]


def contact_of(store, channel: str, external_id: str) -> dict[str, Any]:
    """The contact with this identity: its tags and fields."""
    with store.read() as tx:
        found = tx.find_contact_by_identity(channel, external_id)
        assert found is not None
        return {"tags": tx.tags(found.id), "fields": tx.fields(found.id)}


@pytest.mark.parametrize("folder, name", answers())
def test_the_worker_does_what_each_published_answer_means(folder, name, make_engine, store):
    """One send, answered with the platform's published body: the row's status and error,
    one call, when it is due again, and no second call."""
    wanted = expected(folder)[name]
    channel = CHANNEL_OF[folder]
    engine = make_engine(REPLYING)
    engine.process(message(RECIPIENT[channel], "hi", channel=channel))
    with platform(folder, name, http_status(folder, wanted)) as receiver:
        deliverer = worker(store, receiver.url, engine)
        before = deliverer.clock()
        assert deliverer.run_once() == 1
        assert deliverer.run_once() == 0  # nothing is due again, nothing is sent twice
    [row] = rows(store)
    assert len(calls(receiver, channel)) == 1
    kind = wanted["kind"] or "sent"
    if kind == "sent":
        assert (row["status"], row["error"]) == ("sent", None)
        assert row["platform_message_id"] == str(wanted["message_id"])
        return
    assert row["error"]["kind"] == kind and row["error"]["message"]
    assert row["error"]["code"] == str(wanted["code"])
    due = datetime.fromisoformat(row["next_attempt_at"])
    if kind == "permanent":
        assert row["status"] == "failed"
        # the rule on message.failed ran, in the same transaction as the row's failure
        assert "unreachable" in contact_of(store, channel, RECIPIENT[channel])["tags"]
    elif kind == "auth":  # the channel pauses, the row waits for the resume
        assert (row["status"], row["attempts"]) == ("pending", 0)
        assert [pause["channel"] for pause in outbox.pauses(store)] == [channel]
    else:  # transient, rate_limited: deferred, by the platform's wait when it gives one
        assert row["status"] == "pending"
        wait = wanted["retry_after"] or BACKOFF * 0.5
        assert due >= before + timedelta(seconds=wait)
        assert due <= before + timedelta(seconds=max(wait * 1.1, BACKOFF) + 5)


def test_metrics_count_what_the_worker_applied(make_engine, store, database_url, tmp_path,
                                              clean_environment):
    """The worker's message.failed runs its rule outside the web app: /metrics counts it
    (source worker) from the database, beside what the web app counted itself."""
    from connectors import create_app

    engine = make_engine(REPLYING)
    engine.process(message(RECIPIENT["viber"], "hi", channel="viber"))
    with platform("viber", "error_3_bad_data.json", 200) as receiver:
        assert worker(store, receiver.url, engine).run_once() == 1
    app = create_app({**p.SECRETS, "rules_dir": str(tmp_path / "rules"),
                      "database_url": database_url})
    try:
        scrape = app.test_client().get("/metrics", headers={
            "Authorization": f"Bearer {p.SECRETS['api_token']}"}).data.decode()
    finally:
        app.extensions["rules_engine"].store.dispose()
    assert 'rules_engine_rules_fired_total{rule_id="on-failure",source="worker"} 1.0' in scrape
    assert ('rules_engine_events_received_total{channel="viber",source="worker",'
            'status="applied",type="message.failed"} 1.0') in scrape
    assert 'rules_engine_actions_total{action="add_tag",outcome="applied",source="worker"} 1.0' \
        in scrape
    assert scrape.count("# TYPE rules_engine_rules_fired_total counter") == 1
    assert 'rule_id="reply"' not in scrape  # applied by engine.process: counted by no one


def test_a_rate_limit_never_fails_a_row_however_old(make_engine, store):
    """WhatsApp 130429 after a day of trying: still deferred (a transient failure that old
    fails), and it goes out once the platform takes it."""
    engine = make_engine(REPLYING)
    engine.process(message(RECIPIENT["whatsapp"], "hi", channel="whatsapp"))
    limited = (FIXTURES / "whatsapp" / "error_130429_rate_limit_hit.json").read_bytes()
    with receiving(lambda d, seen: (400, limited, 0) if seen < 3 else
                   (200, (FIXTURES / "whatsapp" / "send_success.json").read_bytes(), 0)) as api:
        deliverer = worker(store, api.url, engine, backoff_seconds=0.001,
                           max_age=timedelta(seconds=0))
        for _ in range(3):
            deliverer.run_once()
            # past the backoff, and WhatsApp's pair pacing (a message per 6 s to one person)
            deliverer.clock = clock_from(deliverer.clock() + timedelta(seconds=7))
    [row] = rows(store)
    assert (row["status"], row["attempts"], len(api.deliveries)) == ("sent", 3, 3)


# -- status callbacks ---------------------------------------------------------------------


def sent_row(make_engine, store, channel: str, answer: bytes):
    """A message sent on ``channel``, the platform accepting it with ``answer``."""
    engine = make_engine(REPLYING)
    engine.process(message(RECIPIENT[channel], "hi", channel=channel))
    with receiving(lambda d, seen: (200, answer, 0)) as api:
        worker(store, api.url, engine).run_once()
    [row] = rows(store)
    assert row["status"] == "sent"
    return engine, row


def post(app, route: str, body: bytes):
    """POST ``body`` to a channel's webhook, signed as the platform signs it."""
    return app.test_client().post(route, data=body, headers={
        "Content-Type": "application/json", **p.signed_headers(route, body)})


@pytest.fixture
def app_with(tmp_path, clean_environment, database_url):
    from connectors import create_app

    def make(rules: str):
        folder = tmp_path / "app-rules"
        folder.mkdir(exist_ok=True)
        (folder / "rules.yaml").write_text(rules, "utf-8")
        return create_app({**p.SECRETS, "database_url": database_url, "rules_dir": str(folder)})

    return make


def whatsapp_status(wamid: str, status: str, **more: Any) -> dict[str, Any]:
    return {"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{
        "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001111",
                         "phone_number_id": "106540352242922"},
            "statuses": [{"id": wamid, "status": status, "timestamp": "1764061260",
                          "recipient_id": RECIPIENT["whatsapp"], **more}]}}]}]}


def test_whatsapp_accepted_then_failed_by_its_status_webhook(make_engine, store, app_with):
    """The send is accepted (200, a wamid); the signed ``statuses`` webhook then says 131047
    (more than 24 hours since the customer wrote): the row fails with Meta's code and words,
    and the rule on message.failed runs."""
    _, row = sent_row(make_engine, store, "whatsapp",
                      (FIXTURES / "whatsapp" / "send_success.json").read_bytes())
    wamid = row["platform_message_id"]
    published = json.loads((FIXTURES / "whatsapp" / "status_failed_131047_reengagement.json")
                           .read_text("utf-8"))
    failure = published["entry"][0]["changes"][0]["value"]["statuses"][0]["errors"]
    app = app_with(REPLYING)
    body = p.encode(whatsapp_status(wamid, "failed", errors=failure))
    answered = post(app, "/webhooks/whatsapp", body)
    assert answered.status_code == 200, answered.json
    [result] = answered.json["results"]
    assert result["status"] == "applied" and "on-failure" in result["fired"]
    [row] = rows(store)
    assert row["status"] == "failed" and row["error"]["code"] == "131047"
    assert row["error"]["kind"] == "permanent" and "24 hours" in row["error"]["message"]
    assert contact_of(store, "whatsapp", RECIPIENT["whatsapp"])["fields"]["failure"] == "permanent"
    again = post(app, "/webhooks/whatsapp", body)
    assert again.json["results"][0]["status"] == "duplicate"


def test_whatsapp_delivered_then_read_and_never_back(make_engine, store, app_with):
    _, row = sent_row(make_engine, store, "whatsapp",
                      (FIXTURES / "whatsapp" / "send_success.json").read_bytes())
    app = app_with(REPLYING)
    for status in ("read", "delivered"):  # a late delivered never moves a read row back
        body = p.encode(whatsapp_status(row["platform_message_id"], status))
        assert post(app, "/webhooks/whatsapp", body).status_code == 200
    [row] = rows(store)
    assert row["status"] == "read" and row["read_at"] and row["delivered_at"]


def test_messenger_delivery_and_read_move_the_row(make_engine, store, app_with):
    _, row = sent_row(make_engine, store, "facebook",
                      (FIXTURES / "messenger" / "send_success.json").read_bytes())
    mid = row["platform_message_id"]
    app = app_with(REPLYING)
    delivery = {"sender": {"id": RECIPIENT["facebook"]}, "recipient": {"id": "PAGE_1"},
                "delivery": {"mids": [mid], "watermark": 1_764_061_200_000}}
    body = p.messenger(delivery)
    answered = post(app, "/webhooks/facebook", p.encode(body))
    assert answered.json["results"][0]["status"] == "applied"
    assert rows(store)[0]["status"] == "delivered"
    # a read names a time: every message sent to that person before it is read
    watermark = int((datetime.fromisoformat(row["sent_at"]) + timedelta(seconds=1)).timestamp()
                    * 1000)
    read = {"sender": {"id": RECIPIENT["facebook"]}, "recipient": {"id": "PAGE_1"},
            "timestamp": watermark, "read": {"watermark": watermark}}
    body = p.messenger(read)
    answered = post(app, "/webhooks/facebook", p.encode(body))
    assert answered.json["results"][0]["status"] == "applied"
    assert rows(store)[0]["status"] == "read"


def test_viber_failed_callback_fails_the_row_and_runs_the_rule(make_engine, store, app_with):
    _, row = sent_row(make_engine, store, "viber",
                      (FIXTURES / "viber" / "send_success_docs.json").read_bytes())
    token = row["platform_message_id"]
    app = app_with(REPLYING)
    callback = {"event": "failed", "timestamp": 1_764_061_260_000, "chat_hostname": "SN-1",
                "message_token": int(token), "user_id": RECIPIENT["viber"],
                "desc": "failure description"}
    body = json.dumps(callback).encode()
    answered = post(app, "/webhooks/viber", body)
    assert answered.status_code == 200, answered.json
    assert "on-failure" in answered.json["results"][0]["fired"]
    [row] = rows(store)
    assert row["status"] == "failed" and row["error"]["message"] == "failure description"


def test_a_status_about_a_message_not_ours_changes_nothing(store, app_with):
    app = app_with(REPLYING)
    body = p.encode(whatsapp_status("wamid.NOT-OURS", "failed"))
    answered = post(app, "/webhooks/whatsapp", body)
    assert answered.json["results"][0] == {**answered.json["results"][0], "status": "noop",
                                           "contact_id": None}
    with store.read() as tx:
        assert tx.find_contact_by_identity("whatsapp", RECIPIENT["whatsapp"]) is None


# -- the reply window, templates and tags ------------------------------------------------

IDLE_25H = """
rules:
  - id: nudge-after-25h
    trigger: {event: conversation.idle, for: 25h, channels: [whatsapp, facebook]}
    actions:
      - send_message: {text: "Still there?"}
  - id: template-after-25h
    trigger: {event: conversation.idle, for: 25h, channels: [whatsapp]}
    actions:
      - send_template: {name: order_update, language: en_US, parameters: ["{{ contact.name or 'there' }}"]}
  - id: agent-after-25h
    trigger: {event: conversation.idle, for: 25h, channels: [facebook]}
    actions:
      - send_message: {text: "An agent will follow up", tag: HUMAN_AGENT}
  - id: on-failure
    trigger: {event: message.failed}
    actions: [{set_field: {name: failure, expr: "params.error.kind"}}]
"""


def test_25_hours_after_the_contact_wrote_free_text_fails_and_templates_and_tags_go(
        make_engine, store):
    """A 25-hour idle rule: on WhatsApp the free text makes no call and fails
    ``outside_window`` (message.failed runs its rule); the template goes out. On Messenger
    the free text fails the same way, the HUMAN_AGENT-tagged one goes out (7 days)."""
    engine = make_engine(IDLE_25H)
    engine.process(message(RECIPIENT["whatsapp"], "hi", channel="whatsapp"))
    engine.process(message(RECIPIENT["facebook"], "hi", channel="facebook"))
    later = T0 + timedelta(hours=25, minutes=1)
    assert len(list(engine.fire_all_due(later))) == 4  # each rule's own clock
    with receiving() as api:
        deliverer = worker(store, api.url, engine, clock=clock_from(later))
        assert deliverer.run_once() == 4
    by_rule = {row["rule_id"]: row for row in rows(store)}
    assert {rule: row["status"] for rule, row in by_rule.items()} == {
        "template-after-25h": "sent", "agent-after-25h": "sent", "nudge-after-25h": "failed"}
    outside = [row for row in rows(store, "failed")]
    assert {(row["channel"], row["error"]["kind"]) for row in outside} == {
        ("whatsapp", "outside_window"), ("facebook", "outside_window")}
    assert all(row["attempts"] == 1 for row in outside)
    [template] = calls(api, "whatsapp")
    assert template.body["type"] == "template"
    assert template.body["template"]["name"] == "order_update"
    assert template.body["template"]["language"] == {"code": "en_US"}
    [tagged] = calls(api, "facebook")
    assert (tagged.body["messaging_type"], tagged.body["tag"]) == ("MESSAGE_TAG", "HUMAN_AGENT")
    for channel in ("whatsapp", "facebook"):
        assert contact_of(store, channel, RECIPIENT[channel])["fields"]["failure"] == "outside_window"


def test_validate_warns_of_free_text_after_a_day(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(IDLE_25H, "utf-8")
    out = io.StringIO()
    assert cli(["validate", str(rules)], out=out, err=out) == 0
    said = out.getvalue()
    assert "send_message runs at least 25h after the contact's latest message: on facebook, " \
           "whatsapp free text is refused after 24h" in said
    assert said.count("send_message runs at least") == 1  # the tagged one is fine


def test_a_contact_who_opted_out_is_not_called(make_engine, store):
    """Telegram ``kicked`` (the user blocked the bot): the pending row is suppressed, with
    our reason; a later message from them opts them back in."""
    engine = make_engine(REPLYING)
    engine.process(message(RECIPIENT["telegram"], "hi", channel="telegram"))
    engine.process(event("contact.unsubscribed", channel="telegram",
                         contact={"external_id": RECIPIENT["telegram"]},
                         timestamp=(T0 + timedelta(seconds=30)).isoformat()))
    with receiving() as api:
        worker(store, api.url, engine).run_once()
        [row] = rows(store)
        assert (row["status"], row["error"]["kind"]) == ("suppressed", "opted_out")
        assert api.deliveries == []
        engine.process(message(RECIPIENT["telegram"], "back", channel="telegram",
                               timestamp=(T0 + timedelta(minutes=2)).isoformat()))
        worker(store, api.url, engine, clock=clock_from(T0 + timedelta(minutes=3))).run_once()
    assert [row["status"] for row in rows(store)] == ["sent", "suppressed"]


# -- operators ---------------------------------------------------------------------------


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return cli(list(argv), out=out, err=err), out.getvalue(), err.getvalue()


def test_the_cli_lists_retries_and_resumes(make_engine, store, database_url):
    engine = make_engine(REPLYING)
    engine.process(message(RECIPIENT["telegram"], "hi", channel="telegram"))
    engine.process(message(RECIPIENT["whatsapp"], "hi", channel="whatsapp"))
    blocked = (FIXTURES / "telegram" / "error_403_bot_blocked.json").read_bytes()
    expired = (FIXTURES / "whatsapp" / "error_190_access_token_expired.json").read_bytes()
    with receiving(lambda d, seen: (403, blocked, 0) if "/tg/" in d.path else
                   (401, expired, 0)) as api:
        deliverer = worker(store, api.url, engine)
        deliverer.run_once()
    status, out, err = run("--database-url", database_url, "outbox", "--format", "json")
    listed = {row["channel"]: row for row in json.loads(out)}
    assert set(listed["telegram"]) == {"id", "channel", "status", "attempts", "next_attempt_at",
                                       "platform_message_id", "error"}
    assert (listed["telegram"]["status"], listed["telegram"]["error"]["code"]) == ("failed", "403")
    assert (listed["whatsapp"]["status"], listed["whatsapp"]["error"]["kind"]) == ("pending", "auth")
    status, out, err = run("--database-url", database_url, "outbox", "--channel", "whatsapp")
    assert status == 0 and "auth 190" in out and "channel whatsapp is paused" in err
    status, _, err = run("--database-url", database_url, "outbox", "retry", "--kind", "permanent")
    assert status == 0 and err.startswith("1 row(s) queued again")
    assert [r["status"] for r in rows(store) if r["channel"] == "telegram"] == ["pending"]
    status, _, err = run("--database-url", database_url, "outbox", "resume", "whatsapp")
    assert status == 0 and outbox.pauses(store) == []
    status, _, err = run("--database-url", database_url, "outbox", "resume", "whatsapp")
    assert status != 0 and "not paused" in err


def test_the_api_retries_by_filter_and_resumes_and_metrics_count(make_engine, store, app_with):
    engine = make_engine(REPLYING)
    engine.process(message(RECIPIENT["viber"], "hi", channel="viber"))
    engine.process(message(RECIPIENT["telegram"], "hi", channel="telegram"))
    unsubscribed = (FIXTURES / "viber" / "constructed_error_6_receiverNotSubscribed.json")
    unauthorized = (FIXTURES / "telegram" / "error_401_unauthorized.json").read_bytes()
    with receiving(lambda d, seen: (200, unsubscribed.read_bytes(), 0) if "/viber/" in d.path
                   else (401, unauthorized, 0)) as api:
        worker(store, api.url, engine).run_once()
    app = app_with(REPLYING)
    client = app.test_client()
    headers = {"Authorization": f"Bearer {p.SECRETS['api_token']}"}
    metrics = client.get("/metrics", headers=headers).get_data(as_text=True)
    assert 'rules_engine_outbox_rows{channel="viber",status="failed"} 1.0' in metrics
    assert 'rules_engine_channel_paused{channel="telegram"} 1.0' in metrics
    assert 'rules_engine_outbound_deliveries_total{channel="viber",outcome="permanent"} 1.0' in metrics
    assert "rules_engine_outbox_oldest_pending_seconds" in metrics
    assert client.get("/api/outbox/pauses", headers=headers).json[0]["channel"] == "telegram"
    retried = client.post("/api/outbox/retry?channel=viber&kind=permanent", headers=headers)
    assert retried.status_code == 200 and len(retried.json["ids"]) == 1
    resumed = client.post("/api/outbox/pauses/telegram/resume", headers=headers)
    assert resumed.status_code == 200 and outbox.pauses(store) == []
    assert client.post("/api/outbox/pauses/telegram/resume", headers=headers).status_code == 404
    bad = client.post("/api/outbox/retry?status=sent", headers=headers)
    assert bad.status_code == 422


# -- real processes ------------------------------------------------------------------------

CHATS = ["1001", "1002", "1003"]
PER_CHAT = 3


def test_two_workers_rate_limited_paused_and_resumed_send_each_row_once_and_pace(
        make_engine, store, database_url):
    """Two ``rules-engine worker`` processes of two threads each; a Telegram that answers
    every message first with 429 (retry_after 1), then accepts it, and refuses the token once
    (the channel pauses until ``rules-engine outbox resume telegram``). Every row is sent
    once, and no chat gets two calls within Telegram's second, whichever process made them."""
    engine = make_engine(REPLYING)
    for n in range(PER_CHAT):
        for chat in CHATS:
            engine.process(message(chat, f"hi {n}", channel="telegram",
                                   timestamp=datetime.now(UTC).isoformat()))
    limited = (FIXTURES / "telegram" / "error_429_retry_after.json").read_bytes()
    unauthorized = (FIXTURES / "telegram" / "error_401_unauthorized.json").read_bytes()
    accepted = (FIXTURES / "telegram" / "send_success.json").read_bytes()
    refused_once = threading.Event()

    def telegram(delivery: Delivery, seen: int) -> tuple[int, bytes, float]:
        if seen == 1:
            return 429, limited, 0
        if not refused_once.is_set():
            refused_once.set()
            return 401, unauthorized, 0
        return 200, accepted, 0

    with receiving(telegram) as api, workers_running(database_url, api.url, lease=5):
        deadline = time.monotonic() + 60
        while not outbox.pauses(store) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert outbox.pauses(store), "the refused token never paused the channel"
        time.sleep(0.3)  # a call already on the wire when the pause was written ends
        calls_when_paused = len(api.deliveries)
        time.sleep(1.5)
        assert len(api.deliveries) == calls_when_paused  # no calls while paused
        assert run("--database-url", database_url, "outbox", "resume", "telegram")[0] == 0
        while len(rows(store, "sent")) < len(CHATS) * PER_CHAT and time.monotonic() < deadline:
            time.sleep(0.1)
    assert [row["status"] for row in rows(store)] == ["sent"] * len(CHATS) * PER_CHAT
    sent = [d.headers["Idempotency-Key"] for d in api.deliveries if d.answered == 200]
    assert len(sent) == len(set(sent)) == len(CHATS) * PER_CHAT  # each row accepted once
    for chat in CHATS:
        times = sorted(d.at for d in api.deliveries if str(d.body["chat_id"]) == chat)
        gaps = [later - earlier for earlier, later in zip(times, times[1:])]
        assert min(gaps) >= 0.9, f"chat {chat} called {min(gaps):.2f} s apart"

