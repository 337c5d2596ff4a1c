"""Outbound actions through the outbox: written with the event, delivered by workers."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone

import pytest

from connectors.outbox import OutboxWorker
from rules_engine import outbox

from . import webhook_payloads as p
from .conftest import T0, message
from .receiver import receiving

RULES = """
rules:
  - id: reply
    trigger: {event: message.received}
    conditions: ["contains(message.text, 'hours')"]
    actions:
      - send_message: {text: "Hi {{ contact.name or 'there' }}, we are open 9-17."}
  - id: crm
    trigger: {event: message.received}
    conditions: ["contains(message.text, 'refund')"]
    actions:
      - http_request:
          url: "CRM_URL/tickets"
          headers: {X-Source: rules-engine}
          body: {contact: "{{ contact.id }}", text: "{{ message.text }}", tags: ["refund"]}
"""


@pytest.fixture
def client_for(tmp_path, clean_environment, database_url):
    """A test client of the app over the same database, and the API headers."""
    from connectors import create_app

    (tmp_path / "app-rules").mkdir()
    (tmp_path / "app-rules" / "rules.yaml").write_text("rules: []\n", "utf-8")

    def make(store):
        app = create_app({"api_token": p.SECRETS["api_token"], "database_url": database_url,
                          "rules_dir": str(tmp_path / "app-rules")})
        return app.test_client(), {"Authorization": f"Bearer {p.SECRETS['api_token']}"}

    return make


def environ_for(url: str) -> dict[str, str]:
    """The channels' settings pointing at the receiver, and the loopback receiver allowed for
    the rules' URLs (the operator's own URLs need no allowing)."""
    return {"RULES_ENGINE_OUTBOUND_ALLOW": "127.0.0.1",
            "FACEBOOK_PAGE_ACCESS_TOKEN": "page-token", "FACEBOOK_GRAPH_URL": f"{url}/graph",
            "VIBER_AUTH_TOKEN": "viber-token", "VIBER_API_URL": f"{url}/viber",
            "WHATSAPP_ACCESS_TOKEN": "wa-token", "WHATSAPP_PHONE_NUMBER_ID": "106540352242922",
            "WHATSAPP_GRAPH_URL": f"{url}/wa", "TELEGRAM_BOT_TOKEN": "123:tg-token",
            "TELEGRAM_API_URL": f"{url}/tg",
            "RULES_ENGINE_SEND_URL": f"{url}/generic"}


def rules_for(crm_url: str) -> str:
    """The rules, calling the CRM at ``crm_url`` (a literal host, as the schema requires)."""
    return RULES.replace("CRM_URL", crm_url)


REPLYING = """
rules:
  - id: reply
    trigger: {event: message.received}
    actions: [{send_message: {text: "Hello"}}]
"""  # a reply to every message


def calling(url: str) -> str:
    """A rule that calls ``url`` on every message."""
    return f"""
rules:
  - id: crm
    trigger: {{event: message.received}}
    actions: [{{http_request: {{url: "{url}"}}}}]
"""


def crm_event(url: str, n: int, **fields):
    return message(f"u-{n}", f"refund please #{n}", **fields)


def clock_from(start: datetime) -> Callable[[], datetime]:
    """A clock that reads ``start`` now and runs on with real time (the events of these
    tests are dated T0: their contacts wrote then, inside the platforms' reply windows)."""
    began = time.monotonic()
    return lambda: start + timedelta(seconds=time.monotonic() - began)


def worker(store, url: str, name: str = "w1", **options) -> OutboxWorker:
    options.setdefault("backoff_seconds", 0.01)
    options.setdefault("clock", clock_from(T0 + timedelta(minutes=1)))
    return OutboxWorker(store, worker_id=name, environ=environ_for(url), **options)


def rows(store, status=None):
    return outbox.list_outbound(store, status=status, limit=1000)


def test_outbound_actions_are_queued_with_the_event_and_delivered(make_engine, store):
    with receiving() as receiver:
        engine = make_engine(rules_for(receiver.url))
        engine.process(message("psid-1", "what are your hours?"))
        engine.process(message("vb-1", "opening hours?", channel="viber"))
        engine.process(message("web-1", "hours on sunday?", channel="webchat"))
        engine.process(message("16505551234", "hours today?", channel="whatsapp"))
        engine.process(message("US.13491208655302741918", "hours?", channel="whatsapp"))
        engine.process(message("5342492667", "your hours", channel="telegram"))
        engine.process(crm_event(receiver.url, 1))
        assert [r["status"] for r in rows(store)] == ["pending"] * 7
        assert worker(store, receiver.url, batch=10).run_once() == 7
    assert [r["status"] for r in rows(store)] == ["sent"] * 7
    by_path = {d.path.split("?")[0]: d for d in receiver.deliveries}
    facebook = by_path["/graph/me/messages"]
    assert facebook.body == {"recipient": {"id": "psid-1"}, "messaging_type": "RESPONSE",
                             "message": {"text": "Hi there, we are open 9-17."}}
    viber = by_path["/viber/send_message"]
    assert viber.headers["X-Viber-Auth-Token"] == "viber-token"
    assert viber.body["receiver"] == "vb-1" and viber.body["type"] == "text"
    assert by_path["/generic"].body == {"channel": "webchat", "recipient": "web-1",
                                        "text": "Hi there, we are open 9-17."}
    whatsapp = [d for d in receiver.deliveries if d.path == "/wa/106540352242922/messages"]
    assert all(d.headers["Authorization"] == "Bearer wa-token" for d in whatsapp)
    assert [d.body.get("to") or d.body.get("recipient") for d in whatsapp] == [
        "16505551234", "US.13491208655302741918"]
    assert whatsapp[0].body["text"] == {"preview_url": False, "body": "Hi there, we are open 9-17."}
    telegram = by_path["/tg/bot123:tg-token/sendMessage"]
    assert telegram.body == {"chat_id": 5342492667, "text": "Hi there, we are open 9-17."}
    crm = by_path["/tickets"]
    assert crm.headers["X-Source"] == "rules-engine"
    assert crm.body == {"contact": 7, "text": "refund please #1", "tags": ["refund"]}
    keys = receiver.keys()
    assert len(keys) == 7 and all(len(k) == 40 for k in keys)


def test_an_event_that_fails_queues_nothing(make_engine, store, monkeypatch):
    engine = make_engine(rules_for("http://127.0.0.1:9") + """
  - id: then-fail
    trigger: {event: message.received}
    actions: [{set_field: {name: x, value: 1}}]
""")
    from rules_engine.store import repository

    monkeypatch.setattr(repository.StoreTx, "set_field", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        engine.process(message("psid-1", "hours?"))
    assert rows(store) == []


def test_failures_are_retried_with_backoff_then_delivered(make_engine, store):

    def flaky(delivery, seen):
        return (503, {}, 0) if seen <= 2 else (200, {}, 0)

    with receiving(flaky) as receiver:
        engine = make_engine(rules_for(receiver.url))
        engine.process(crm_event(receiver.url, 1))
        deliverer = worker(store, receiver.url)
        deadline = time.monotonic() + 10
        while rows(store, "sent") == [] and time.monotonic() < deadline:
            deliverer.run_once()
            time.sleep(0.02)
    [row] = rows(store)
    assert row["status"] == "sent" and row["attempts"] == 3
    assert len(receiver.deliveries) == 3 and len(set(receiver.keys())) == 1


def test_a_row_that_keeps_failing_ends_failed_and_can_be_retried(make_engine, store, client_for):
    with receiving(lambda d, n: (500, {"error": "database down"}, 0)) as receiver:
        engine = make_engine(rules_for(receiver.url))
        engine.process(crm_event(receiver.url, 1))
        deliverer = worker(store, receiver.url, max_age=timedelta(seconds=1.5),
                           clock=lambda: datetime.now(timezone.utc))  # ages run on real time
        deadline = time.monotonic() + 10
        while not rows(store, "failed") and time.monotonic() < deadline:
            deliverer.run_once()
            time.sleep(0.02)
    [failed] = rows(store, "failed")
    attempts = failed["attempts"]
    assert attempts >= 2 and attempts == len(receiver.deliveries)
    assert (failed["error"]["kind"], failed["error"]["code"]) == ("transient", "500")
    assert failed["error"]["message"].startswith(
        f'HTTP 500 from {receiver.url}: {{"error": "database down"}} (gave up after '
        f"{attempts} attempts over 0:00:0")
    client, headers = client_for(store)
    listed = client.get("/api/outbox?status=failed", headers=headers).json
    assert [r["id"] for r in listed] == [failed["id"]]
    unknown = client.get("/api/outbox?status=dead", headers=headers)
    assert unknown.status_code == 422 and "failed" in unknown.json["error"]["hint"]
    assert client.post(f"/api/outbox/{failed['id']}/retry", headers=headers).status_code == 200
    assert rows(store, "pending")[0]["attempts"] == 0
    again = client.post(f"/api/outbox/{failed['id']}/retry", headers=headers)
    assert again.status_code == 404 and "no failed or suppressed outbox row" in again.json["error"]["message"]


def test_a_client_error_fails_the_row_at_once_with_the_platforms_words(make_engine, store):
    with receiving(lambda d, n: (400, {"error": "bad"}, 0)) as receiver:
        engine = make_engine(rules_for(receiver.url))
        engine.process(crm_event(receiver.url, 1))
        worker(store, receiver.url).run_once()
    [row] = rows(store)
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert row["error"] == {"kind": "permanent", "code": "400",
                            "message": f'HTTP 400 from {receiver.url}: {{"error": "bad"}}'}


def upgraded_from(store, revision: str, statement: str) -> None:
    """The schema taken down to ``revision``, ``statement`` run there (rows as an older
    release wrote them), then the schema upgraded to the newest."""
    from alembic import command
    from sqlalchemy import text

    with store.engine.begin() as connection:
        command.downgrade(store._alembic(connection), revision)
        connection.execute(text(statement))
    with store.engine.begin() as connection:
        command.upgrade(store._alembic(connection), "head")


def test_rows_an_older_release_dead_lettered_are_failed_after_the_upgrade(make_engine, store,
                                                                         database_url):
    """Migration 0006: ``dead`` rows become ``failed`` and keep their reason; downgrading
    turns them back."""
    from alembic import command
    from sqlalchemy import text

    engine = make_engine(rules_for("http://127.0.0.1:9"))
    engine.process(crm_event("http://127.0.0.1:9", 1))
    upgraded_from(store, "0005", "UPDATE outbox SET status = 'dead', attempts = 8, "
                                 "last_error = 'HTTP 500 from http://127.0.0.1:9'")
    [row] = rows(store)
    assert (row["status"], row["attempts"], row["error"]) == ("failed", 8, {
        "kind": "permanent", "code": None, "message": "HTTP 500 from http://127.0.0.1:9"})
    with store.engine.begin() as connection:
        command.downgrade(store._alembic(connection), "0005")
        assert connection.execute(text("SELECT status FROM outbox")).scalar() == "dead"
        command.upgrade(store._alembic(connection), "head")


def test_the_api_shows_no_secret_of_a_call_and_the_worker_sends_them(make_engine, store,
                                                                     client_for):
    """Secret header values, secret query values and user information are redacted in
    GET /api/outbox and in traces, for rows of today's rules and of older ones alike."""
    with receiving() as crm:
        engine = make_engine(f"""
rules:
  - id: crm
    trigger: {{event: message.received}}
    actions:
      - http_request:
          url: "{crm.url}/tickets?access_token=abc123&x=1"
          headers: {{X-Api-Key: k-123, X-Source: rules-engine}}
""")
        event = message("c-1", "hi")
        engine.process(event)
        OutboxWorker(store, worker_id="w", environ=environ_for(crm.url)).run_once()
        store.run(lambda tx: tx.outbound.enqueue(values=dict(
            event_id="older", rule_id="old", action="http_request", target="http",
            recipient=None, url="https://me:pa55@crm.example.com/x?token=t0k&sig=zz&page=2",
            method="POST", headers={"AUTHORIZATION": "Bearer s3cret", "Cookie": "sid=c00kie",
                                    "X-Session-Token": "sess10n", "Accept": "text/plain"},
            body=None, idempotency_key="older"), at=T0))
        client, headers = client_for(store)
        listed = client.get("/api/outbox", headers=headers)
        trace = client.get(f"/api/events/{event.id}/trace", headers=headers)
    older, today = listed.json
    assert today["url"] == f"{crm.url}/tickets?access_token=[redacted]&x=1"
    assert today["headers"] == {"X-Api-Key": "[redacted]", "X-Source": "rules-engine"}
    assert older["url"] == "https://[redacted]@crm.example.com/x?token=[redacted]&sig=[redacted]&page=2"
    assert older["headers"] == {"AUTHORIZATION": "[redacted]", "Cookie": "[redacted]",
                                "X-Session-Token": "[redacted]", "Accept": "text/plain"}
    shown = listed.get_data(as_text=True) + trace.get_data(as_text=True)
    for secret in ("abc123", "k-123", "pa55", "t0k", "zz", "s3cret", "c00kie", "sess10n"):
        assert secret not in shown
    [action] = trace.json["steps"][0]["rules"][0]["actions"]
    assert action["args"]["headers"] == {"X-Api-Key": "[redacted]", "X-Source": "rules-engine"}
    assert "access_token=[redacted]&x=1)" in action["detail"]
    [delivery] = crm.deliveries
    assert delivery.path == "/tickets?access_token=abc123&x=1"
    assert delivery.headers["X-Api-Key"] == "k-123"


def test_parallel_workers_deliver_each_row_once(make_engine, store):
    with receiving() as receiver:
        engine = make_engine(rules_for(receiver.url))
        for n in range(60):
            engine.process(crm_event(receiver.url, n))
        workers = [worker(store, receiver.url, name=f"w{n}", batch=3) for n in range(4)]

        def drain(deliverer: OutboxWorker) -> None:
            while deliverer.run_once():
                pass

        threads = [threading.Thread(target=drain, args=(w,)) for w in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(rows(store, "sent")) == 60
    assert len(receiver.deliveries) == 60 and set(receiver.keys().values()) == {1}


def start_worker(database_url: str, url: str, lease: float) -> subprocess.Popen:
    env = {**os.environ, **environ_for(url)}
    return subprocess.Popen(
        [sys.executable, "-m", "rules_engine.cli", "--database-url", database_url, "worker",
         "--threads", "2", "--lease", str(lease), "--poll", "0.1", "--timeout", str(lease * 0.8)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@contextlib.contextmanager
def workers_running(database_url: str, url: str, *, lease: float,
                    count: int = 2) -> Iterator[None]:
    """``count`` real ``rules-engine worker`` processes for the block, stopped (SIGTERM) after."""
    workers = [start_worker(database_url, url, lease=lease) for _ in range(count)]
    try:
        yield
    finally:
        for process in workers:
            process.send_signal(signal.SIGTERM)
        for process in workers:
            process.wait(20)


def test_a_slow_receiver_and_a_short_lease_never_cause_a_second_send(make_engine, store,
                                                                      database_url):
    """Two worker processes of two threads, a receiver taking 0.3 s per call and a 1 s lease:
    a batch would outlive its lease, but each row is claimed just before its own call."""
    with receiving(lambda d, n: (200, {}, 0.3)) as receiver:
        engine = make_engine(rules_for(receiver.url))
        for n in range(40):
            engine.process(crm_event(receiver.url, n))
        with workers_running(database_url, receiver.url, lease=1):
            deadline = time.monotonic() + 60
            while len(rows(store, "sent")) < 40 and time.monotonic() < deadline:
                time.sleep(0.2)
    assert len(rows(store, "sent")) == 40
    assert len(receiver.deliveries) == 40 and set(receiver.keys().values()) == {1}


def test_a_lease_shorter_than_the_http_timeout_is_refused(store):
    with pytest.raises(ValueError, match="must be longer than the HTTP timeout"):
        OutboxWorker(store, worker_id="w", lease_seconds=5, timeout=10)


def test_a_worker_killed_mid_delivery_leaves_the_row_to_another(make_engine, store, database_url):
    first_try = threading.Event()

    def slow_first_time(delivery, seen):
        if delivery.body["text"] == "refund please #0" and seen == 1:
            first_try.set()
            return 200, {}, 30  # the first worker dies while waiting for this answer
        return 200, {}, 0

    with receiving(slow_first_time) as receiver:
        engine = make_engine(rules_for(receiver.url))
        for n in range(20):
            engine.process(crm_event(receiver.url, n))
        doomed = start_worker(database_url, receiver.url, lease=2)
        try:
            assert first_try.wait(30), "the first worker never started delivering"
            os.kill(doomed.pid, signal.SIGKILL)
            doomed.wait(10)
        finally:
            if doomed.poll() is None:
                doomed.kill()
        survivor = start_worker(database_url, receiver.url, lease=2)
        try:
            deadline = time.monotonic() + 60
            while len(rows(store, "sent")) < 20 and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            survivor.send_signal(signal.SIGTERM)
            survivor.wait(20)
    assert len(rows(store, "sent")) == 20
    assert rows(store, "failed") == [] and rows(store, "pending") == []
    keys = receiver.keys()
    assert len(keys) == 20  # every row reached the receiver; dropping repeats by key...
    assert sum(keys.values()) >= 21  # ...includes the one the killed worker had in flight


def test_rows_an_older_release_marked_delivered_are_sent_after_the_upgrade(make_engine, store):
    """Migration 0008: ``delivered`` only meant that the platform accepted the call, so such
    rows become ``sent`` (their time kept); a message's channel is read from its body."""
    engine = make_engine(REPLYING)
    engine.process(message("psid-1", "hi"))
    upgraded_from(store, "0007", "UPDATE outbox SET status = 'delivered', attempts = 1, "
                                 "delivered_at = created_at, last_error = NULL")
    [row] = rows(store)
    assert (row["status"], row["channel"], row["error"]) == ("sent", "facebook", None)
    assert row["sent_at"] == row["created_at"] and row["delivered_at"] is None
