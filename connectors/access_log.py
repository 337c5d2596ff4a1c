"""Gunicorn's access log without secrets: query values that carry one are written as ``***``.

Platforms put their handshake secrets in the query string (Meta's ``hub.verify_token``),
and a log line is kept far longer, and read by more people, than the secret is meant to be.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode

from gunicorn.glogging import Logger

SECRET_PARAMETERS = frozenset({"hub.verify_token", "token", "access_token", "secret",
                               "api_key", "key", "password", "signature", "sig"})


def redact_query(query: str) -> str:
    """``query`` with the value of every secret-carrying parameter replaced by ``***``."""
    if not query:
        return query
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(name.lower() in SECRET_PARAMETERS for name, _ in pairs):
        return query
    return urlencode([(name, "***" if name.lower() in SECRET_PARAMETERS else value)
                      for name, value in pairs], safe="*")


class RedactingLogger(Logger):
    """Gunicorn's logger whose request line and query atoms have secrets redacted."""

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> dict[str, Any]:
        atoms: dict[str, Any] = super().atoms(resp, req, environ, request_time)
        query = environ.get("QUERY_STRING") or ""
        redacted = redact_query(query)
        if redacted != query:
            atoms["q"] = redacted
            path = str(environ.get("RAW_URI", "")).split("?", 1)[0]
            atoms["r"] = (f"{environ.get('REQUEST_METHOD')} {path}?{redacted} "
                          f"{environ.get('SERVER_PROTOCOL')}")
            for key in [key for key in atoms if key.endswith("}e")]:
                atoms.pop(key)  # environ atoms would carry the raw query too
        return atoms
