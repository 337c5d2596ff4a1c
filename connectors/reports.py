"""Reports over HTTP: the JSON/CSV report API and the dashboard page a team lead looks at."""
from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta, timezone
from typing import Any

from flask import Blueprint, Response, jsonify, redirect, render_template, request

from rules_engine import RulesEngineError
from rules_engine.metrics import (
    GroupBy,
    closed_per_day,
    conversation_report,
    parse_report_query,
)
from rules_engine.report_format import duration, to_csv

from .auth import require_bearer
from .charts import bar_chart
from .http import ApiError, engine, from_engine_error
from .http import settings as app_settings

COOKIE = "rules_engine_dashboard"
RANGE_PRESETS = (7, 30, 90)

blueprint = Blueprint("reports", __name__, template_folder="templates")


DASHBOARD_MAX_DAYS = 1_100  # the dashboard draws a bar per day


def _report_query(now: datetime, *, max_days: int | None = None, **overrides: str) -> Any:
    try:
        return parse_report_query({**request.args.to_dict(), **overrides}, now=now,
                                  max_days=max_days)
    except RulesEngineError as error:
        raise from_engine_error(error) from None


@blueprint.get("/api/reports/conversations")
def report() -> Any:
    """Closed count and resolution time, responded count and first response time (mean,
    median, p90, max), open now: JSON or CSV."""
    settings = app_settings()
    require_bearer(settings.api_token, request.headers.get("Authorization"), dev=settings.dev)
    now = datetime.now(timezone.utc)
    result = conversation_report(engine().store, _report_query(now), now=now)
    if request.args.get("format") == "csv":
        return Response(to_csv(result), mimetype="text/csv",
                        headers={"Content-Disposition": "attachment; filename=conversations.csv"})
    return jsonify(result)


def _cookie_value(token: str) -> str:
    """What the dashboard cookie holds: a MAC of the token, never the token itself."""
    return hmac.new(token.encode(), b"rules-engine dashboard", hashlib.sha256).hexdigest()


def _dashboard_access() -> Response | None:
    """None when the request may see the dashboard; else the sign-in page to send instead."""
    settings = app_settings()
    token = settings.api_token
    if token is None:
        if settings.dev:
            return None
        raise ApiError(503, "not_configured", "RULES_ENGINE_API_TOKEN is not set")
    cookie = request.cookies.get(COOKIE, "")
    if hmac.compare_digest(cookie.encode(), _cookie_value(token).encode()):
        return None
    if request.headers.get("Authorization"):
        require_bearer(token, request.headers.get("Authorization"), dev=settings.dev)
        return None
    return Response(render_template("login.html", failed=False), status=401)


@blueprint.post("/dashboard")
def sign_in() -> Any:
    """The sign-in form: the API token in the body (never in a URL, which logs would keep)."""
    settings = app_settings()
    token = settings.api_token
    given = request.form.get("token", "")
    if token is None or not hmac.compare_digest(given.encode(), token.encode()):
        return Response(render_template("login.html", failed=True), status=401)
    response = redirect(request.full_path.rstrip("?"), code=303)
    https = request.is_secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"
    response.set_cookie(COOKIE, _cookie_value(token), httponly=True, samesite="Strict",
                        secure=https, max_age=12 * 3600)  # Secure behind a TLS proxy too
    return response


def _distribution_chart(buckets: list[dict[str, Any]], *, title: str, test_id: str) -> Any:
    """A report's distribution (``{"bucket", "count"}`` items) as a bar per bucket."""
    return bar_chart([(b["bucket"], b["count"]) for b in buckets], title=title, test_id=test_id)


@blueprint.get("/dashboard")
def dashboard() -> Any:
    """Headline figures, closed per day, the resolution- and first-response-time
    distributions, and tables per user, team and channel."""
    refused = _dashboard_access()
    if refused is not None:
        return refused
    now = datetime.now(timezone.utc)
    query = _report_query(now, max_days=DASHBOARD_MAX_DAYS)
    store = engine().store
    totals = conversation_report(store, query, now=now)
    slices = [{"name": name, "none": none, "report": conversation_report(
                  store, _report_query(now, by=by.value), now=now)}
              for name, by, none in (("user", GroupBy.USER, "(unassigned)"),
                                     ("team", GroupBy.TEAM, "(no team)"),
                                     ("channel", GroupBy.CHANNEL, "(no channel)"))]
    per_day = closed_per_day(store, query)
    day_chart = bar_chart([(d["day"][5:], d["closed"]) for d in per_day],
                          title="Closed conversations per day", test_id="chart-closed-per-day",
                          label_every=max(1, len(per_day) // 10))
    distribution_chart = _distribution_chart(totals["distribution"],
                                             title="Resolution time distribution",
                                             test_id="chart-resolution")
    first_response_chart = _distribution_chart(totals["first_response_distribution"],
                                               title="First response time distribution",
                                               test_id="chart-first-response")
    until_day = (query.until - timedelta(microseconds=1)).strftime("%Y-%m-%d")
    presets = [(days, f"?since={(now - timedelta(days=days - 1)):%Y-%m-%d}&until={now:%Y-%m-%d}")
               for days in RANGE_PRESETS]
    return render_template(
        "dashboard.html", report=totals, slices=slices, day_chart=day_chart,
        distribution_chart=distribution_chart, first_response_chart=first_response_chart,
        duration=duration, presets=presets,
        since=query.since.strftime("%Y-%m-%d"), until=until_day, generated_at=now)
