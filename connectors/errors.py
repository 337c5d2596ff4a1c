"""The error every edge raises for a request it refuses; rendered as JSON by the app."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class ApiError(Exception):
    """An error the client can act on; rendered as ``{"error": {"code", "message"}}``
    (with ``path`` and ``hint`` when known, and ``problems``, every problem of the body,
    each a ``{"path", "message", "hint"}``, when the body was checked whole)."""

    def __init__(self, status: int, code: str, message: str, *, path: str | None = None,
                 hint: str | None = None, problems: Sequence[Mapping[str, Any]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.path = path
        self.hint = hint
        self.problems = list(problems)

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.path:
            error["path"] = self.path
        if self.hint:
            error["hint"] = self.hint
        if self.problems:
            error["problems"] = self.problems
        return {"error": error}
