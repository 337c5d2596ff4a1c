"""A call that cannot succeed ends its row ``failed`` with the reason, and the worker goes on:
every way a send can fail is classified (connectors.delivery), none escapes, and no call
is redirected."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from connectors.outbox import OutboxWorker
from rules_engine import outbox

from .conftest import T0, message
from .receiver import answering, receiving, said
from .test_outbox import REPLYING, calling, clock_from, rows, worker

RULES_ENGINE = str(Path(sys.executable).with_name("rules-engine"))
SSH_BANNER = b"SSH-2.0-OpenSSH_9.6 not what you expected\r\n"

RULES = """
rules:
  - id: to-a-stranger
    trigger: {event: message.received}
    conditions: ["contains(message.text, 'stranger')"]
    actions:
      - http_request: {url: "NOT_HTTP/notes/{{ message.text }}"}
  - id: to-a-loop
    trigger: {event: message.received}
    conditions: ["contains(message.text, 'loop')"]
    actions:
      - http_request: {url: "LOOP/tickets?text={{ message.text }}"}
  - id: to-nobody
    trigger: {event: message.received}
    conditions: ["contains(message.text, 'nobody')"]
    actions:
      - http_request: {url: "CLOSED/tickets"}
  - id: to-the-crm
    trigger: {event: message.received}
    conditions: ["contains(message.text, 'crm')"]
    actions:
      - http_request: {url: "CRM/contacts/{{ message.text }}"}
"""


def closed_port_url() -> str:
    """A loopback URL where nothing listens (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def queue_as_an_older_release_did(store, url: str, key: str) -> None:
    """A row whose URL holds the placeholder's text as it was (before values were encoded)."""
    store.run(lambda tx: tx.outbound.enqueue(values=dict(
        event_id=key, rule_id="crm", action="http_request", target="http", recipient=None,
        url=url, method="POST", headers={}, body={"n": 1}, idempotency_key=key),
        at=datetime.now(timezone.utc)))


def by_url(store) -> dict[str, dict]:
    with store.read() as tx:
        return {row["url"]: row for row in tx.outbound.rows(limit=100)}


def test_worker_once_ends_every_hopeless_row_failed_and_exits_0(make_engine, store, database_url,
                                                                 tmp_path):
    """The real ``rules-engine worker --once --max-age 3s``, run again and again as
    cron would: a receiver that answers something that is not HTTP, a redirect loop, URLs
    with CR LF and a space in their path (queued by an older release), a port where nothing
    listens; rows queued after them are still delivered."""
    with answering(SSH_BANNER) as stranger, receiving() as crm, receiving(
            lambda d, n: (307, {}, 0, {"Location": d.path})) as loop:
        closed = closed_port_url()
        engine = make_engine(RULES.replace("NOT_HTTP", stranger).replace("LOOP", loop.url)
                             .replace("CLOSED", closed).replace("CRM", crm.url))
        engine.process(message("c-1", "stranger\r\nX-Injected: 1"))
        engine.process(message("c-2", "loop"))
        queue_as_an_older_release_did(store, f"{crm.url}/notes/a\r\nX-Injected: 1", "crlf")
        queue_as_an_older_release_did(store, f"{crm.url}/notes/a b", "space")
        engine.process(message("c-3", "nobody"))
        engine.process(message("c-4", "crm ../../admin/delete?all=1#"))
        engine.process(message("c-5", "crm\r\nHost: evil"))
        environment = {**os.environ, "RULES_ENGINE_OUTBOUND_ALLOW": "127.0.0.1"}
        runs: list[tuple[int, float, str]] = []
        started = time.monotonic()
        while rows(store, "pending") and time.monotonic() - started < 60:
            began = time.monotonic()
            done = subprocess.run(
                [RULES_ENGINE, "--database-url", database_url, "worker", "--once",
                 "--max-age", "3s", "--rules", str(tmp_path / "no-rules")],
                env=environment, capture_output=True, text=True, timeout=60)
            runs.append((done.returncode, time.monotonic() - began, done.stderr))
            time.sleep(0.3)
    total = time.monotonic() - started
    print(f"\nworker --once runs: {len(runs)}, exit codes {[r[0] for r in runs]}, "
          f"seconds {[round(r[1], 2) for r in runs]}, all settled in {total:.1f} s")
    assert [code for code, _, _ in runs] == [0] * len(runs)
    assert not any("Traceback" in stderr for _, _, stderr in runs)
    assert rows(store, "pending") == [] and total < 60
    names = {crm.url: "CRM", loop.url: "LOOP", stranger: "NOT_HTTP", closed: "CLOSED"}
    found = {}
    for url, row in by_url(store).items():
        origin = url[:len(crm.url)]
        found[names[origin] + url[len(origin):]] = (row["status"], row["attempts"],
                                                    said(row))
    bad = len(crm.url) + len("/notes/a")  # where the CR, or the space, is
    assert found == {
        "NOT_HTTP/notes/stranger%0D%0AX-Injected%3A%201": (
            "failed", 1, (f"{stranger} does not answer HTTP (BadStatusLine: "
                          "SSH-2.0-OpenSSH_9.6 not what you expected)")),
        "LOOP/tickets?text=loop": (
            "failed", 1, (f"HTTP 307 from {loop.url}: a redirect to {loop.url}/tickets?text=loop, "
                          "not followed")),
        "CRM/notes/a\r\nX-Injected: 1": (
            "failed", 1, f"the URL cannot be sent: it holds '\\r' at character {bad}"),
        "CRM/notes/a b": (
            "failed", 1, f"the URL cannot be sent: it holds ' ' at character {bad}"),
        "CRM/contacts/crm%20..%2F..%2Fadmin%2Fdelete%3Fall%3D1%23": ("sent", 1, None),
        "CRM/contacts/crm%0D%0AHost%3A%20evil": ("sent", 1, None),
    } | {"CLOSED/tickets": found["CLOSED/tickets"]}
    # tried with backoff until 3 s old (on a loaded machine, one start of the worker may
    # take that long: then one attempt)
    status, attempts, reason = found["CLOSED/tickets"]
    assert status == "failed" and attempts >= 1 and reason.startswith(
        f"cannot reach {closed}: [Errno 111] Connection refused (gave up")
    assert len(loop.deliveries) == 1  # the loop was never followed
    assert sorted(d.path for d in crm.deliveries) == [
        "/contacts/crm%0D%0AHost%3A%20evil", "/contacts/crm%20..%2F..%2Fadmin%2Fdelete%3Fall%3D1%23"]
    assert all("X-Injected" not in d.headers and d.headers["Host"].startswith("127.0.0.1")
               for d in crm.deliveries)


@pytest.mark.parametrize("channel, recipient, status", [
    ("facebook", "psid-1", 301), ("viber", "vb-1", 302), ("whatsapp", "16505551234", 307),
    ("telegram", "5342492667", 308)])
def test_a_channel_send_never_follows_a_redirect(make_engine, store, channel, recipient, status):
    """A send API that redirects (to another host here, keeping the path and query that may
    hold the token) gets nothing sent on: the token stays with the configured API and the
    row fails, naming where the redirect pointed by its origin only."""
    with receiving() as elsewhere, receiving(
            lambda d, n: (status, {}, 0, {"Location": f"{elsewhere.url}{d.path}"})) as api:
        engine = make_engine(REPLYING)
        engine.process(message(recipient, "hi", channel=channel))
        worker(store, api.url).run_once()
    [row] = rows(store)
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert said(row) == (f"HTTP {status} from {api.url}: a redirect to {elsewhere.url}, "
                                 "not followed")  # a path could hold the token
    assert elsewhere.deliveries == [] and len(api.deliveries) == 1


def test_a_rules_call_never_follows_a_redirect_nor_carries_its_key_elsewhere(make_engine, store):
    with receiving() as elsewhere, receiving(
            lambda d, n: (307, {}, 0, {"Location": f"{elsewhere.url}/collect"})) as crm:
        engine = make_engine(f"""
rules:
  - id: crm
    trigger: {{event: message.received}}
    actions:
      - http_request:
          url: "{crm.url}/tickets"
          headers: {{X-Api-Key: k-123}}
""")
        engine.process(message("c-1", "hi"))
        worker(store, crm.url).run_once()
    [row] = rows(store)
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert f"a redirect to {elsewhere.url}/collect, not followed" in said(row)
    assert elsewhere.deliveries == [] and crm.deliveries[0].headers["X-Api-Key"] == "k-123"


@pytest.mark.parametrize("status, retried", [
    (408, True), (425, True), (429, True), (500, True), (503, True),
    (400, False), (401, False), (404, False), (422, False)])
def test_the_status_says_whether_to_come_back(make_engine, store, status, retried):
    with receiving(lambda d, n: (status, {"error": "why"}, 0)) as crm:
        engine = make_engine(calling(f"{crm.url}/tickets"))
        engine.process(message("c-1", "hi"))
        worker(store, crm.url).run_once()
    [row] = rows(store)
    reason = f'HTTP {status} from {crm.url}: {{"error": "why"}}'
    assert (row["status"], said(row)) == (
        ("pending", reason) if retried else ("failed", f"{reason}"))


@pytest.mark.parametrize("raw, reason, retried", [
    (b"", "{url} closed the connection without an answer", True),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n{}",
     "the answer from {url} was cut short", True),
    (b"HTTP/1.1 200 OK\r\nX-Long: " + b"x" * 70000 + b"\r\n\r\n",
     "{url} does not answer HTTP (LineTooLong: got more than 65536 bytes when reading header line)",
     False),
])
def test_a_receiver_that_breaks_off_is_retried_one_that_is_not_http_is_not(
        make_engine, store, raw, reason, retried):
    with answering(raw) as url:
        make_engine(calling(f"{url}/tickets")).process(message("c-1", "hi"))
        worker(store, url).run_once()
    [row] = rows(store)
    reason = reason.format(url=url)
    assert (row["status"], said(row)) == (
        ("pending", reason) if retried else ("failed", f"{reason}"))


def test_a_name_that_does_not_resolve_is_retried(make_engine, store, monkeypatch):
    def unknown(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unknown)
    make_engine(calling("https://crm.example.com/tickets")).process(message("c-1", "hi"))
    worker(store, "http://127.0.0.1:9").run_once()
    [row] = rows(store)
    assert (row["status"], said(row)) == (
        "pending", "cannot reach https://crm.example.com: [Errno -2] Name or service not known")


def test_a_channel_credential_not_set_pauses_the_channel_until_resumed(make_engine, store):
    """The operator sets it, then resumes the channel; the row waits meanwhile."""
    make_engine(REPLYING).process(message("psid-1", "hi"))
    deliverer = OutboxWorker(store, worker_id="w", environ={}, clock=clock_from(T0))
    assert deliverer.run_once() == 1
    [row] = rows(store)
    assert (row["status"], row["attempts"], row["error"]) == ("pending", 0, {
        "kind": "auth", "code": None, "message": "FACEBOOK_PAGE_ACCESS_TOKEN is not set"})
    assert [p["channel"] for p in outbox.pauses(store)] == ["facebook"]
    assert deliverer.run_once() == 0  # a paused channel is not called
    outbox.resume(store, "facebook")
    assert deliverer.run_once() == 1


def test_a_header_http_cannot_carry_fails_the_row(store):
    """Rules can no longer write one; a row an older release queued with one fails at once."""
    store.run(lambda tx: tx.outbound.enqueue(values=dict(
        event_id="older", rule_id="crm", action="http_request", target="http", recipient=None,
        url="https://crm.example.com/tickets", method="POST",
        headers={"X-Note": "one\r\nX-Injected: 1"}, body=None, idempotency_key="older"),
        at=T0))
    worker(store, "http://127.0.0.1:9").run_once()
    [row] = rows(store)
    assert (row["status"], said(row)) == ("failed", (
        "the call to https://crm.example.com cannot be written (ValueError): its URL or a "
        "header holds what HTTP cannot carry"))


def test_a_receiver_that_stops_answering_is_retried_not_failed_at_once(make_engine, store):
    """Timeouts are worth another attempt: the row stays pending with the reason."""
    with receiving(lambda d, n: (200, {}, 1.5)) as slow:
        engine = make_engine(calling(f"{slow.url}/tickets"))
        engine.process(message("c-1", "hi"))
        worker(store, slow.url, timeout=0.5, lease_seconds=5, backoff_seconds=60).run_once()
    [row] = rows(store)
    assert (row["status"], row["attempts"]) == ("pending", 1)
    assert said(row) == f"{slow.url} timed out"


def test_an_unforeseen_error_still_ends_the_attempt(make_engine, store, monkeypatch, caplog):
    """A bug in a send is logged with its traceback and counted as an attempt, so the row
    fails once it is max_age old instead of being claimed again and again."""
    from connectors import delivery

    def broken(self, request):
        raise RuntimeError("a bug")

    monkeypatch.setattr(delivery.Transport, "send", broken)
    engine = make_engine(calling("https://crm.example.com/tickets"))
    engine.process(message("c-1", "hi"))
    deliverer = worker(store, "http://127.0.0.1:9", max_age=timedelta(seconds=1),
                       backoff_seconds=0.05, clock=lambda: datetime.now(timezone.utc))
    deadline = time.monotonic() + 10
    while not rows(store, "failed") and time.monotonic() < deadline:
        deliverer.run_once()
    [row] = rows(store)
    assert row["status"] == "failed" and row["attempts"] >= 2
    # given up when a retry would come too late, or at the next claim if the retry's due
    # time fell inside max_age but the claim came after it (a slow machine): both name the
    # attempts really made
    assert re.fullmatch(rf"unexpected RuntimeError \(gave up(: not sent)? after "
                        rf"{row['attempts']} attempts over 0:00:0[\d.]+\)", said(row)), said(row)
    assert "RuntimeError: a bug" in caplog.text


def claim_and_die(store) -> None:
    """A worker's claim whose delivery never ends: the lease runs out at once."""
    now = datetime.now(timezone.utc)
    store.run(lambda tx: tx.outbound.claim(worker="doomed", now=now, lease_until=now, limit=1))


def test_a_row_whose_attempts_never_finished_is_not_tried_beyond_max_age(make_engine, store):
    """Workers that died mid-delivery leave the attempt counted but unrecorded; once the
    row is older than max_age the row fails without another call."""
    with receiving() as crm:
        engine = make_engine(calling(f"{crm.url}/tickets"))
        engine.process(message("c-1", "hi"))
        for _ in range(3):  # three workers claim it and die (their leases run out at once)
            claim_and_die(store)
        time.sleep(0.1)
        worker(store, crm.url, max_age=timedelta(seconds=0.05),
               clock=lambda: datetime.now(timezone.utc)).run_once()
    [row] = rows(store)
    assert (row["status"], row["attempts"]) == ("failed", 3) and crm.deliveries == []
    assert said(row).startswith("an attempt never finished (gave up: not sent after 3 "
                                "attempts over 0:00:00.")
