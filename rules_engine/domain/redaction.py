"""Which parts of an outbound call are secrets, and the call as people may see it (API, traces).

A header or query parameter is a secret when its name is a credential header
(``Authorization``, ``Proxy-Authorization``, ``Cookie``) or has a word such as ``token``,
``key``, ``secret`` or ``password`` in it (``X-Api-Key``, ``access_token``); a URL's
user information is always one. Secrets are kept for delivery and replaced by
``[redacted]`` wherever a call is shown.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import unquote_plus, urlsplit, urlunsplit

REDACTED = "[redacted]"
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
_SECRET_WORDS = frozenset({
    "apikey", "auth", "bearer", "cookie", "credential", "credentials", "jwt", "key", "pass",
    "passwd", "password", "pwd", "secret", "session", "sid", "sig", "signature", "token"})
_WORD = re.compile(r"[a-z0-9]+")


def is_secret_name(name: str) -> bool:
    """Whether a header or query parameter of this name holds a credential."""
    lowered = name.lower()
    return lowered in CREDENTIAL_HEADERS or not _SECRET_WORDS.isdisjoint(_WORD.findall(lowered))


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers, each secret value replaced."""
    return {name: REDACTED if is_secret_name(name) else value for name, value in headers.items()}


def redact_url(url: str) -> str:
    """The URL with its user information and secret query values replaced, the rest as it is."""
    try:
        parts = urlsplit(url)
    except ValueError:  # not even parseable (a row queued by an older release): show nothing
        return REDACTED
    _, at, host = parts.netloc.rpartition("@")
    query = "&".join(_redact_pair(pair) for pair in parts.query.split("&"))
    return urlunsplit(parts._replace(netloc=f"{REDACTED}@{host}" if at else host, query=query))


def _redact_pair(pair: str) -> str:
    name, equals, _ = pair.partition("=")
    return f"{name}={REDACTED}" if equals and is_secret_name(unquote_plus(name)) else pair
