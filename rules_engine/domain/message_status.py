"""What became of a message we sent: the platforms' status callbacks (and the outbox
worker's own failures) as ``message.delivered``, ``message.read`` and ``message.failed``.

A callback names the platform's message id (``params.platform_message_id``), or, on
Messenger, only a time (``params.watermark``: every message sent to that person before
it). ``aimed`` finds the outbox rows it reports on and aims the event at the contact the
rows were sent to, naming them in its params (``outbox_id``, ``outbox_ids``, ``rule_id``,
``action``), so that rules read which message and which rule; ``move`` moves the rows on,
never back. A callback about a message that is not ours changes nothing.
"""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rules_engine.domain.lifecycle import Lifecycle, Outcome
from rules_engine.domain.model import ContactRef, Event, EventType, OutboxStatus

if TYPE_CHECKING:
    from rules_engine.domain.ports import DomainStore

STATUS_OF = {EventType.MESSAGE_DELIVERED: OutboxStatus.DELIVERED,
             EventType.MESSAGE_READ: OutboxStatus.READ,
             EventType.MESSAGE_FAILED: OutboxStatus.FAILED}


def aimed(tx: DomainStore, event: Event) -> Event | None:
    """``event`` aimed at the outbox rows it reports on; None when none is ours."""
    params = event.params
    if "outbox_id" in params:  # the worker's own report: already aimed
        return event
    rows: list[dict[str, Any]] = []
    if event.channel and isinstance(params.get("platform_message_id"), str):
        row = tx.outbound.by_platform_id(event.channel, params["platform_message_id"])
        rows = [row] if row else []
    elif event.channel and event.contact.external_id and isinstance(params.get("watermark"), str):
        try:
            watermark = datetime.fromisoformat(params["watermark"])
        except ValueError:
            return None
        rows = tx.outbound.sent_before(event.channel, event.contact.external_id, watermark)
    if not rows:
        return None
    latest = rows[-1]
    contact = (ContactRef(id=latest["contact_id"]) if latest["contact_id"] is not None
               else event.contact)
    return replace(event, contact=contact, params={
        **params, "outbox_id": latest["id"], "outbox_ids": [row["id"] for row in rows],
        "rule_id": latest["rule_id"], "action": latest["action"]})


def move(event: Event, contact_id: int, lifecycle: Lifecycle) -> list[Outcome]:
    """Move the rows an aimed status event names on to its status."""
    status = STATUS_OF[EventType(event.type)]  # only the status types' handler
    error = event.params.get("error") if status is OutboxStatus.FAILED else None
    outcomes = []
    for outbox_id in event.params.get("outbox_ids", []):
        moved = lifecycle.tx.outbound.move(outbox_id, status, event.timestamp,
                                           error if isinstance(error, dict) else None)
        outcomes.append(Outcome(f"message_{status}", moved, f"outbox #{outbox_id} {status}"
                                if moved else f"outbox #{outbox_id} had already moved on"))
    if not outcomes and status is OutboxStatus.FAILED:  # the worker's: the row is failed
        outcomes.append(Outcome("message_failed", False,
                                f"outbox #{event.params.get('outbox_id')} failed"))
    return outcomes
