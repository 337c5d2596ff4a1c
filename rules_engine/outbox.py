"""The outbox as its users see it: list rows (secrets redacted), send failed ones again,
resume a paused channel. The CLI (``rules-engine outbox``) and the users' API share it."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from rules_engine.domain.errors import EventError, NotFoundError
from rules_engine.domain.model import RETRYABLE_STATUSES, OutboxStatus
from rules_engine.domain.redaction import redact_headers, redact_url
from rules_engine.store import Store

STATUSES = tuple(OutboxStatus)
RETRYABLE = RETRYABLE_STATUSES
CHANNEL_PATTERN = r"^[a-z][a-z0-9_-]{0,39}$"


def _view(row: dict[str, Any]) -> dict[str, Any]:
    """A row as the API shows it: times in ISO 8601, secrets in headers and URL redacted,
    the error as ``{kind, code, message}``."""
    view = {key: value.isoformat() if isinstance(value, datetime) else value
            for key, value in row.items()
            if key not in ("error_kind", "error_code", "error_message")}
    view["headers"] = redact_headers(row["headers"])
    if row["url"] is not None:
        view["url"] = redact_url(row["url"])
    view["error"] = ({"kind": row["error_kind"], "code": row["error_code"],
                      "message": row["error_message"]} if row["error_kind"] else None)
    return view


def _check(status: str | None, *, allowed: tuple[str, ...] = STATUSES) -> None:
    if status is not None and status not in allowed:
        raise EventError(f"unknown status '{status}'", path="status",
                         hint=f"one of: {', '.join(allowed)}")


def list_outbound(store: Store, *, status: str | None = None, channel: str | None = None,
                  kind: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Rows, newest first; optionally of one status, channel and error kind."""
    _check(status)
    if not 1 <= limit <= 1000:
        raise EventError("limit must be between 1 and 1000", path="limit")
    with store.read() as tx:
        return [_view(row) for row in tx.outbound.rows(status=status, channel=channel, kind=kind,
                                                      limit=limit)]


def requeue(store: Store, outbox_id: int) -> None:
    """Send a failed (or suppressed) row again, attempts and age starting over."""
    now = datetime.now(timezone.utc)
    if not store.run(lambda tx: tx.outbound.requeue(now=now, outbox_id=outbox_id)):
        raise NotFoundError(f"no failed or suppressed outbox row {outbox_id}")


def retry(store: Store, *, status: str | None = OutboxStatus.FAILED, channel: str | None = None,
          kind: str | None = None) -> list[int]:
    """Send every failed (or suppressed) row matching the filters again; their ids."""
    _check(status, allowed=RETRYABLE)
    now = datetime.now(timezone.utc)
    return store.run(lambda tx: tx.outbound.requeue(now=now, status=status, channel=channel,
                                                    kind=kind))


def pauses(store: Store) -> list[dict[str, Any]]:
    """The paused channels, with when and why."""
    with store.read() as tx:
        return [{**row, "paused_at": row["paused_at"].isoformat()}
                for row in tx.outbound.pauses()]


def resume(store: Store, channel: str) -> None:
    """Call a paused channel again (its waiting rows go out at once)."""
    if not store.run(lambda tx: tx.outbound.resume(channel)):
        raise NotFoundError(f"channel {channel} is not paused")
