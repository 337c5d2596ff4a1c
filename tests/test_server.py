"""The real server: ``rules-engine serve`` (gunicorn, 2 worker processes) driven over HTTP."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from sqlalchemy import text

from connectors.config import environment as settings_environment

from . import webhook_payloads as p

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(database_url: str, workers: int, log_path: Path, *,
                 rules_dir: Path = REPO / "rules", extra: list[str] | None = None,
                 unset: tuple[str, ...] = ()):
    """``rules-engine serve`` in a subprocess with every test secret set (but ``unset``)."""
    port = free_port()
    variables = settings_environment().values()
    environment = {k: v for k, v in os.environ.items() if k not in variables}
    names = settings_environment()
    environment.update({names[name]: value for name, value in p.SECRETS.items()
                        if name not in unset})
    process = subprocess.Popen(
        [sys.executable, "-m", "rules_engine.cli", "--rules", str(rules_dir),
         "--database-url", database_url, "serve",
         "--port", str(port), "--workers", str(workers), *(extra or [])],
        env=environment, stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True)  # a log file, not a pipe nobody reads: the access log is long
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{base}/healthz", timeout=5).status_code == 200:
                break
        except (requests.ConnectionError, requests.Timeout):
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            output = log_path.read_text(errors="replace")
            process.kill()
            pytest.fail(f"server did not start:\n{output}")
        time.sleep(0.2)
    return process, base


def stop_server(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=20)


@pytest.fixture
def server(database_url, tmp_path):
    process, base = start_server(database_url, 2, tmp_path / "server.log",
                                 unset=("viber_auth_token",))
    yield base
    stop_server(process)


@pytest.fixture
def four_workers(database_url, tmp_path):
    process, base = start_server(database_url, 4, tmp_path / "server.log")
    yield base
    stop_server(process)


def post_signed_event(base: str, event: dict) -> requests.Response:
    body = p.encode(event)
    return requests.post(f"{base}/webhooks/events", data=body, timeout=60, headers={
        "Content-Type": "application/json",
        "X-Signature-256": "sha256=" + p.hmac_hex(p.SECRETS["webhook_secret"], body)})


def test_serve_refuses_to_start_without_any_secret(database_url):
    variables = settings_environment().values()
    environment = {k: v for k, v in os.environ.items() if k not in variables}
    finished = subprocess.run(
        [sys.executable, "-m", "rules_engine.cli", "--rules", str(REPO / "rules"),
         "--database-url", database_url, "serve", "--port", str(free_port())],
        env=environment, capture_output=True, text=True, timeout=60)
    assert finished.returncode == 2
    assert "refusing to start" in finished.stderr


def test_the_served_app_over_http_with_two_workers(server):
    health = requests.get(f"{server}/healthz", timeout=5).json()
    assert health["status"] == "ok" and health["rules"] > 0

    def first_message(index: int) -> requests.Response:
        body = p.encode(p.messenger(p.fb_message("PSID-RACE", f"m_race_{index}", "hello")))
        return requests.post(f"{server}/webhooks/facebook", data=body, timeout=30, headers={
            "Content-Type": "application/json",
            "X-Hub-Signature-256": "sha256=" + p.hmac_hex(p.SECRETS["facebook_app_secret"], body)})

    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(first_message, range(40)))
    assert [r.status_code for r in responses] == [200] * 40
    contact_ids = {r.json()["results"][0]["contact_id"] for r in responses}
    assert len(contact_ids) == 1
    headers = {"Authorization": f"Bearer {p.SECRETS['api_token']}"}
    [contact_id] = contact_ids
    conversations = requests.get(f"{server}/api/contacts/{contact_id}/conversations",
                                 headers=headers, timeout=5).json()
    assert [c["status"] for c in conversations] == ["open"]

    bad = requests.post(f"{server}/webhooks/facebook", data=b"{}", timeout=5, headers={
        "Content-Type": "application/json", "X-Hub-Signature-256": "sha256=" + "0" * 64})
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "bad_signature"
    unauthenticated = requests.get(f"{server}/api/contacts/{contact_id}/conversations", timeout=5)
    assert unauthenticated.status_code == 401
    disabled = requests.post(f"{server}/webhooks/viber", json={"event": "message"}, timeout=5)
    assert disabled.status_code == 503


def test_four_workers_1000_concurrent_first_messages_from_200_new_contacts(four_workers, store):
    events = [{"id": f"first-{n}", "type": "message.received", "channel": "webchat",
               "contact": {"external_id": f"new-visitor-{n % 200}"},
               "message": {"text": f"hello {n // 200}"}} for n in range(1000)]  # interleaved
    with ThreadPoolExecutor(max_workers=32) as pool:
        responses = list(pool.map(lambda e: post_signed_event(four_workers, e), events))
    assert sorted({r.status_code for r in responses}) == [200]
    assert {r.json()["results"][0]["status"] for r in responses} == {"applied"}
    with store.read() as tx:
        count = lambda sql: tx.connection.execute(text(sql)).scalar()  # noqa: E731
        assert count("SELECT count(*) FROM contacts") == 200
        assert count("SELECT count(*) FROM conversations WHERE closed_at IS NULL") == 200
        assert count("SELECT count(*) FROM conversations") == 200
        assert count("SELECT count(*) FROM processed_events WHERE event_id LIKE 'first-%'") == 1000
        assert count("SELECT count(*) FROM event_traces") == 1000

    replayed = events[:100] * 2
    with ThreadPoolExecutor(max_workers=32) as pool:
        again = list(pool.map(lambda e: post_signed_event(four_workers, e), replayed))
    assert {r.status_code for r in again} == {200}
    assert {r.json()["results"][0]["status"] for r in again} == {"duplicate"}
    with store.read() as tx:
        assert tx.connection.execute(text("SELECT count(*) FROM processed_events")).scalar() == 1000


def test_the_same_100_new_events_twice_concurrently_over_http(four_workers, store):
    events = [{"id": f"twice-{n}", "type": "message.received", "channel": "webchat",
               "contact": {"external_id": f"visitor-{n % 30}"}, "message": {"text": "hi"}}
              for n in range(100)]
    with ThreadPoolExecutor(max_workers=32) as pool:
        responses = list(pool.map(lambda e: post_signed_event(four_workers, e), events + events))
    statuses: dict = {}
    for response in responses:
        result = response.json()["results"][0]
        statuses.setdefault(result["event_id"], []).append(result["status"])
    assert all(sorted(s) == ["applied", "duplicate"] for s in statuses.values())
    with store.read() as tx:
        assert tx.connection.execute(text("SELECT count(*) FROM processed_events")).scalar() == 100
        assert tx.connection.execute(
            text("SELECT count(*) FROM conversations WHERE closed_at IS NULL")).scalar() == 30


def test_metrics_under_serve_count_the_events_of_every_worker(database_url, tmp_path):
    process, base = start_server(database_url, 2, tmp_path / "server.log")
    [metrics_dir] = re.findall(r"metrics of every worker in (\S+)",
                               (tmp_path / "server.log").read_text())
    assert Path(metrics_dir).is_dir()
    try:
        events = [{"id": f"metric-{n}", "type": "message.received", "channel": "webchat",
                   "contact": {"external_id": f"m-{n % 5}"}, "message": {"text": "hi"}}
                  for n in range(40)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            assert {r.status_code for r in pool.map(lambda e: post_signed_event(base, e),
                                                    events)} == {200}
        for _ in range(10):  # each scrape is answered by one worker: all must say the same
            response = requests.get(f"{base}/metrics", timeout=10, headers={
                "Authorization": f"Bearer {p.SECRETS['api_token']}"})
            assert response.headers["Content-Type"].count("charset") == 1
            counted = sum(float(line.rsplit(" ", 1)[1]) for line in response.text.splitlines()
                          if line.startswith("rules_engine_events_received_total{"))
            assert counted == 40
    finally:
        stop_server(process)
    assert not Path(metrics_dir).exists()


def test_serve_lists_the_disabled_endpoints_and_what_to_set(database_url, tmp_path):
    log = tmp_path / "server.log"
    process, base = start_server(database_url, 1, log,
                                 unset=("telegram_secret_token", "viber_auth_token"))
    try:
        assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
    finally:
        stop_server(process)
    text = log.read_text()
    assert "disabled until configured" in text
    assert "/webhooks/telegram (set TELEGRAM_SECRET_TOKEN)" in text
    assert "/webhooks/viber (set VIBER_AUTH_TOKEN)" in text and "/webhooks/whatsapp" not in text
