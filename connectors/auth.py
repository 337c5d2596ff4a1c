"""Webhook and API authentication: HMAC signatures and tokens, compared in constant time.

Flask-free: channel adapters and blueprints alike call these with the request's parts.
An endpoint whose secret is unset is disabled (503 naming the variable to set), except in
development mode.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import NoReturn

from .errors import ApiError

API_TOKEN_VARIABLE = "RULES_ENGINE_API_TOKEN"


def hmac_sha256_hex(secret: str, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``body`` keyed with ``secret``."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.strip().encode("utf-8", "replace"), expected.encode("utf-8"))


def not_configured(env: str) -> NoReturn:
    """503 for an endpoint whose secret (environment variable ``env``) is unset."""
    raise ApiError(503, "not_configured", f"this endpoint is disabled: set {env} to enable it")


def require_configured(env: str, *, dev: bool) -> None:
    """503 for an endpoint whose secret (environment variable ``env``) is unset, unless dev."""
    if not dev:
        not_configured(env)


def require_signature(secret: str | None, body: bytes, given: str | None, *, prefix: str = "",
                      header: str, env: str, dev: bool) -> None:
    """Check ``given`` (``prefix`` + hex HMAC of the raw body); 401 when it does not match."""
    if secret is None:
        return require_configured(env, dev=dev)
    if not given:
        raise ApiError(401, "missing_signature", f"the {header} header is required")
    if not _same(given, prefix + hmac_sha256_hex(secret, body)):
        raise ApiError(401, "bad_signature", f"the {header} signature does not match the body")


def require_header_token(secret: str | None, given: str | None, *, header: str, env: str,
                         dev: bool) -> None:
    """Check a header that must carry the shared secret itself (e.g. Telegram's)."""
    if secret is None:
        return require_configured(env, dev=dev)
    if not given:
        raise ApiError(401, "missing_token", f"the {header} header is required")
    if not _same(given, secret):
        raise ApiError(401, "bad_token", f"the {header} header does not match")


def require_bearer(token: str | None, authorization: str | None, *, dev: bool,
                   env: str = API_TOKEN_VARIABLE) -> None:
    """Check ``Authorization: Bearer <token>``; 401 when absent or wrong."""
    if token is None:
        return require_configured(env, dev=dev)
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise ApiError(401, "missing_token", "send Authorization: Bearer <token>")
    if not _same(given, token):
        raise ApiError(401, "bad_token", "the bearer token is not valid")


def basic_credentials_match(authorization: str | None, username: str, password: str) -> bool:
    """Whether ``Authorization: Basic ...`` carries these credentials (constant time)."""
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return False
    given_user, _, given_password = decoded.partition(":")
    user_ok = hmac.compare_digest(given_user.encode(), username.encode())
    password_ok = hmac.compare_digest(given_password.encode(), password.encode())
    return user_ok and password_ok
