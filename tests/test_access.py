"""People and roles: every route's access, generated from the URL map; people act as
themselves; sign-ins are limited, sessions random, ended by logout, expiry and revocation."""
from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
from flask import Flask

from connectors import ConfigError, create_app
from connectors.access import PLATFORM, PUBLIC, SESSION_COOKIE, access, declared_access
from rules_engine import people
from rules_engine.people import Role

from . import webhook_payloads as p
from .test_server import REPO

NOW = datetime.now(timezone.utc)

# The policy, endpoint by endpoint: a new route must be added here (and declare its access).
POLICY = {
    "healthz": PUBLIC, "openapi": PUBLIC, "reports.sign_in": PUBLIC,
    "events.receive_events": PLATFORM,
    "reports.report": Role.VIEWER, "reports.dashboard": Role.VIEWER,
    "reports.sign_out": Role.VIEWER, "observability.metrics": Role.VIEWER,
    "api.open_conversation": Role.AGENT, "api.close_conversation": Role.AGENT,
    "api.record_reply": Role.AGENT, "api.find_contacts": Role.AGENT,
    "api.contact_conversations": Role.AGENT, "api.get_conversation": Role.AGENT,
    "api.event_trace": Role.AGENT, "api.run_rule": Role.AGENT,
    "api.conversation_notes": Role.AGENT,
    "api.merge_contacts": Role.ADMIN, "api.outbox_rows": Role.ADMIN,
    "api.retry_outbound": Role.ADMIN, "api.retry_outbound_rows": Role.ADMIN,
    "api.paused_channels": Role.ADMIN, "api.resume_channel": Role.ADMIN,
    "api.list_teams": Role.AGENT, "api.set_presence": Role.AGENT,
    "api.join_team": Role.ADMIN, "api.leave_team": Role.ADMIN,
    "reload.reload_rules": Role.ADMIN,
}


@pytest.fixture
def app(tmp_path, clean_environment, database_url):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text("rules: []\n", "utf-8")
    application = create_app({**p.SECRETS, "rules_dir": str(rules), "database_url": database_url})
    yield application
    application.extensions["rules_engine"].store.dispose()


@pytest.fixture
def tokens(app) -> dict[str, str]:
    """A token per kind of caller: each role's user, the integration, and a wrong one."""
    store = app.extensions["rules_engine"].store
    made = {role.value: people.add_user(store, f"the-{role.value}", role, now=NOW)[1]
            for role in Role}
    return {**made, "integration": p.SECRETS["api_token"], "wrong": "ret_" + "x" * 43}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def routes(app: Flask):
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule, method


def test_every_route_declares_the_access_the_policy_gives_it(app):
    declared = {}
    for rule, _ in routes(app):
        level = declared_access(app.view_functions[rule.endpoint])
        assert level is not None, f"{rule.rule} declares no access"
        declared[rule.endpoint] = level
    platform = {e for e, level in declared.items() if e.startswith("channels.")}
    assert all(declared[e] == PLATFORM for e in platform)
    assert {e: level for e, level in declared.items() if e not in platform} == POLICY


def _path(rule) -> str:
    return rule.rule.replace("<id:", "<").replace("<path:", "<").replace(
        "<contact_id>", "1").replace("<conversation_id>", "1").replace("<primary_id>", "1") \
        .replace("<outbox_id>", "1").replace("<event_id>", "evt-1")


@pytest.mark.parametrize("caller", ["none", "wrong", "viewer", "agent", "admin", "integration"])
def test_each_caller_against_every_route(app, tokens, caller):
    client = app.test_client()
    headers = {} if caller == "none" else bearer(tokens[caller])
    rank = {"viewer": Role.VIEWER, "agent": Role.AGENT, "admin": Role.ADMIN,
            "integration": Role.ADMIN}.get(caller)
    for rule, method in routes(app):
        level = declared_access(app.view_functions[rule.endpoint])
        if level == PLATFORM:
            continue  # the platforms' own signatures: see test_webhooks
        answer = client.open(_path(rule), method=method, headers=headers)
        where = f"{method} {rule.rule} as {caller}"
        if level == PUBLIC:
            assert answer.status_code != 403, where  # (the sign-in form answers 401 itself)
        elif rank is None:
            assert answer.status_code == 401, where
            if rule.endpoint == "reports.dashboard":
                assert b'name="token"' in answer.data  # a person is shown the sign-in form
        elif rank.allows(Role(level)):
            assert answer.status_code not in (401, 403), (where, answer.data[:200])
        else:
            assert answer.status_code == 403, where
            assert answer.json["error"]["code"] == "forbidden"


def test_a_route_that_declares_nothing_is_refused_to_everyone(app, tokens):
    app.add_url_rule("/undeclared", "undeclared", lambda: "secret")
    app.add_url_rule("/declared", "declared", access(PUBLIC)(lambda: "hello"))
    client = app.test_client()
    for token in (tokens["admin"], tokens["integration"]):
        answer = client.get("/undeclared", headers=bearer(token))
        assert answer.status_code == 403
    assert client.get("/declared").status_code == 200


def _open_conversation(client, tokens) -> int:
    body = p.encode({"id": "m-access", "type": "message.received", "channel": "webchat",
                     "contact": {"external_id": "access-visitor"}, "message": {"text": "hi"}})
    answer = client.post("/webhooks/events", data=body, content_type="application/json",
                         headers=p.signed_headers("/webhooks/events", body))
    return answer.json["results"][0]["conversation_id"]


def test_an_agent_acts_as_themselves_and_never_as_another(app, tokens):
    client = app.test_client()
    conversation = _open_conversation(client, tokens)
    refused = client.post(f"/api/conversations/{conversation}/close", json={"user": "susan"},
                          headers=bearer(tokens["agent"]))
    assert refused.status_code == 403
    assert refused.json["error"]["code"] == "impersonation_refused"
    assert client.get(f"/api/conversations/{conversation}",
                      headers=bearer(tokens["agent"])).json["status"] == "open"
    closed = client.post(f"/api/conversations/{conversation}/close", json={"note": "done"},
                         headers=bearer(tokens["agent"]))
    assert closed.status_code == 200
    assert closed.json["conversation"]["closed_by"] == "the-agent"
    trace = client.get(f"/api/events/{closed.json['event_id']}/trace",
                       headers=bearer(tokens["agent"])).json
    assert "via" not in trace
    same = client.post(f"/api/contacts/{closed.json['contact_id']}/conversations",
                       json={"user": "the-agent"}, headers=bearer(tokens["agent"]))
    assert same.status_code == 201 and same.json["conversation"]["opened_by"] == "the-agent"


@pytest.mark.parametrize("caller, via", [("admin", "admin:the-admin"),
                                         ("integration", "integration")])
def test_an_admin_or_the_integration_acts_for_a_named_user_recorded_as_such(app, tokens,
                                                                             caller, via):
    client = app.test_client()
    conversation = _open_conversation(client, tokens)
    closed = client.post(f"/api/conversations/{conversation}/close", json={"user": "susan"},
                         headers=bearer(tokens[caller]))
    assert closed.status_code == 200
    assert closed.json["conversation"]["closed_by"] == "susan"
    trace = client.get(f"/api/events/{closed.json['event_id']}/trace",
                       headers=bearer(tokens["admin"])).json
    assert (trace["actor"], trace["via"]) == ("susan", via)


def test_the_integration_token_must_name_the_user(app, tokens):
    client = app.test_client()
    conversation = _open_conversation(client, tokens)
    answer = client.post(f"/api/conversations/{conversation}/close", json={},
                         headers=bearer(tokens["integration"]))
    assert answer.status_code == 400 and answer.json["error"]["path"] == "user"


def sign_in(client, token: str, address: str = "203.0.113.7"):
    return client.post("/dashboard", data={"token": token},
                       environ_base={"REMOTE_ADDR": address})


def test_failed_sign_ins_are_limited_per_client_address(app, tokens):
    client = app.test_client()
    for _ in range(people.SIGN_IN_ATTEMPTS):
        assert sign_in(client, "ret_guess").status_code == 401
    limited = sign_in(client, tokens["viewer"])  # even the right token, from that address
    assert limited.status_code == 429
    assert 0 < int(limited.headers["Retry-After"]) <= 15 * 60
    assert sign_in(client, tokens["viewer"], address="198.51.100.9").status_code == 303


def test_the_limit_window_passes_and_a_success_clears_it(app):
    store = app.extensions["rules_engine"].store
    for _ in range(people.SIGN_IN_ATTEMPTS):
        people.record_sign_in(store, "192.0.2.1", succeeded=False, now=NOW)
    assert people.sign_in_refused_until(store, "192.0.2.1", now=NOW) == \
        NOW + people.SIGN_IN_WINDOW
    assert people.sign_in_refused_until(store, "192.0.2.1",
                                        now=NOW + people.SIGN_IN_WINDOW) is None
    people.record_sign_in(store, "192.0.2.1", succeeded=True, now=NOW)
    assert people.sign_in_refused_until(store, "192.0.2.1", now=NOW) is None


def test_the_client_address_behind_trusted_proxies(tmp_path, clean_environment, database_url):
    (tmp_path / "rules.yaml").write_text("rules: []\n", "utf-8")
    app = create_app({**p.SECRETS, "rules_dir": str(tmp_path), "database_url": database_url,
                      "trusted_proxies": 1})
    client = app.test_client()
    for _ in range(people.SIGN_IN_ATTEMPTS):
        client.post("/dashboard", data={"token": "ret_guess"},
                    headers={"X-Forwarded-For": "203.0.113.50"})
    assert client.post("/dashboard", data={"token": "ret_guess"},
                       headers={"X-Forwarded-For": "203.0.113.50"}).status_code == 429
    assert client.post("/dashboard", data={"token": "ret_guess"},
                       headers={"X-Forwarded-For": "203.0.113.51"}).status_code == 401
    app.extensions["rules_engine"].store.dispose()


def test_each_sign_in_is_a_new_random_session_ended_by_logout(app, tokens):
    first, second = app.test_client(), app.test_client()
    cookies = []
    for client in (first, second):
        signed = sign_in(client, tokens["viewer"])
        assert signed.status_code == 303
        cookie = client.get_cookie(SESSION_COOKIE)
        assert "HttpOnly" in signed.headers["Set-Cookie"]
        assert "SameSite=Strict" in signed.headers["Set-Cookie"]
        cookies.append(cookie.value)
        assert client.get("/dashboard").status_code == 200
    assert cookies[0] != cookies[1] and tokens["viewer"] not in cookies
    first.post("/dashboard/logout")
    assert first.get("/dashboard").status_code == 401
    first.set_cookie(SESSION_COOKIE, cookies[0])  # the old value, replayed
    assert first.get("/dashboard").status_code == 401
    assert second.get("/dashboard").status_code == 200  # the other session is untouched


def test_sessions_expire_and_end_when_the_user_is_revoked(app):
    store = app.extensions["rules_engine"].store
    user, _ = people.add_user(store, "temp", Role.AGENT, now=NOW)
    session = people.start_session(store, user, now=NOW)
    assert people.session_user(store, session, now=NOW + timedelta(hours=11)) == user
    assert people.session_user(store, session, now=NOW + people.SESSION_LIFETIME) is None
    people.revoke_user(store, "temp", now=NOW)
    assert people.session_user(store, session, now=NOW) is None


def test_a_short_secret_stops_the_app_from_starting(tmp_path, clean_environment):
    with pytest.raises(ConfigError, match="RULES_ENGINE_API_TOKEN is shorter than 32"):
        create_app({"api_token": "x", "rules_dir": str(REPO / "rules"),
                    "database_url": f"sqlite:///{tmp_path / 'x.db'}"})


def test_security_headers_on_every_answer(app):
    client = app.test_client()
    for answer in (client.get("/healthz"), client.get("/dashboard")):
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]
        assert "script-src" not in answer.headers["Content-Security-Policy"]  # default: none


def cli(*arguments: str, database_url: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rules_engine.cli", "--database-url",
                           database_url, "users", *arguments],
                          capture_output=True, text=True, timeout=60)


def test_users_from_the_command_line(app, database_url):
    added = cli("add", "maria", "--role", "agent", database_url=database_url)
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    assert added.stdout == token + "\n" and token.startswith("ret_") and len(token) > 40
    assert "shown only once" in added.stderr
    client = app.test_client()
    assert client.get("/api/contacts?channel=webchat&external_id=x",
                      headers=bearer(token)).status_code == 200
    again = cli("add", "maria", "--role", "admin", database_url=database_url)
    assert again.returncode == 1 and "already exists" in again.stderr
    listed = cli("list", database_url=database_url)
    assert "maria" in listed.stdout and "agent" in listed.stdout
    with app.extensions["rules_engine"].store.read() as tx:  # only the digest is kept
        assert token not in str(tx.connection.exec_driver_sql("SELECT * FROM users").all())
    revoked = cli("revoke", "maria", database_url=database_url)
    assert revoked.returncode == 0
    assert client.get("/api/contacts?channel=webchat&external_id=x",
                      headers=bearer(token)).status_code == 401
    assert cli("revoke", "maria", database_url=database_url).returncode == 1
