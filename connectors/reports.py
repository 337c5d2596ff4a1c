"""Reports over HTTP: the JSON/CSV report API and the dashboard page a team lead looks at."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from flask import Blueprint, Response, jsonify, redirect, render_template, request

from rules_engine import RulesEngineError, people, queries
from rules_engine.metrics import (
    RELATIVE_ERROR,
    GroupBy,
    conversation_report,
    dashboard_reports,
    parse_report_query,
)
from rules_engine.people import Role
from rules_engine.report_format import duration, to_csv

from .access import PUBLIC, SESSION_COOKIE, access, principal, sign_in_page
from .charts import bar_chart
from .http import from_engine_error
from .services import engine

RANGE_PRESETS = (7, 30, 90)

blueprint = Blueprint("reports", __name__, template_folder="templates")


DASHBOARD_MAX_DAYS = 1_100  # the dashboard draws a bar per day
DASHBOARD_NOTES = 10  # the latest internal notes it lists


def _report_query(now: datetime, *, max_days: int | None = None, **overrides: str) -> Any:
    try:
        return parse_report_query({**request.args.to_dict(), **overrides}, now=now,
                                  max_days=max_days)
    except RulesEngineError as error:
        raise from_engine_error(error) from None


@blueprint.get("/api/reports/conversations")
@access(Role.VIEWER)
def report() -> Any:
    """Closed count and resolution time, responded count and first response time (mean,
    median, p90, max), open now: JSON or CSV."""
    now = datetime.now(timezone.utc)
    result = conversation_report(engine().store, _report_query(now), now=now)
    if request.args.get("format") == "csv":
        return Response(to_csv(result), mimetype="text/csv",
                        headers={"Content-Disposition": "attachment; filename=conversations.csv"})
    return jsonify(result)


@blueprint.post("/dashboard")
@access(PUBLIC)
def sign_in() -> Any:
    """The sign-in form: a user's own token in the body (never in a URL, which logs would
    keep); failed attempts are limited per client address."""
    store, now = engine().store, datetime.now(timezone.utc)
    address = request.remote_addr or "unknown"
    refused_until = people.sign_in_refused_until(store, address, now=now)
    if refused_until is not None:
        wait = max(1, int((refused_until - now).total_seconds()))
        page = sign_in_page(status=429, message=f"Too many failed sign-ins from your address: "
                                                f"try again in {wait // 60 + 1} minutes.")
        page.headers["Retry-After"] = str(wait)
        return page
    user = people.user_for_token(store, request.form.get("token", ""))
    people.record_sign_in(store, address, succeeded=user is not None, now=now)
    if user is None:
        return sign_in_page(status=401, message="That token is not valid.")
    session = people.start_session(store, user, now=now)
    response = redirect(request.full_path.rstrip("?"), code=303)  # the range asked for
    https = request.is_secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"
    response.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="Strict",
                        secure=https, max_age=int(people.SESSION_LIFETIME.total_seconds()))
    return response


@blueprint.post("/dashboard/logout")
@access(Role.VIEWER)
def sign_out() -> Any:
    """End this browser's session."""
    session = request.cookies.get(SESSION_COOKIE)
    if session:
        people.end_session(engine().store, session, now=datetime.now(timezone.utc))
    response = sign_in_page(status=200, message="You are signed out.")
    response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="Strict")
    return response


def _distribution_chart(buckets: list[dict[str, Any]], *, title: str, test_id: str) -> Any:
    """A report's distribution (``{"bucket", "count"}`` items) as a bar per bucket."""
    return bar_chart([(b["bucket"], b["count"]) for b in buckets], title=title, test_id=test_id)


@blueprint.get("/dashboard")
@access(Role.VIEWER, sign_in_page=True)
def dashboard() -> Any:
    """Headline figures, closed per day, the resolution- and first-response-time
    distributions, and tables per user, team and channel (all read at once from the
    report rollups: metrics.dashboard_reports)."""
    now = datetime.now(timezone.utc)
    query = _report_query(now, max_days=DASHBOARD_MAX_DAYS)
    totals, by_slice, per_day = dashboard_reports(engine().store, query, now=now)
    slices = [{"name": name, "none": none, "report": by_slice[by]}
              for name, by, none in (("user", GroupBy.USER, "(unassigned)"),
                                     ("team", GroupBy.TEAM, "(no team)"),
                                     ("channel", GroupBy.CHANNEL, "(no channel)"))]
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
        notes=queries.notes(engine().store, limit=DASHBOARD_NOTES),
        distribution_chart=distribution_chart, first_response_chart=first_response_chart,
        duration=duration, presets=presets, relative_error=f"{RELATIVE_ERROR:.0%}",
        signed_in=None if principal().integration else f"{principal().name} ({principal().role})",
        since=query.since.strftime("%Y-%m-%d"), until=until_day, generated_at=now)
