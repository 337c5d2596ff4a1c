"""A realistic, seeded conversation history, so a new user sees a living dashboard at once.

Several agents in teams, four channels, every open and close source, months of
conversations with resolution times that differ by team; a few conversations are open now.
Each contact's conversations follow one another in time, so the one-open invariant holds.
Most conversations get a first agent reply within minutes, some after hours, and some none
(a bot or the contact closed it first, or it is still waiting).
"""
from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from rules_engine.domain.model import CloseSource, OpenSource
from rules_engine.store import Store
from rules_engine.store import tables as t

TEAMS = {"support": ["susan", "maria", "ahmad"], "billing": ["lee", "ravi"],
         "onboarding": ["nina", "tom", "ola"]}
TEAM_MEDIAN_MINUTES = {"support": 35.0, "billing": 90.0, "onboarding": 15.0}
# First agent reply: a median of a few minutes per team; a slow tail of hours (nights,
# weekends, queues); and bot-handled conversations that no agent ever answers.
TEAM_FIRST_RESPONSE_MEDIAN_MINUTES = {"support": 4.0, "billing": 9.0, "onboarding": 2.0}
SLOW_FIRST_RESPONSE = 0.08  # share answered after 1-10 hours
NEVER_ANSWERED: dict[CloseSource | None, float] = {  # by close source (None: open now)
    CloseSource.AUTOMATION: 0.15, CloseSource.DIALOGFLOW: 0.35, CloseSource.CONTACT_MERGE: 0.1,
    CloseSource.USER: 0.02, None: 0.03}
CHANNELS = (("facebook", 40), ("viber", 20), ("whatsapp", 15), ("webchat", 25))
OPEN_SOURCES = ((OpenSource.INCOMING_MESSAGE, 70), (OpenSource.WELCOME_EVENT, 15),
                (OpenSource.USER, 8), (OpenSource.AUTOMATION, 7))
CLOSE_SOURCES = ((CloseSource.USER, 40), (CloseSource.AUTOMATION, 35),
                 (CloseSource.DIALOGFLOW, 20), (CloseSource.CONTACT_MERGE, 5))


@dataclass(frozen=True)
class DemoSummary:
    """What was generated."""

    contacts: int
    conversations: int
    open_now: int
    since: datetime
    until: datetime


def _pick(rng: random.Random, weighted: tuple[tuple[Any, int], ...]) -> Any:
    return rng.choices([value for value, _ in weighted], weights=[w for _, w in weighted])[0]


def _first_response(replies: random.Random, team: str, opened_at: datetime,
                    closed_at: datetime | None, close_source: CloseSource | None,
                    now: datetime) -> dict[str, Any]:
    """When an agent first replied (``None`` for never), always before the close (or now).

    An agent who closed the conversation answered before closing it; a bot's close or a merge
    may come before any reply, and an open conversation may still be waiting for one."""
    never = replies.random() < NEVER_ANSWERED[close_source]
    if replies.random() < SLOW_FIRST_RESPONSE:
        seconds = int(replies.uniform(3600, 36000))
    else:
        seconds = int(max(5.0, 60 * replies.lognormvariate(
            math.log(TEAM_FIRST_RESPONSE_MEDIAN_MINUTES[team]), 1.1)))
    life = int(((closed_at or now) - opened_at).total_seconds())
    if seconds >= life and close_source is CloseSource.USER:
        seconds = int(life * replies.uniform(0.3, 0.95))  # the agent answered, then closed
    if never or seconds >= life:
        return {"first_response_at": None, "first_response_seconds": None}
    return {"first_response_at": opened_at + timedelta(seconds=seconds),
            "first_response_seconds": seconds}


def _conversations(rng: random.Random, replies: random.Random, contact_id: int, count: int,
                   since: datetime, now: datetime) -> Iterator[dict[str, Any]]:
    """One contact's conversations: each closes before the next opens; the last may be open."""
    span = (now - since).total_seconds()
    opens = [since + timedelta(seconds=s) for s in sorted(rng.uniform(0, span) for _ in range(count))]
    channel = _pick(rng, CHANNELS)
    for opened_at, next_open in zip(opens, [*opens[1:], None], strict=True):
        team = rng.choice(list(TEAMS))
        user = rng.choice(TEAMS[team])
        minutes = max(0.5, rng.lognormvariate(math.log(TEAM_MEDIAN_MINUTES[team]), 1.0))
        ends_at = opened_at + timedelta(minutes=minutes)
        closed_at: datetime | None = ends_at
        if next_open is not None:
            closed_at = min(ends_at, next_open - timedelta(milliseconds=1))
        elif ends_at > now or (now - opened_at < timedelta(hours=8) and rng.random() < 0.6):
            closed_at = None
        source = _pick(rng, OPEN_SOURCES)
        close_source = _pick(rng, CLOSE_SOURCES) if closed_at else None
        yield {
            "contact_id": contact_id, "channel": channel, "opened_at": opened_at,
            "open_source": str(source), "opened_by": user if source is OpenSource.USER else None,
            "closed_at": closed_at, "close_source": str(close_source) if close_source else None,
            "resolution_seconds": int((closed_at - opened_at).total_seconds()) if closed_at else None,
            "closed_by": user if close_source is CloseSource.USER else None,
            "assignee": user, "team": team, "bot_active": True,
            **_first_response(replies, team, opened_at, closed_at, close_source, now),
        }


def generate_demo_data(store: Store, *, conversations: int = 6000, days: int = 120,
                       seed: int = 7, now: datetime | None = None,
                       batch_size: int = 10_000,
                       progress: Callable[[int], None] = lambda n: None) -> DemoSummary:
    """Insert about ``conversations`` conversations over the last ``days`` days (seeded),
    and rebuild the report rollups from every conversation; ``progress(n)`` is told as
    each batch of ``n`` is written."""
    rng = random.Random(seed)
    replies = random.Random(f"{seed}:first-response")  # its own stream: the rest is unchanged
    now = now or datetime.now(timezone.utc)
    since = now - timedelta(days=days)
    contacts = max(1, conversations // 4)
    inserted = open_now = 0
    with store.transaction() as tx:
        first_key = tx.connection.execute(
            t.contacts.insert().values(name="Demo contact 1", created_at=since)
        ).inserted_primary_key
        assert first_key is not None  # a single-row INSERT
        first_id = first_key[0]
        tx.connection.execute(t.contacts.insert(), [
            {"id": first_id + n, "name": f"Demo contact {n + 1}", "created_at": since}
            for n in range(1, contacts)])
        batch: list[dict[str, Any]] = []
        for n in range(contacts):
            count = max(1, round(rng.expovariate(1 / 4)))
            for row in _conversations(rng, replies, first_id + n, count, since, now):
                batch.append(row)
                open_now += row["closed_at"] is None
            if len(batch) >= batch_size:
                tx.connection.execute(t.conversations.insert(), batch)
                inserted += len(batch)
                progress(len(batch))
                batch = []
        if batch:
            tx.connection.execute(t.conversations.insert(), batch)
            inserted += len(batch)
            progress(len(batch))
        tx.rebuild_rollups()  # the rows went in directly, not through the store's writes
    return DemoSummary(contacts, inserted, open_now, since, now)
