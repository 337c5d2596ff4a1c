"""The server's promises, with real processes: reloads never break an answer, slow clients
never stop the server, development mode stays on loopback, secrets stay out of the log."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from connectors.config import environment as settings_environment

from . import webhook_payloads as p
from .test_reload import GOOD, children_of, wait_for_version
from .test_server import REPO, free_port, post_signed_event, start_server, stop_server

API = {"Authorization": f"Bearer {p.SECRETS['api_token']}"}


def counted(base: str, status: str) -> float:
    """The events /metrics counts with ``status``, whichever worker answers the scrape."""
    response = requests.get(f"{base}/metrics", headers=API, timeout=10)
    assert response.status_code == 200, response.text
    return sum(float(line.rsplit(" ", 1)[1]) for line in response.text.splitlines()
               if line.startswith("rules_engine_events_received_total{")
               and f'status="{status}"' in line)


def messages(prefix: str, count: int) -> list[dict]:
    return [{"id": f"{prefix}-{n}", "type": "message.received", "channel": "webchat",
             "contact": {"external_id": f"{prefix}-visitor-{n % 10}"}, "message": {"text": "hi"}}
            for n in range(count)]


def post_all(base: str, events: list[dict]) -> list[requests.Response]:
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda event: post_signed_event(base, event), events))


def test_a_reload_that_changes_the_rules_then_100_webhooks_all_answered_and_counted(
        tmp_path, database_url):
    rules = tmp_path / "served-rules"
    shutil.copytree(REPO / "rules", rules)
    log = tmp_path / "server.log"
    process, base = start_server(database_url, 2, log, rules_dir=rules)
    try:
        assert {r.status_code for r in post_all(base, messages("before", 10))} == {200}
        old = requests.get(f"{base}/healthz", timeout=5).json()["rules_version"]
        (rules / "extra.yaml").write_text(GOOD, "utf-8")
        reloaded = requests.post(f"{base}/api/rules/reload", headers=API, timeout=30)
        assert reloaded.status_code == 200, reloaded.text
        new = reloaded.json()["version"]
        assert new != old
        wait_for_version(base, lambda version: version == new)
        time.sleep(1)  # the old workers finish and leave

        events = messages("after", 100)
        answers = post_all(base, events)
        assert [r.status_code for r in answers] == [200] * 100
        assert {r.json()["results"][0]["status"] for r in answers} == {"applied"}
        assert all("tag-hello" in r.json()["results"][0]["fired"] for r in answers)  # new rules
        again = post_all(base, events)
        assert {r.json()["results"][0]["status"] for r in again} == {"duplicate"}

        for _ in range(6):  # each scrape is answered by one worker, old or new: the same sums
            assert counted(base, "applied") == 110
            assert counted(base, "duplicate") == 100

        os.kill(children_of(process.pid)[0], signal.SIGKILL)  # a worker dies: counts stay
        time.sleep(2)
        assert {r.status_code for r in post_all(base, messages("after-kill", 10))} == {200}
        assert counted(base, "applied") == 120
    finally:
        stop_server(process)
    assert "Traceback" not in log.read_text()


class _SlowClient(threading.Thread):
    """A client that sends a request one piece a second, for as long as it is let: its
    head (``part="head"``) or its body."""

    def __init__(self, port: int, part: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.part, self.stop = port, part, stop
        self.answer = b""
        self.closed_after: float | None = None

    def run(self) -> None:
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", self.port)) as sock:
            sock.settimeout(0.5)
            sock.sendall(b"POST /webhooks/events HTTP/1.1\r\nHost: test\r\n"
                         + (b"Content-Length: 100000\r\n\r\n" if self.part == "body" else b""))
            while not self.stop.is_set():
                try:
                    sock.sendall(b"X-Slow: yes\r\n" if self.part == "head" else b"{")
                    chunk = sock.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    chunk = b""
                if not chunk:
                    self.closed_after = time.monotonic() - started
                    return
                self.answer += chunk
                if b"\r\n\r\n" in self.answer:
                    self.closed_after = time.monotonic() - started
                    return


def test_100_slow_connections_while_500_webhooks_are_answered_each_within_a_second(
        tmp_path, database_url):
    process, base = start_server(database_url, 2, tmp_path / "server.log")
    port = int(base.rsplit(":", 1)[1])
    stop = threading.Event()
    slow = [_SlowClient(port, "head" if n % 2 else "body", stop) for n in range(100)]
    try:
        for client in slow:
            client.start()
        time.sleep(2)  # every slow connection is open and trickling
        health: list[float] = []

        def watch_health() -> None:
            while not stop.is_set():
                started = time.monotonic()
                assert requests.get(f"{base}/healthz", timeout=1).status_code == 200
                health.append(time.monotonic() - started)
                time.sleep(0.1)

        watcher = threading.Thread(target=watch_health, daemon=True)
        watcher.start()

        def timed(event: dict) -> tuple[int, float]:
            started = time.monotonic()
            response = post_signed_event(base, event)
            return response.status_code, time.monotonic() - started

        with ThreadPoolExecutor(max_workers=4) as pool:
            answers = list(pool.map(timed, messages("busy", 500)))
        assert all(client.is_alive() for client in slow), "the slow clients were held open"
        stop.set()
        watcher.join(5)
    finally:
        stop.set()
        stop_server(process)
    assert [status for status, _ in answers] == [200] * 500
    assert max(seconds for _, seconds in answers) < 1
    assert len(health) > 5 and max(health) < 1


def test_a_slow_head_is_cut_off_and_a_slow_body_answered_408(tmp_path, database_url):
    process, base = start_server(database_url, 1, tmp_path / "server.log",
                                 extra=["--header-timeout", "2", "--body-timeout", "3"])
    port = int(base.rsplit(":", 1)[1])
    stop = threading.Event()
    head, body = _SlowClient(port, "head", stop), _SlowClient(port, "body", stop)
    try:
        head.start()
        body.start()
        head.join(10)
        body.join(10)
    finally:
        stop.set()
        stop_server(process)
    assert head.closed_after is not None and 1.5 < head.closed_after < 4.5
    assert head.answer == b""
    assert body.closed_after is not None and 2.5 < body.closed_after < 5.5
    assert body.answer.startswith(b"HTTP/1.1 408 ")


def _serve(*arguments: str, environment: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rules_engine.cli", "--rules", str(REPO / "rules"), "serve",
         "--port", str(free_port()), *arguments],
        env=environment, capture_output=True, text=True, timeout=60)


def _without_settings() -> dict[str, str]:
    variables = set(settings_environment().values())
    return {k: v for k, v in os.environ.items() if k not in variables}


def test_development_mode_only_with_the_flag_and_only_on_loopback(tmp_path):
    environment = {**_without_settings(), "RULES_ENGINE_DEV": "1",
                   "RULES_ENGINE_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}
    by_variable = _serve(environment=environment)
    assert by_variable.returncode == 2
    assert "no secret is configured" in by_variable.stderr
    public = _serve("--dev", "--host", "0.0.0.0", environment=environment)
    assert public.returncode == 2
    assert "--dev serves endpoints without authentication" in public.stderr


@pytest.mark.parametrize("route", ["/webhooks/facebook", "/webhooks/whatsapp"])
def test_the_access_log_never_keeps_the_verify_token(tmp_path, database_url, route):
    log = tmp_path / "server.log"
    process, base = start_server(database_url, 1, log)
    token = p.SECRETS["facebook_verify_token" if "facebook" in route else "whatsapp_verify_token"]
    try:
        answer = requests.get(f"{base}{route}", timeout=5, params={
            "hub.mode": "subscribe", "hub.verify_token": token, "hub.challenge": "1158201444"})
        assert answer.status_code == 200 and answer.text == "1158201444"
        time.sleep(0.5)  # the access log line is written after the answer
    finally:
        stop_server(process)
    text = log.read_text()
    assert f"GET {route}?hub.mode=subscribe&hub.verify_token=***&hub.challenge=1158201444" in text
    assert token not in text
