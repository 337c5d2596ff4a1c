"""The real server: ``rules-engine serve`` (gunicorn, 2 worker processes) driven over HTTP."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from connectors.config import ENVIRONMENT

from . import webhook_payloads as p

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(database_url):
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT.values()}
    environment.update({
        "RULES_ENGINE_API_TOKEN": p.SECRETS["api_token"],
        "FACEBOOK_APP_SECRET": p.SECRETS["facebook_app_secret"],
        "RULES_ENGINE_WEBHOOK_SECRET": p.SECRETS["webhook_secret"],
    })
    process = subprocess.Popen(
        [sys.executable, "-m", "rules_engine.cli", "--rules", str(REPO / "rules"),
         "--database-url", database_url, "serve",
         "--port", str(port), "--workers", "2"],
        env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            output = process.stdout.read().decode() if process.stdout else ""
            process.kill()
            pytest.fail(f"server did not start:\n{output}")
        time.sleep(0.2)
    yield base
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=20)


def test_serve_refuses_to_start_without_any_secret(database_url):
    environment = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT.values()}
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
