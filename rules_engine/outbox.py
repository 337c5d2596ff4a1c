"""The outbox as the users' API sees it: list rows by status (secrets redacted), send a failed
row again."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from .errors import EventError, NotFoundError
from .model import OutboxStatus
from .redaction import redact_headers, redact_url
from .store import Store

STATUSES = tuple(OutboxStatus)


def _view(row: dict[str, Any]) -> dict[str, Any]:
    """A row as the API shows it: times in ISO 8601, secrets in headers and URL redacted."""
    view = {key: value.isoformat() if isinstance(value, datetime) else value
            for key, value in row.items()}
    view["headers"] = redact_headers(row["headers"])
    if row["url"] is not None:
        view["url"] = redact_url(row["url"])
    return view


def list_outbound(store: Store, *, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Outbox rows, newest first; ``status`` one of pending, delivered, failed."""
    if status is not None and status not in STATUSES:
        raise EventError(f"unknown status '{status}'", path="status",
                         hint=f"one of: {', '.join(STATUSES)}")
    if not 1 <= limit <= 1000:
        raise EventError("limit must be between 1 and 1000", path="limit")
    with store.read() as tx:
        return [_view(row) for row in tx.outbound(status=status, limit=limit)]


def requeue(store: Store, outbox_id: int) -> None:
    """Deliver a failed row again, attempts starting over."""
    def work(tx: Any) -> bool:
        return tx.requeue_outbound(outbox_id, datetime.now(timezone.utc))

    if not store.run(work):
        raise NotFoundError(f"no failed outbox row {outbox_id}")
