"""Teams for balanced assignment, inside a unit of work: a team's roster read with its
rotation row locked (``FOR UPDATE`` on PostgreSQL; SQLite's write lock already serializes
writers), so that the choice and the assignment it leads to commit before the next worker
chooses for that team."""
from __future__ import annotations

from sqlalchemy import func, select, update

from rules_engine.domain.balancing import Availability, Member, Roster
from rules_engine.store import tables as t
from rules_engine.store.statements import Statements


class TeamsTx(Statements):
    """Implements ``ports.TeamsPort``."""

    def lock_roster(self, team: str) -> Roster:
        r, m, u, c = t.team_rotations, t.team_members, t.users, t.conversations
        last = self.connection.execute(
            select(r.c.last_user).where(r.c.team == team).with_for_update()).first()
        if last is None:  # nobody ever joined (joining writes the row)
            return Roster(team, (), None)
        people = self.connection.execute(
            select(u.c.name, u.c.availability, u.c.max_open).join(m, m.c.user_id == u.c.id)
            .where(m.c.team == team, u.c.revoked_at.is_(None)).order_by(u.c.name)).all()
        names = [person.name for person in people]
        counts: dict[str, int] = dict(self.connection.execute(
            select(c.c.assignee, func.count()).where(c.c.closed_at.is_(None),
                                                     c.c.assignee.in_(names))
            .group_by(c.c.assignee)).all()) if names else {}
        members = tuple(Member(person.name, person.availability == Availability.AVAILABLE,
                               person.max_open, int(counts.get(person.name, 0)))
                        for person in people)
        return Roster(team, members, last.last_user)

    def gave(self, team: str, user: str) -> None:
        r = t.team_rotations
        self.connection.execute(update(r).where(r.c.team == team).values(last_user=user))
