"""Who may call what: every route declares its access, and every request is checked against
that declaration before its view runs (a route that declares nothing is refused to all).

Access is ``PUBLIC`` (health, the API's description, the sign-in form), ``PLATFORM`` (the
view checks the platform's own signature or token), or a role of ``rules_engine.people``.
Credentials, compared in constant time or by digest: ``Authorization: Bearer <token>``
with the integration token (``$RULES_ENGINE_API_TOKEN``: an admin that acts on behalf of
the users it names) or a user's own token; or the dashboard's session cookie.
"""
from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

from flask import Flask, Response, current_app, g, render_template, request

from rules_engine import people
from rules_engine.people import Role

from .auth import API_TOKEN_VARIABLE
from .errors import ApiError
from .services import engine, settings

PUBLIC, PLATFORM = "public", "platform"
SESSION_COOKIE = "rules_engine_session"
INTEGRATION = "integration"
F = TypeVar("F", bound=Callable[..., Any])


def access(level: Role | str, *, sign_in_page: bool = False) -> Callable[[F], F]:
    """Declare who may call a view: ``PUBLIC``, ``PLATFORM`` or the least role it needs.
    With ``sign_in_page``, a request without credentials gets the sign-in page (401)."""
    def declare(view: F) -> F:
        view.access = level  # type: ignore[attr-defined]
        view.sign_in_page = sign_in_page  # type: ignore[attr-defined]
        return view

    return declare


def declared_access(view: Callable[..., Any]) -> Role | str | None:
    """What a view declared with ``access``, or None."""
    return getattr(view, "access", None)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request's credentials say is calling."""

    name: str
    role: Role
    integration: bool = False  # the integration token: acts for the users it names

    def acting_as(self, named: str | None) -> tuple[str, str | None]:
        """(who a command is recorded as, who issued it on their behalf or None): a user
        acts as themselves; an admin or the integration may name another user."""
        if self.integration:
            if named is None:
                raise ApiError(400, "invalid_body", "`user` (the id of the user acting) is "
                               "required with the integration token", path="user")
            return named, INTEGRATION
        if named is None or named == self.name:
            return self.name, None
        if self.role is Role.ADMIN:
            return named, f"admin:{self.name}"
        raise ApiError(403, "impersonation_refused",
                       f"'{self.name}' acts only as themselves, not as '{named}'",
                       path="user", hint="leave `user` out: the token says who you are")


def principal() -> Principal:
    """The caller of the current request (set by the access check)."""
    return g.principal


def guard(app: Flask) -> None:
    """Check every request against its view's declared access, and add the security
    headers every answer carries."""
    app.before_request(_check)
    app.after_request(_security_headers)


def _check() -> Response | None:
    view = current_app.view_functions.get(request.endpoint or "")
    if view is None:
        return None  # no route: Flask answers 404 (or 405)
    level = declared_access(view)
    if level is None:
        raise ApiError(403, "forbidden", "this route declares no access, so nobody may call it")
    if level in (PUBLIC, PLATFORM):
        return None
    try:
        caller = _authenticate()
    except ApiError as refusal:
        if refusal.status == 401 and getattr(view, "sign_in_page", False):
            return sign_in_page(status=401)
        raise
    needed = Role(level)
    if not caller.role.allows(needed):
        raise ApiError(403, "forbidden", f"this needs the {needed} role; "
                                         f"'{caller.name}' is {caller.role}")
    g.principal = caller
    return None


def _authenticate() -> Principal:
    config = settings()
    scheme, _, token = (request.headers.get("Authorization") or "").partition(" ")
    if scheme:
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "missing_token", "send Authorization: Bearer <token>")
        if config.api_token is not None and hmac.compare_digest(
                token.encode("utf-8", "replace"), config.api_token.encode()):
            return Principal(INTEGRATION, Role.ADMIN, integration=True)
        user = people.user_for_token(engine().store, token)
        if user is None:
            raise ApiError(401, "bad_token", "the bearer token is not valid")
        return Principal(user.name, user.role)
    session = request.cookies.get(SESSION_COOKIE)
    if session:
        user = people.session_user(engine().store, session, now=datetime.now(timezone.utc))
        if user is not None:
            return Principal(user.name, user.role)
    if config.dev and config.api_token is None:
        return Principal("dev", Role.ADMIN, integration=True)  # serve --dev, on loopback
    raise ApiError(401, "missing_token", "send Authorization: Bearer <token>",
                   hint=f"a user's token (rules-engine users add NAME --role ...) or the "
                        f"integration token ({API_TOKEN_VARIABLE})")


def sign_in_page(*, status: int, message: str | None = None) -> Response:
    """The dashboard's sign-in form."""
    return Response(render_template("login.html", message=message), status=status)


CSP = ("default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def _security_headers(response: Response) -> Response:
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "no-referrer")
    headers.setdefault("Content-Security-Policy", CSP)
    if request.cookies.get(SESSION_COOKIE) or response.mimetype == "text/html":
        headers.setdefault("Cache-Control", "no-store")
    return response
