"""Safe hot reload: a broken rule set is refused with its errors and the old one keeps serving."""
from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import requests

from connectors import create_app
from rules_engine import Engine, load_rule_set
from rules_engine.domain.lifecycle import Lifecycle

from . import webhook_payloads as p
from .conftest import message
from .test_server import REPO, start_server, stop_server

GOOD = """rules:
  - id: tag-hello
    trigger: {event: message.received}
    actions: [{add_tag: {tag: hello}}]
"""
NEWER = GOOD + """  - id: tag-second
    trigger: {event: message.received}
    actions: [{add_tag: {tag: second}}]
"""
BROKEN = GOOD + """  - id: broken
    trigger: {event: message.recieved}
    actions: []
"""


def test_reload_over_the_api(tmp_path, clean_environment, database_url):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text(GOOD, "utf-8")
    app = create_app({**p.SECRETS, "rules_dir": str(rules), "database_url": database_url})
    client = app.test_client()
    headers = {"Authorization": f"Bearer {p.SECRETS['api_token']}"}
    old_version = client.get("/healthz").json["rules_version"]

    (rules / "rules.yaml").write_text(BROKEN, "utf-8")
    refused = client.post("/api/rules/reload", headers=headers)
    assert refused.status_code == 422
    assert f"still serving version {old_version}" in refused.json["error"]["message"]
    problems = refused.json["errors"]
    assert {(e["rule_id"], e["line"]) for e in problems} == {("broken", 6), ("broken", 7)}
    assert client.get("/healthz").json["rules_version"] == old_version

    (rules / "rules.yaml").write_text(NEWER, "utf-8")
    accepted = client.post("/api/rules/reload", headers=headers)
    assert accepted.status_code == 200
    assert accepted.json["previous_version"] == old_version
    assert accepted.json["rules"] == 2
    new_version = accepted.json["version"]
    body = p.encode({"id": "after-reload", "type": "message.received", "channel": "webchat",
                     "contact": {"external_id": "v1"}, "message": {"text": "hi"}})
    client.post("/webhooks/events", data=body, content_type="application/json",
                headers={"X-Signature-256": "sha256=" + p.hmac_hex(p.SECRETS["webhook_secret"], body)})
    trace = client.get("/api/events/after-reload/trace", headers=headers).json
    assert trace["ruleset_version"] == new_version and trace["fired"] == ["tag-hello", "tag-second"]
    assert client.post("/api/rules/reload").status_code == 401


def test_an_event_in_flight_finishes_on_the_rules_it_started_with(tmp_path, store, monkeypatch):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "rules.yaml").write_text(GOOD, "utf-8")
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "rules.yaml").write_text(NEWER, "utf-8")
    old, new = load_rule_set([tmp_path / "old"]), load_rule_set([tmp_path / "new"])
    engine = Engine(store, old)
    started, release = threading.Event(), threading.Event()
    original = Lifecycle.add_tags

    def slow_add_tags(self, *args, **kwargs):
        started.set()
        release.wait(10)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Lifecycle, "add_tags", slow_add_tags)
    results = []
    worker = threading.Thread(target=lambda: results.append(engine.process(message("u", "hi"))))
    worker.start()
    assert started.wait(10)
    engine.replace_rules(new)
    release.set()
    worker.join(10)
    assert results[0].trace["ruleset_version"] == old.version
    assert results[0].fired == ["tag-hello"]
    assert engine.process(message("u2", "hi")).trace["ruleset_version"] == new.version


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (the gunicorn workers of a master)."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                children.append(int(entry))
    return children


def wait_for_version(base: str, version_is, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        version = requests.get(f"{base}/healthz", timeout=5).json()["rules_version"]
        if version_is(version):
            return version
        time.sleep(0.2)
    raise AssertionError("the served rules version did not change as expected")


def test_sighup_reloads_the_server_only_for_a_valid_set(tmp_path, database_url):
    rules = tmp_path / "served-rules"
    shutil.copytree(REPO / "rules", rules)
    process, base = start_server(database_url, 2, tmp_path / "server.log", rules_dir=rules,
                                 extra=["--watch-rules"])
    try:
        old = requests.get(f"{base}/healthz", timeout=5).json()["rules_version"]
        (rules / "broken.yaml").write_text(BROKEN.replace("tag-hello", "other-hello"), "utf-8")
        os.kill(process.pid, signal.SIGHUP)
        time.sleep(3)  # the watcher sees the change too: still refused
        assert requests.get(f"{base}/healthz", timeout=5).json()["rules_version"] == old
        assert "reload refused: the rules are invalid" in (tmp_path / "server.log").read_text()
        # a worker started while the files are broken boots on the last valid set
        os.kill(children_of(process.pid)[0], signal.SIGKILL)
        time.sleep(2)
        assert process.poll() is None
        assert {requests.get(f"{base}/healthz", timeout=5).json()["rules_version"]
                for _ in range(6)} == {old}
        (rules / "broken.yaml").unlink()
        (rules / "extra.yaml").write_text(GOOD, "utf-8")  # the watcher reloads on its own
        new = wait_for_version(base, lambda v: v != old)
        assert new == load_rule_set([rules]).version
    finally:
        stop_server(process)
