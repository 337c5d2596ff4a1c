"""The dashboard as a person sees it: real headless Chromium (Debian's) driven by Playwright."""
from __future__ import annotations

import os
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
from werkzeug.serving import make_server

from connectors import create_app
from rules_engine import people
from rules_engine.demo_data import generate_demo_data

from . import webhook_payloads as p
from .test_server import free_port

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium for this test")
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)

sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright


@pytest.fixture
def served(tmp_path, clean_environment, database_url):
    app = create_app({"api_token": p.SECRETS["api_token"], "rules_dir": str(tmp_path),
                      "database_url": database_url})
    (tmp_path / "rules.yaml").write_text("rules: []\n", "utf-8")
    store = app.extensions["rules_engine"].store
    generate_demo_data(store, conversations=4000, days=90, seed=5)
    _, token = people.add_user(store, "lead", people.Role.VIEWER, now=datetime.now(timezone.utc))
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}", token
    server.shutdown()
    app.extensions["rules_engine"].store.dispose()


def api_report(base: str, **params: str) -> dict:
    response = requests.get(f"{base}/api/reports/conversations", params=params, timeout=10,
                            headers={"Authorization": f"Bearer {p.SECRETS['api_token']}"})
    response.raise_for_status()
    return response.json()


def headline(page, test_id: str) -> str:
    return page.get_attribute(f'[data-testid="{test_id}"]', "data-value")


def test_the_dashboard_in_a_real_browser(served):
    served, token = served
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{served}/dashboard")
            assert page.locator("input[name=token]").is_visible()  # signed out: the sign-in form
            page.fill("input[name=token]", p.SECRETS["api_token"])  # not a person's token
            page.click("button[type=submit]")
            assert page.text_content('[data-testid="sign-in-message"]') == "That token is not valid."
            page.fill("input[name=token]", token)
            page.click("button[type=submit]")
            page.wait_for_selector('[data-testid="closed-count"]')
            assert page.text_content('[data-testid="signed-in-as"]') == "lead (viewer)"

            report = api_report(served)
            assert int(headline(page, "open-now")) == report["totals"]["open_now"]
            assert int(headline(page, "closed-count")) == report["totals"]["closed"] > 0
            assert float(headline(page, "median-resolution")) == report["totals"]["resolution_seconds"]["median"]
            assert (float(headline(page, "median-first-response"))
                    == report["totals"]["first_response_seconds"]["median"])

            for chart in ("chart-closed-per-day", "chart-resolution", "chart-first-response"):
                svg = page.locator(f'[data-testid="{chart}"]')
                assert svg.is_visible()
                heights = [float(h) for h in svg.locator("rect.bar").evaluate_all(
                    "bars => bars.map(b => b.getBoundingClientRect().height)")]
                assert heights and max(heights) > 10, chart
            assert page.locator('[data-testid="per-user"] tbody tr').count() == 8
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

            today = datetime.now(timezone.utc)
            since, until = (today - timedelta(days=6)).strftime("%Y-%m-%d"), today.strftime("%Y-%m-%d")
            before = headline(page, "closed-count")
            page.fill('[data-testid="since"]', since)
            page.fill('[data-testid="until"]', until)
            page.click('[data-testid="apply-range"]')
            page.wait_for_url(f"**since={since}**")
            narrowed = api_report(served, since=since, until=until)
            assert headline(page, "closed-count") != before
            assert int(headline(page, "closed-count")) == narrowed["totals"]["closed"]
            assert float(headline(page, "median-resolution")) == narrowed["totals"]["resolution_seconds"]["median"]
            assert page.locator('[data-testid="chart-closed-per-day"] rect.bar').count() == 7
            page.screenshot(path=str(ARTIFACTS / "dashboard-7-days.png"), full_page=True)

            page.click('[data-testid="sign-out"] button')
            assert page.text_content('[data-testid="sign-in-message"]') == "You are signed out."
            page.goto(f"{served}/dashboard")
            assert page.locator("input[name=token]").is_visible()  # the session is over
        finally:
            browser.close()
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
