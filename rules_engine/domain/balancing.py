"""Balanced assignment: which member of a team takes a conversation, and why nobody can.

The store hands over a team's roster with its rotation locked (so that two workers never
both take the same last free slot); ``choose`` is the pure choice over it.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Strategy(StrEnum):
    """How ``assign: {team, strategy}`` picks among the team's free members."""

    ROUND_ROBIN = "round_robin"  # the next free member after the last one the team gave work
    LEAST_OPEN = "least_open"  # the free member holding the fewest open conversations


class Availability(StrEnum):
    """Whether a user takes new conversations."""

    AVAILABLE = "available"
    AWAY = "away"


@dataclass(frozen=True, slots=True)
class Member:
    """A team member as the choice sees them."""

    name: str
    available: bool
    max_open: int | None  # the user's own capacity (None: no cap of their own)
    open_count: int  # open conversations assigned to them, on any team


@dataclass(frozen=True, slots=True)
class Roster:
    """A team's members (by name) and who the team last gave a conversation to."""

    team: str
    members: tuple[Member, ...]
    last: str | None


@dataclass(frozen=True, slots=True)
class Choice:
    """The member chosen, or None and why nobody could be."""

    member: str | None
    reason: str


def _capacity(member: Member, max_open: int | None) -> int | None:
    """The lower of the user's capacity and the rule's ``max_open``."""
    caps = [cap for cap in (member.max_open, max_open) if cap is not None]
    return min(caps) if caps else None


def _why_not(member: Member, available_only: bool, max_open: int | None) -> str | None:
    """Why ``member`` cannot take one more conversation (None: they can)."""
    if available_only and not member.available:
        return f"{member.name} is away"
    cap = _capacity(member, max_open)
    if cap is not None and member.open_count >= cap:
        return f"{member.name} holds {member.open_count} open (max {cap})"
    return None


def choose(roster: Roster, strategy: Strategy, *, available_only: bool,
           max_open: int | None) -> Choice:
    """The member who takes the next conversation: among those free (available when
    ``available_only``, under their capacity and ``max_open``), the next after the last one
    in name order (round robin), or the one with the fewest open, ties taken in that same
    order (least open)."""
    if not roster.members:
        return Choice(None, f"team {roster.team} has no members")
    names = [member.name for member in roster.members]
    start = names.index(roster.last) + 1 if roster.last in names else 0
    rotation = roster.members[start:] + roster.members[:start]
    refusals = [(member, _why_not(member, available_only, max_open)) for member in rotation]
    free = [member for member, why in refusals if why is None]
    if not free:
        reasons = "; ".join(why for _, why in sorted(refusals, key=lambda r: r[0].name) if why)
        return Choice(None, f"nobody on team {roster.team} is free ({reasons})")
    if strategy is Strategy.LEAST_OPEN:
        chosen = min(free, key=lambda member: member.open_count)
        return Choice(chosen.name, f"{chosen.name} holds the fewest open ({chosen.open_count})")
    return Choice(free[0].name, f"{free[0].name} is next in the rotation")
