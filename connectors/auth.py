"""Webhook and API authentication: HMAC signatures and tokens, compared in constant time."""
from __future__ import annotations

import base64
import hashlib
import hmac

from .http import ApiError


def hmac_sha256_hex(secret: str, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``body`` keyed with ``secret``."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def require_signature(secret: str | None, body: bytes, given: str | None, *, prefix: str = "",
                      header: str, dev: bool) -> None:
    """Check ``given`` (``prefix`` + hex HMAC of the raw body); 401 when it does not match.

    With no secret configured the endpoint is open only in development mode (503 otherwise).
    """
    if secret is None:
        _unconfigured(dev, header)
        return
    if not given:
        raise ApiError(401, "missing_signature", f"the {header} header is required")
    expected = prefix + hmac_sha256_hex(secret, body)
    if not hmac.compare_digest(expected.encode(), given.strip().encode()):
        raise ApiError(401, "bad_signature", f"the {header} signature does not match the body")


def require_bearer(token: str | None, authorization: str | None, *, dev: bool,
                   what: str = "Authorization") -> None:
    """Check ``Authorization: Bearer <token>``; 401 when absent or wrong."""
    if token is None:
        _unconfigured(dev, what)
        return
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise ApiError(401, "missing_token", "send Authorization: Bearer <token>")
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise ApiError(401, "bad_token", "the bearer token is not valid")


def basic_credentials_match(authorization: str | None, username: str, password: str) -> bool:
    """Whether ``Authorization: Basic ...`` carries these credentials (constant time)."""
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return False
    given_user, _, given_password = decoded.partition(":")
    user_ok = hmac.compare_digest(given_user.encode(), username.encode())
    password_ok = hmac.compare_digest(given_password.encode(), password.encode())
    return user_ok and password_ok


def _unconfigured(dev: bool, what: str) -> None:
    if not dev:
        raise ApiError(503, "not_configured",
                       f"this endpoint's secret is not configured ({what}); it is disabled")
