"""The people's rows (users and their teams, dashboard sessions, failed sign-ins), inside a
unit of work."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from rules_engine.store import tables as t


class AccountsTx:
    """Reads and writes of ``rules_engine.people``, on the unit of work's connection."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def user_by_name(self, name: str) -> dict[str, Any] | None:
        row = self.connection.execute(select(t.users).where(t.users.c.name == name)).mappings().first()
        return dict(row) if row else None

    def user_by_token(self, digest: str) -> dict[str, Any] | None:
        """The user, revoked or not, whose token has this digest."""
        row = self.connection.execute(
            select(t.users).where(t.users.c.token_digest == digest)).mappings().first()
        return dict(row) if row else None

    def users(self) -> list[dict[str, Any]]:
        rows = self.connection.execute(select(t.users).order_by(t.users.c.name)).mappings()
        return [dict(row) for row in rows]

    def add_user(self, *, name: str, role: str, digest: str, at: datetime) -> None:
        self.connection.execute(t.users.insert().values(
            name=name, role=role, token_digest=digest, created_at=at, revoked_at=None))

    def renew_user(self, user_id: int, *, role: str, digest: str, at: datetime) -> None:
        """A revoked user, added again: a new role and token."""
        self.connection.execute(update(t.users).where(t.users.c.id == user_id).values(
            role=role, token_digest=digest, created_at=at, revoked_at=None))

    def revoke_user(self, user_id: int, at: datetime) -> None:
        self.connection.execute(
            update(t.users).where(t.users.c.id == user_id).values(revoked_at=at))
        self.connection.execute(delete(t.sessions).where(t.sessions.c.user_id == user_id))

    def set_presence(self, user_id: int, values: dict[str, Any]) -> None:
        """Set a user's ``availability`` and/or ``max_open``."""
        self.connection.execute(update(t.users).where(t.users.c.id == user_id).values(values))

    def join_team(self, team: str, user_id: int) -> bool:
        """Put a user on a team (and give the team its rotation row); False if already on it."""
        insert = postgresql.insert if self.connection.dialect.name == "postgresql" else sqlite.insert
        self.connection.execute(insert(t.team_rotations).values(team=team, last_user=None)
                                .on_conflict_do_nothing(index_elements=["team"]))
        return self.connection.execute(  # RETURNING: rowcount is not reliable here
            insert(t.team_members).values(team=team, user_id=user_id)
            .on_conflict_do_nothing(index_elements=["team", "user_id"])
            .returning(t.team_members.c.team)).first() is not None

    def leave_team(self, team: str, user_id: int) -> bool:
        m = t.team_members
        return bool(self.connection.execute(
            delete(m).where(m.c.team == team, m.c.user_id == user_id)).rowcount)

    def team_members(self) -> list[tuple[str, str]]:
        """(team, user name) for every membership, by team then name."""
        m, u = t.team_members, t.users
        return [(row.team, row.name) for row in self.connection.execute(
            select(m.c.team, u.c.name).join(u, u.c.id == m.c.user_id).order_by(m.c.team, u.c.name))]

    def open_counts(self) -> dict[str, int]:
        """Open conversations per assignee."""
        c = t.conversations
        return {name: int(count) for name, count in self.connection.execute(
            select(c.c.assignee, func.count()).where(c.c.closed_at.is_(None),
                                                     c.c.assignee.is_not(None))
            .group_by(c.c.assignee))}

    def add_session(self, *, digest: str, user_id: int, at: datetime,
                    expires_at: datetime) -> None:
        self.connection.execute(t.sessions.insert().values(
            digest=digest, user_id=user_id, created_at=at, expires_at=expires_at))

    def session_user(self, digest: str, now: datetime) -> dict[str, Any] | None:
        """The user of an unexpired session with this digest (None if revoked meanwhile)."""
        s, u = t.sessions, t.users
        row = self.connection.execute(
            select(u).join(s, s.c.user_id == u.c.id)
            .where(s.c.digest == digest, s.c.expires_at > now, u.c.revoked_at.is_(None))
        ).mappings().first()
        return dict(row) if row else None

    def end_session(self, digest: str) -> None:
        self.connection.execute(delete(t.sessions).where(t.sessions.c.digest == digest))

    def end_expired_sessions(self, now: datetime) -> int:
        return int(self.connection.execute(
            delete(t.sessions).where(t.sessions.c.expires_at <= now)).rowcount)

    def sign_in_failures(self, address: str) -> tuple[int, datetime] | None:
        """(failures, when their window started) for a client address."""
        f = t.sign_in_failures
        row = self.connection.execute(select(f.c.failures, f.c.window_started_at)
                                      .where(f.c.address == address)).first()
        return (int(row[0]), row[1]) if row else None

    def set_sign_in_failures(self, address: str, failures: int, window_started_at: datetime) -> None:
        f = t.sign_in_failures
        insert = postgresql.insert if self.connection.dialect.name == "postgresql" else sqlite.insert
        values = {"failures": failures, "window_started_at": window_started_at}
        self.connection.execute(insert(f).values(address=address, **values)
                                .on_conflict_do_update(index_elements=["address"], set_=values))

    def clear_sign_in_failures(self, address: str) -> None:
        f = t.sign_in_failures
        self.connection.execute(delete(f).where(f.c.address == address))
