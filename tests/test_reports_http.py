"""The report API, the dashboard's access control and content, and /metrics."""
from __future__ import annotations

import csv
import io
import re
from datetime import datetime, timedelta, timezone

import pytest

from rules_engine import people
from rules_engine.demo_data import generate_demo_data

from . import webhook_payloads as p
from .test_webhooks import api_headers, app, client, post_facebook  # noqa: F401 - fixtures


@pytest.fixture
def seeded_client(app, client):  # noqa: F811 - fixture from test_webhooks
    generate_demo_data(app.extensions["rules_engine"].store, conversations=1500, days=60, seed=3)
    return client


def test_report_api_json_and_csv(seeded_client):
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    since = (datetime.now(timezone.utc) - timedelta(days=29)).strftime("%Y-%m-%d")
    url = f"/api/reports/conversations?since={since}&until={today}&by=channel"
    report = seeded_client.get(url, headers=api_headers()).json
    assert report["by"] == "channel" and report["totals"]["closed"] > 0
    assert sum(g["closed"] for g in report["groups"]) == report["totals"]["closed"]
    text = seeded_client.get(url + "&format=csv", headers=api_headers()).data.decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows[-1]["channel"] == "TOTAL" and int(rows[-1]["closed"]) == report["totals"]["closed"]


@pytest.mark.parametrize("query", ["since=never", "by=colour", "since=2026-11-05&until=2026-11-01",
                                   "team=&colour=red&by=team&since=2026-13-01"])
def test_report_api_bad_parameters_are_4xx(seeded_client, query):
    response = seeded_client.get(f"/api/reports/conversations?{query}", headers=api_headers())
    assert response.status_code == 422 and "error" in response.json


def test_report_api_needs_the_token(client):  # noqa: F811
    assert client.get("/api/reports/conversations").status_code == 401


@pytest.fixture
def viewer_token(app) -> str:  # noqa: F811
    store = app.extensions["rules_engine"].store
    return people.add_user(store, "lead", people.Role.VIEWER, now=datetime.now(timezone.utc))[1]


def test_dashboard_sign_in_sets_a_cookie_that_is_not_the_token(seeded_client, viewer_token):
    refused = seeded_client.get("/dashboard")
    assert refused.status_code == 401 and b"your own token" in refused.data
    assert b'method="post"' in refused.data  # the token never goes into a URL
    wrong = seeded_client.post("/dashboard", data={"token": "nope"})
    assert wrong.status_code == 401 and b"not valid" in wrong.data
    assert seeded_client.get(f"/dashboard?token={viewer_token}").status_code == 401
    integration = seeded_client.post("/dashboard", data={"token": p.SECRETS["api_token"]})
    assert integration.status_code == 401  # the dashboard is for people, each with their own
    signed_in = seeded_client.post("/dashboard?since=2026-11-01", data={"token": viewer_token})
    assert signed_in.status_code == 303
    assert signed_in.headers["Location"] == "/dashboard?since=2026-11-01"
    cookie = signed_in.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert viewer_token not in cookie
    page = seeded_client.get("/dashboard")
    assert page.status_code == 200 and b'data-testid="chart-closed-per-day"' in page.data


def test_dashboard_accepts_the_bearer_header(seeded_client):
    assert seeded_client.get("/dashboard", headers=api_headers()).status_code == 200


def test_dashboard_headlines_equal_the_api(seeded_client):
    page = seeded_client.get("/dashboard", headers=api_headers()).data.decode()
    report = seeded_client.get("/api/reports/conversations", headers=api_headers()).json

    def value(test_id: str) -> str:
        return re.search(rf'data-testid="{test_id}" data-value="([^"]*)"', page).group(1)

    assert int(value("open-now")) == report["totals"]["open_now"]
    assert int(value("closed-count")) == report["totals"]["closed"]
    assert float(value("median-resolution")) == report["totals"]["resolution_seconds"]["median"]
    assert page.count('class="bar"') == 30 + 10 + 10  # 30 days, 10 + 10 distribution buckets
    assert "<script" not in page and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_metrics_count_events_rules_and_rejections(client):  # noqa: F811
    post_facebook(client, p.messenger(p.fb_message("PSID-M", "m_metrics", "thanks")))
    post_facebook(client, p.messenger(p.fb_message("PSID-M", "m_metrics", "thanks")))
    client.post("/webhooks/facebook", json={}, headers={"X-Hub-Signature-256": "sha256=00"})
    text = client.get("/metrics", headers=api_headers()).data.decode()
    assert re.search(r'rules_engine_events_received_total\{channel="facebook",source="web",'
                     r'status="duplicate",type="message.received"\} [1-9]', text)
    assert re.search(r'rules_engine_rules_fired_total\{rule_id="close-on-thanks",source="web"\} [1-9]',
                     text)
    assert re.search(r'rules_engine_actions_total\{action="close_conversation",outcome="applied",'
                     r'source="web"\}', text)
    assert re.search(r'rules_engine_requests_rejected_total\{reason="bad_signature"\} [1-9]', text)
    assert "rules_engine_event_processing_seconds_bucket" in text


def test_dashboard_shows_team_and_channel_performance(seeded_client):
    page = seeded_client.get("/dashboard", headers=api_headers()).data.decode()
    for name in ("user", "team", "channel"):
        assert f'data-testid="per-{name}"' in page
    by_team = seeded_client.get("/api/reports/conversations?by=team", headers=api_headers()).json
    table = page.split('data-testid="per-team"')[1].split("</table>")[0]
    assert all(f"<td>{g['key']}</td><td>{g['closed']}</td>" in table
               for g in by_team["groups"] if g["key"])


def test_dashboard_cookie_is_secure_over_https_and_behind_a_tls_proxy(seeded_client,
                                                                      viewer_token):
    direct = seeded_client.post("/dashboard", data={"token": viewer_token},
                                base_url="https://localhost")
    proxied = seeded_client.post("/dashboard", data={"token": viewer_token},
                                 headers={"X-Forwarded-Proto": "https"})
    plain = seeded_client.post("/dashboard", data={"token": viewer_token})
    assert "Secure" in direct.headers["Set-Cookie"] and "Secure" in proxied.headers["Set-Cookie"]
    assert "Secure" not in plain.headers["Set-Cookie"]


def test_csv_cells_a_spreadsheet_would_run_are_escaped(client):  # noqa: F811
    body = p.encode({"id": "csv-1", "type": "message.received", "channel": "webchat",
                     "contact": {"external_id": "csv-visitor"}, "message": {"text": "hi"}})
    first = client.post("/webhooks/events", data=body, content_type="application/json",
                        headers=p.signed_headers("/webhooks/events", body)).json["results"][0]
    client.post(f"/api/conversations/{first['conversation_id']}/close", headers=api_headers(),
                json={"user": "x"})
    opened = client.post(f"/api/contacts/{first['contact_id']}/conversations",
                         headers=api_headers(), json={
                             "user": "x", "assignee": '=HYPERLINK("http://evil.example","x")',
                             "team": "@SUM(1+1)"}).json
    client.post(f"/api/conversations/{opened['conversation']['id']}/close",
                headers=api_headers(), json={"user": "x"})
    for by, escaped in (("user", "'=HYPERLINK"), ("team", "'@SUM")):
        text = client.get(f"/api/reports/conversations?by={by}&format=csv",
                          headers=api_headers()).data.decode()
        rows = list(csv.reader(io.StringIO(text)))
        assert any(row[0].startswith(escaped) for row in rows), rows
        assert not any(row[0].startswith(("=", "+", "-", "@")) for row in rows[1:])
