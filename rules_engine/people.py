"""People who use the users' API and the dashboard: each a user with a role and a token of
their own, so that the token, never a field in a request, says who acts.

Roles, each allowed what the one below it is: ``viewer`` reads reports and the dashboard;
``agent`` also opens, closes and replies to conversations, as themselves, and reads
contacts, conversations and traces; ``admin`` also merges contacts, reloads the rules,
manages the outbox, and may act on behalf of a named user. Tokens are random, shown once,
and stored only as their SHA-256 digest (a token is a 256-bit secret, so a fast digest is
as strong as a slow one, and lets a request find its user by one indexed read). Dashboard
sessions are random values likewise kept as digests, each with an expiry; failed sign-ins
are counted per client address.

For balanced assignment (``assign: {team, strategy}``) a user is on teams, is available or
away, and may have a capacity (``max_open``: open conversations at most).
"""
from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from rules_engine.domain.balancing import Availability
from rules_engine.domain.errors import NotFoundError, RulesEngineError
from rules_engine.store import Store
from rules_engine.store.accounts import AccountsTx

TOKEN_PREFIX = "ret_"  # a rules-engine token, recognisable in a leak report
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,99}")
SESSION_LIFETIME = timedelta(hours=12)
SIGN_IN_WINDOW = timedelta(minutes=15)
SIGN_IN_ATTEMPTS = 10  # failed sign-ins an address may make in a window
T = TypeVar("T")


class Role(StrEnum):
    """What a user may do; each role may do all that the roles before it may."""

    VIEWER = "viewer"
    AGENT = "agent"
    ADMIN = "admin"

    def allows(self, needed: Role) -> bool:
        """Whether this role may do what ``needed`` may."""
        order = list(Role)
        return order.index(self) >= order.index(needed)


class PeopleError(RulesEngineError):
    """A user cannot be added or changed as asked."""


@dataclass(frozen=True, slots=True)
class User:
    """A person (or a system acting under a person's name) with a role."""

    id: int
    name: str
    role: Role
    created_at: datetime
    revoked_at: datetime | None = None
    availability: Availability = Availability.AVAILABLE
    max_open: int | None = None  # open conversations at most (None: no cap of their own)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> User:
        return cls(row["id"], row["name"], Role(row["role"]), row["created_at"], row["revoked_at"],
                   Availability(row["availability"]), row["max_open"])

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "role": str(self.role),
                "created_at": self.created_at.isoformat(),
                "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
                "availability": str(self.availability), "max_open": self.max_open}


@dataclass(frozen=True, slots=True)
class TeamMember:
    """A member of a team, with what balanced assignment reads of them."""

    name: str
    availability: Availability
    max_open: int | None
    open_conversations: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "availability": str(self.availability),
                "max_open": self.max_open, "open_conversations": self.open_conversations}


def digest(secret: str) -> str:
    """What is stored of a token or a session value: its SHA-256, in hex."""
    return hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()


def new_token() -> str:
    """A new random token (256 bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def _in(store: Store, work: Callable[[AccountsTx], T]) -> T:
    return store.run(lambda tx: work(AccountsTx(tx.connection)))


def _read(store: Store, work: Callable[[AccountsTx], T]) -> T:
    with store.read() as tx:
        return work(AccountsTx(tx.connection))


def add_user(store: Store, name: str, role: Role, *, now: datetime) -> tuple[User, str]:
    """A new user and their token (returned once: only its digest is kept). A revoked user's
    name may be added again; an active one's may not."""
    if not NAME.fullmatch(name):
        raise PeopleError(f"'{name}' is not a user name",
                          hint="1 to 100 letters, digits, '.', '_', '@' or '-', starting "
                               "with a letter or a digit")
    token = new_token()

    def work(accounts: AccountsTx) -> User:
        existing = accounts.user_by_name(name)
        if existing is None:
            accounts.add_user(name=name, role=str(role), digest=digest(token), at=now)
        elif existing["revoked_at"] is None:
            raise PeopleError(f"user '{name}' already exists",
                              hint=f"revoke it first (rules-engine users revoke {name})")
        else:
            accounts.renew_user(existing["id"], role=str(role), digest=digest(token), at=now)
        row = accounts.user_by_name(name)
        assert row is not None
        return User.from_row(row)

    return _in(store, work), token


def list_users(store: Store) -> list[User]:
    """Every user, revoked ones too, by name."""
    return [User.from_row(row) for row in _read(store, lambda accounts: accounts.users())]


def revoke_user(store: Store, name: str, *, now: datetime) -> User:
    """Revoke a user's token and end their sessions."""
    def work(accounts: AccountsTx) -> User:
        row = accounts.user_by_name(name)
        if row is None or row["revoked_at"] is not None:
            raise NotFoundError(f"no active user '{name}'", hint="rules-engine users list")
        accounts.revoke_user(row["id"], now)
        return User.from_row({**row, "revoked_at": now})

    return _in(store, work)


def _active(accounts: AccountsTx, name: str) -> dict[str, Any]:
    row = accounts.user_by_name(name)
    if row is None or row["revoked_at"] is not None:
        raise NotFoundError(f"no active user '{name}'", hint="rules-engine users list")
    return row


MAX_OPEN_LIMIT = 10_000


def _presence_values(changes: dict[str, Any]) -> dict[str, Any]:
    """``changes`` (``availability``, ``max_open``: a whole number, or None for no cap)
    checked, as column values."""
    unknown = set(changes) - {"availability", "max_open"}
    if unknown or not changes:
        raise PeopleError(f"unknown field(s): {', '.join(sorted(unknown))}" if unknown
                          else "nothing to change", hint="give availability and/or max_open")
    values = dict(changes)
    if "availability" in values:
        if values["availability"] not in set(Availability):
            raise PeopleError(f"availability must be available or away, not "
                              f"{values['availability']!r}", path="availability",
                              hint="available or away")
        values["availability"] = str(values["availability"])
    cap = values.get("max_open")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int)
                            or not 0 <= cap <= MAX_OPEN_LIMIT):
        raise PeopleError(f"max_open must be a whole number from 0 to {MAX_OPEN_LIMIT}, or "
                          "null for no cap", path="max_open", hint="e.g. 5")
    return values


def set_presence(store: Store, name: str, changes: dict[str, Any]) -> User:
    """Set a user's availability (``available`` or ``away``) and/or capacity (``max_open``,
    None for no cap of their own); the user as now stored."""
    values = _presence_values(changes)

    def work(accounts: AccountsTx) -> User:
        row = _active(accounts, name)
        accounts.set_presence(row["id"], values)
        return User.from_row({**row, **values})

    return _in(store, work)


def join_team(store: Store, team: str, names: list[str]) -> list[str]:
    """Put users on a team; the names that were not on it yet."""
    _check_team_name(team)

    def work(accounts: AccountsTx) -> list[str]:
        return [name for name in names if accounts.join_team(team, _active(accounts, name)["id"])]

    return _in(store, work)


def leave_team(store: Store, team: str, names: list[str]) -> list[str]:
    """Take users off a team; the names that were on it."""
    def work(accounts: AccountsTx) -> list[str]:
        return [name for name in names if accounts.leave_team(team, _active(accounts, name)["id"])]

    return _in(store, work)


def teams(store: Store) -> dict[str, list[TeamMember]]:
    """Every team with members, each member with their availability, capacity and open
    conversations (revoked users are left out: they get no conversations)."""
    def work(accounts: AccountsTx) -> dict[str, list[TeamMember]]:
        users = {row["name"]: User.from_row(row) for row in accounts.users()}
        counts = accounts.open_counts()
        found: dict[str, list[TeamMember]] = {}
        for team, name in accounts.team_members():
            user = users[name]
            if user.revoked_at is None:
                found.setdefault(team, []).append(TeamMember(
                    name, user.availability, user.max_open, counts.get(name, 0)))
        return found

    return _read(store, work)


def _check_team_name(team: str) -> None:
    if not NAME.fullmatch(team):
        raise PeopleError(f"'{team}' is not a team name",
                          hint="1 to 100 letters, digits, '.', '_', '@' or '-', starting "
                               "with a letter or a digit")


def user_for_token(store: Store, token: str) -> User | None:
    """The active user this token belongs to, or None."""
    row = _read(store, lambda accounts: accounts.user_by_token(digest(token)))
    return User.from_row(row) if row and row["revoked_at"] is None else None


def start_session(store: Store, user: User, *, now: datetime) -> str:
    """A new dashboard session for ``user``; its random value (only the digest is kept)."""
    value = secrets.token_urlsafe(32)
    _in(store, lambda accounts: accounts.add_session(
        digest=digest(value), user_id=user.id, at=now, expires_at=now + SESSION_LIFETIME))
    return value


def session_user(store: Store, value: str, *, now: datetime) -> User | None:
    """The user of an unexpired session, or None."""
    row = _read(store, lambda accounts: accounts.session_user(digest(value), now))
    return User.from_row(row) if row else None


def end_session(store: Store, value: str, *, now: datetime) -> None:
    """Sign a session out (and drop every expired one)."""
    def work(accounts: AccountsTx) -> None:
        accounts.end_session(digest(value))
        accounts.end_expired_sessions(now)

    _in(store, work)


def sign_in_refused_until(store: Store, address: str, *, now: datetime) -> datetime | None:
    """When ``address`` may try to sign in again, if it has failed too often lately."""
    counted = _read(store, lambda accounts: accounts.sign_in_failures(address))
    if counted is None:
        return None
    failures, started = counted
    until = started + SIGN_IN_WINDOW
    return until if failures >= SIGN_IN_ATTEMPTS and until > now else None


def record_sign_in(store: Store, address: str, *, succeeded: bool, now: datetime) -> None:
    """Count a failed sign-in from ``address`` (a window starts at its first failure); a
    success clears the count."""
    def work(accounts: AccountsTx) -> None:
        if succeeded:
            accounts.clear_sign_in_failures(address)
            return
        counted = accounts.sign_in_failures(address)
        if counted is None or counted[1] + SIGN_IN_WINDOW <= now:
            accounts.set_sign_in_failures(address, 1, now)
        else:
            accounts.set_sign_in_failures(address, counted[0] + 1, counted[1])

    _in(store, work)
