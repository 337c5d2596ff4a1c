"""The repository: every read and write the core makes, inside one unit of work."""
from __future__ import annotations

import contextlib
import json
from collections.abc import Collection, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Integer,
    Text,
    bindparam,
    case,
    cast,
    delete,
    func,
    literal,
    null,
    or_,
    select,
    union_all,
    update,
)

from rules_engine.domain.model import CloseSource, Contact, Conversation, OpenSource
from rules_engine.domain.timers import Timer
from rules_engine.store import tables as t
from rules_engine.store.outbound import OutboundTx
from rules_engine.store.prepared import execute_on_driver
from rules_engine.store.rollups import FIRST_RESPONSE, RESOLUTION, Rollups
from rules_engine.store.teams import TeamsTx

_CATALOGS: dict[tuple[str, str], dict[str, Any]] = {}  # (database, version) -> its catalog


class ConversationRace(Exception):
    """A concurrent transaction changed the contact's open conversation under this one; the
    unit of work runs again (``Store.run``)."""


def _contact(row: Mapping[Any, Any]) -> Contact:
    return Contact(
        id=row["id"], name=row["name"], created_at=row["created_at"], merged_into=row["merged_into"]
    )


def _conversation(row: Mapping[Any, Any]) -> Conversation:
    return Conversation(
        id=row["id"],
        contact_id=row["contact_id"],
        channel=row["channel"],
        opened_at=row["opened_at"],
        open_source=OpenSource(row["open_source"]),
        opened_by=row["opened_by"],
        closed_at=row["closed_at"],
        close_source=CloseSource(row["close_source"]) if row["close_source"] else None,
        closed_by=row["closed_by"],
        closing_note=row["closing_note"],
        assignee=row["assignee"],
        team=row["team"],
        bot_active=bool(row["bot_active"]),
        first_response_at=row["first_response_at"],
        last_reply_at=row["last_reply_at"],
    )


class _Refused(Exception):
    """A rule run refused in one of its scopes (undoes the claims made before it)."""

    def __init__(self, scope: str) -> None:
        super().__init__(scope)
        self.scope = scope


class StoreTx(Rollups):
    """Reads and writes within one transaction; the ``Store`` commits or rolls it back (and
    writes its report rollups just before: ``Rollups.flush_rollups``)."""

    def __init__(self, connection: Connection, dialect: str) -> None:
        super().__init__(connection, dialect)
        self._savepoints = 0
        self.outbound = OutboundTx(connection, dialect)
        self.teams = TeamsTx(connection, dialect)

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        """A part of the transaction that an error undoes alone (``SAVEPOINT``), issued on
        the driver's cursor: SQLAlchemy's nested transactions cost ten times as much. Named
        by its depth (a released name is free again), so that a batch sends the same few
        statements, which the driver's statement cache keeps prepared."""
        self._savepoints += 1
        name = f"part_{self._savepoints}"
        execute_on_driver(self.connection, f"SAVEPOINT {name}")
        counted = self.rollups.mark()
        try:
            yield
        except BaseException:
            execute_on_driver(self.connection, f"ROLLBACK TO SAVEPOINT {name}")
            self.rollups.undo(counted)
            raise
        finally:
            self._savepoints -= 1
            execute_on_driver(self.connection, f"RELEASE SAVEPOINT {name}")

    # -- processed events and traces --------------------------------------------

    def record_event(self, event_id: str, type_: str, channel: str | None,
                     received_at: datetime, *, contact_id: int | None = None) -> bool:
        """Record an event as processed; False when it was already recorded (a repeat)."""
        return self._insert_or_nothing(
            t.processed_events,
            {"event_id": event_id, "type": type_, "channel": channel, "received_at": received_at,
             "contact_id": contact_id},
            on=("event_id",),
        )

    def save_trace(self, event_id: str, stored: dict[str, Any], recorded_at: datetime) -> None:
        """Keep an event's trace, in the form its writer chose (see trace_format)."""
        self._insert_row(t.event_traces, {"event_id": event_id, "trace": stored,
                                          "recorded_at": recorded_at})

    def prune_traces(self, before: datetime) -> int:
        """Delete the traces recorded before ``before`` (the event ledger stays); how many."""
        result = self.connection.execute(
            delete(t.event_traces).where(t.event_traces.c.recorded_at < before))
        return result.rowcount

    def recent_events(self, *, limit: int, contact_id: int | None = None) -> list[dict[str, Any]]:
        """The most recently processed events, newest first, with what their traces say."""
        statement = (
            select(t.processed_events, t.event_traces.c.trace)
            .join(t.event_traces, t.event_traces.c.event_id == t.processed_events.c.event_id,
                  isouter=True)
            .order_by(t.processed_events.c.received_at.desc(), t.processed_events.c.event_id)
            .limit(limit)
        )
        if contact_id is not None:
            statement = statement.where(t.processed_events.c.contact_id == contact_id)
        return [dict(row) for row in self.connection.execute(statement).mappings()]

    def stored_trace(self, event_id: str) -> dict[str, Any] | None:
        """An event's trace as it was kept, with its ledger row (trace_format.read_trace
        expands it)."""
        e = t.processed_events
        row = self.connection.execute(
            select(t.event_traces.c.trace, e.c.event_id, e.c.type, e.c.channel, e.c.contact_id,
                   e.c.received_at)
            .join(e, e.c.event_id == t.event_traces.c.event_id)
            .where(t.event_traces.c.event_id == event_id)
        ).mappings().first()
        if row is None:
            return None
        ledger = {key: row[key] for key in ("event_id", "type", "channel", "contact_id")}
        return {**ledger, "received_at": row["received_at"].isoformat(), **row["trace"]}

    def remember_rule_set(self, version: str, catalog: dict[str, Any], at: datetime) -> None:
        """Keep a rule-set version's catalog (once; a version already kept stays as it is)."""
        self._insert_or_nothing(t.rule_sets, {"version": version, "recorded_at": at,
                                              "catalog": catalog}, on=("version",))

    def rule_set_catalog(self, version: str | None) -> dict[str, Any] | None:
        """A rule-set version's catalog, read once per process and database: a version is
        kept once and never changes (a large catalog takes milliseconds to read)."""
        key = (str(self.connection.engine.url), version or "")
        catalog = _CATALOGS.get(key)
        if catalog is None:
            row = self.connection.execute(
                select(t.rule_sets.c.catalog).where(t.rule_sets.c.version == version)).first()
            if row is None:
                return None
            catalog = _CATALOGS[key] = row[0]
        return catalog

    def is_event_processed(self, event_id: str) -> bool:
        statement = select(t.processed_events.c.event_id).where(
            t.processed_events.c.event_id == event_id
        )
        return self.connection.execute(statement).first() is not None

    # -- contacts -----------------------------------------------------------------

    def get_contact(self, contact_id: int, *, lock: bool = False) -> Contact | None:
        """The contact; with ``lock``, its row stays locked until the transaction ends
        (PostgreSQL ``FOR UPDATE``; SQLite's write lock already covers the transaction)."""
        def build() -> Any:
            statement = select(t.contacts).where(t.contacts.c.id == bindparam("p_id"))
            return statement.with_for_update() if lock else statement

        row = self._prepared(f"get-contact:{lock}", build).first(self.connection, {"p_id": contact_id})
        return _contact(row) if row else None

    def lock_contacts(self, contact_ids: list[int]) -> dict[int, Contact]:
        """Lock several contacts' rows, always in id order (so two transactions locking the
        same contacts never wait for each other in a cycle)."""
        rows = self.connection.execute(
            select(t.contacts).where(t.contacts.c.id.in_(sorted(set(contact_ids))))
            .order_by(t.contacts.c.id).with_for_update()
        ).mappings()
        return {row["id"]: _contact(row) for row in rows}

    def find_contact_by_identity(self, channel: str, external_id: str, *,
                                 lock: bool = False) -> Contact | None:
        """The contact that holds this channel identity (locked with ``lock``)."""
        def build() -> Any:
            statement = (
                select(t.contacts)
                .join(t.contact_identities, t.contact_identities.c.contact_id == t.contacts.c.id)
                .where(
                    t.contact_identities.c.channel == bindparam("p_channel"),
                    t.contact_identities.c.external_id == bindparam("p_external_id"),
                )
            )
            return statement.with_for_update(of=t.contacts) if lock else statement

        row = self._prepared(f"contact-by-identity:{lock}", build).first(
            self.connection, {"p_channel": channel, "p_external_id": external_id})
        return _contact(row) if row else None

    def create_contact(
        self, *, name: str | None, created_at: datetime, channel: str | None, external_id: str | None
    ) -> tuple[Contact, bool]:
        """Create a contact with one channel identity; returns (contact, created).

        When another transaction created the same identity first, that contact is returned
        with ``created`` False, so concurrent first messages never make two contacts.
        """
        inserted = self._insert_row(t.contacts, {"name": name, "created_at": created_at}, "id")
        assert inserted is not None
        contact_id = inserted["id"]
        if channel is None or external_id is None:
            return Contact(id=contact_id, name=name, created_at=created_at), True
        if self._insert_or_nothing(
            t.contact_identities,
            {"channel": channel, "external_id": external_id, "contact_id": contact_id},
            on=("channel", "external_id"),
        ):
            return Contact(id=contact_id, name=name, created_at=created_at), True
        self.connection.execute(delete(t.contacts).where(t.contacts.c.id == contact_id))
        existing = self.find_contact_by_identity(channel, external_id)
        assert existing is not None, "identity conflict without an existing identity"
        return existing, False

    def note_inbound(self, channel: str, external_id: str, at: datetime) -> None:
        """The contact wrote on this identity at ``at`` (the platforms' reply windows run
        from it); writing again after opting out opts them back in."""
        i = t.contact_identities

        def build() -> Any:
            at_ = bindparam("p_at", type_=i.c.last_inbound_at.type)
            later = or_(i.c.last_inbound_at.is_(None), i.c.last_inbound_at < at_)
            return (update(i).where(i.c.channel == bindparam("p_channel"),
                                    i.c.external_id == bindparam("p_external_id"), later)
                    .values(last_inbound_at=at_, opted_out_at=case(
                        (i.c.opted_out_at < at_, null()), else_=i.c.opted_out_at)))

        self._prepared("note-inbound", build).count(
            self.connection, {"p_channel": channel, "p_external_id": external_id, "p_at": at})

    def note_opt_out(self, channel: str, external_id: str, at: datetime) -> None:
        """The contact opted out of (or blocked) this identity at ``at``."""
        i = t.contact_identities
        self.connection.execute(update(i).where(
            i.c.channel == channel, i.c.external_id == external_id,
            or_(i.c.last_inbound_at.is_(None), i.c.last_inbound_at <= at)
        ).values(opted_out_at=at))

    def identity(self, channel: str, external_id: str) -> dict[str, Any] | None:
        """An identity's row: its contact, when they last wrote, whether they opted out."""
        i = t.contact_identities
        row = self.connection.execute(select(i).where(
            i.c.channel == channel, i.c.external_id == external_id)).mappings().first()
        return dict(row) if row else None

    def find_contacts(self, channel: str, external_id: str) -> list[Contact]:
        found = self.find_contact_by_identity(channel, external_id)
        return [found] if found else []

    def identities(self, contact_id: int) -> list[dict[str, str]]:
        rows = self.connection.execute(
            select(t.contact_identities.c.channel, t.contact_identities.c.external_id)
            .where(t.contact_identities.c.contact_id == contact_id)
            .order_by(t.contact_identities.c.channel)
        )
        return [{"channel": r.channel, "external_id": r.external_id} for r in rows]

    def contact_details(self, contact_id: int) -> dict[str, Any]:
        """Tags, fields, identities and the open conversation of a contact, in two reads."""
        def build() -> Any:
            i, g, f = t.contact_identities, t.contact_tags, t.contact_fields
            return union_all(
                select(literal("identity").label("kind"), i.c.channel.label("a"),
                       i.c.external_id.label("b")).where(i.c.contact_id == bindparam("p_id")),
                select(literal("tag").label("kind"), g.c.tag.label("a"), null().label("b"))
                .where(g.c.contact_id == bindparam("p_id")),
                select(literal("field").label("kind"), f.c.name.label("a"),
                       cast(f.c.value, Text).label("b")).where(f.c.contact_id == bindparam("p_id")),
            )

        identities, tags, fields = [], [], {}
        for row in self._prepared("labels", build).rows(self.connection, {"p_id": contact_id}):
            if row["kind"] == "tag":
                tags.append(row["a"])
            elif row["kind"] == "field":
                fields[row["a"]] = json.loads(row["b"]) if row["b"] is not None else None
            else:
                identities.append({"channel": row["a"], "external_id": row["b"]})
        return {"tags": sorted(tags), "fields": fields,
                "identities": sorted(identities, key=lambda identity: identity["channel"]),
                "open_conversation": self.open_conversation_of(contact_id)}

    def tags(self, contact_id: int) -> list[str]:
        rows = self.connection.execute(
            select(t.contact_tags.c.tag)
            .where(t.contact_tags.c.contact_id == contact_id)
            .order_by(t.contact_tags.c.tag)
        )
        return [r.tag for r in rows]

    def add_tag(self, contact_id: int, tag: str) -> bool:
        """Tag a contact; False when it already had the tag."""
        return self._insert_or_nothing(
            t.contact_tags, {"contact_id": contact_id, "tag": tag}, on=("contact_id", "tag"))

    def remove_tag(self, contact_id: int, tag: str) -> bool:
        """Untag a contact; False when it did not have the tag."""
        statement = self._prepared("remove-tag", lambda: delete(t.contact_tags).where(
            t.contact_tags.c.contact_id == bindparam("p_id"), t.contact_tags.c.tag == bindparam("p_tag")))
        return statement.count(self.connection, {"p_id": contact_id, "p_tag": tag}) == 1

    def fields(self, contact_id: int) -> dict[str, Any]:
        statement = self._prepared("fields", lambda: select(
            t.contact_fields.c.name, t.contact_fields.c.value).where(
                t.contact_fields.c.contact_id == bindparam("p_id")))
        return {r["name"]: r["value"] for r in statement.rows(self.connection, {"p_id": contact_id})}

    def set_field(self, contact_id: int, name: str, value: Any) -> bool:
        """Set a contact attribute; False when it already had that value.

        One upsert, so concurrent writers never collide on the key.
        """
        def build() -> Any:
            f = t.contact_fields
            statement = self._insert(f).values(
                contact_id=bindparam("p_id"), name=bindparam("p_name"),
                value=bindparam("p_value", type_=f.c.value.type))
            return statement.on_conflict_do_update(
                index_elements=["contact_id", "name"],
                set_={"value": statement.excluded.value},
                where=f.c.value.is_distinct_from(statement.excluded.value),
            ).returning(f.c.name)

        rows = self._prepared("set-field", build).rows(
            self.connection, {"p_id": contact_id, "p_name": name, "p_value": value})
        return len(rows) == 1

    def merge_contacts(self, primary_id: int, secondary_id: int) -> None:
        """Move the secondary's identities, tags and missing fields to the primary; contacts
        merged into the secondary before now point at the primary (never a chain)."""
        self.connection.execute(
            update(t.contact_identities)
            .where(t.contact_identities.c.contact_id == secondary_id)
            .values(contact_id=primary_id)
        )
        for tag in self.tags(secondary_id):
            self.add_tag(primary_id, tag)
        primary_fields = self.fields(primary_id)
        for name, value in self.fields(secondary_id).items():
            if name not in primary_fields:
                self.set_field(primary_id, name, value)
        self.connection.execute(
            delete(t.contact_tags).where(t.contact_tags.c.contact_id == secondary_id)
        )
        self.connection.execute(
            update(t.contacts).where(t.contacts.c.id == secondary_id).values(merged_into=primary_id)
        )
        self.connection.execute(  # contacts merged into the secondary earlier: no chains
            update(t.contacts).where(t.contacts.c.merged_into == secondary_id)
            .values(merged_into=primary_id)
        )

    # -- conversations --------------------------------------------------------------

    def get_conversation(self, conversation_id: int) -> Conversation | None:
        statement = self._prepared("get-conversation", lambda: select(t.conversations).where(
            t.conversations.c.id == bindparam("p_id")))
        row = statement.first(self.connection, {"p_id": conversation_id})
        return _conversation(row) if row else None

    def open_conversation_of(self, contact_id: int) -> Conversation | None:
        statement = self._prepared("open-conversation-of", lambda: select(t.conversations).where(
            t.conversations.c.contact_id == bindparam("p_id"),
            t.conversations.c.closed_at.is_(None)))
        row = statement.first(self.connection, {"p_id": contact_id})
        return _conversation(row) if row else None

    def count_conversations(self) -> int:
        return self.connection.execute(select(func.count()).select_from(t.conversations)).scalar_one()

    def conversations_of(self, contact_id: int) -> list[Conversation]:
        rows = self.connection.execute(
            select(t.conversations)
            .where(t.conversations.c.contact_id == contact_id)
            .order_by(t.conversations.c.opened_at, t.conversations.c.id)
        ).mappings()
        return [_conversation(r) for r in rows]

    def open_conversation(
        self,
        *,
        contact_id: int,
        channel: str | None,
        source: OpenSource,
        actor: str | None,
        at: datetime,
        event_id: str | None,
        assignee: str | None = None,
        team: str | None = None,
    ) -> tuple[Conversation, bool]:
        """Open a conversation unless one is open; returns (the open one, whether it is new).

        The partial unique index decides: a concurrent opener loses the INSERT and gets the
        conversation the winner opened.
        """
        inserted = self._inserted_row(
            t.conversations,
            {
                "contact_id": contact_id,
                "channel": channel,
                "opened_at": at,
                "open_source": str(source),
                "opened_by": actor,
                "assignee": assignee,
                "team": team,
                "bot_active": True,
                "opened_by_event": event_id,
            },
            on=("contact_id",),
            where=lambda: t.conversations.c.closed_at.is_(None),
        )
        if inserted is not None:
            return _conversation(inserted), True
        conversation = self.open_conversation_of(contact_id)
        if conversation is None:  # the open one that blocked the insert closed meanwhile
            raise ConversationRace(f"contact {contact_id}'s open conversation closed during an open")
        return conversation, False

    def close_conversation(
        self,
        conversation_id: int,
        *,
        source: CloseSource,
        actor: str | None,
        at: datetime,
        event_id: str | None,
        resolution_seconds: int,
        note: str | None = None,
    ) -> Conversation | None:
        """Close a conversation if it is still open; None when it was already closed. Its
        resolution time is counted in the rollups, and its first response (if any) moves to
        its close source."""
        c = t.conversations
        statement = self._prepared("close-conversation", lambda: (
            update(c).where(c.c.id == bindparam("p_id"), c.c.closed_at.is_(None))
            .values({name: bindparam(f"p_{name}", type_=c.c[name].type) for name in (
                "closed_at", "resolution_seconds", "close_source", "closed_by", "closing_note",
                "closed_by_event")}).returning(*c.c)))
        row = statement.first(self.connection, {
            "p_id": conversation_id, "p_closed_at": at, "p_resolution_seconds": resolution_seconds,
            "p_close_source": str(source), "p_closed_by": actor, "p_closing_note": note,
            "p_closed_by_event": event_id})
        if row is None:
            return None
        self.rollups.count(RESOLUTION, row)
        if row["first_response_seconds"] is not None:
            self.rollups.move(FIRST_RESPONSE, {**row, "close_source": None}, row)
        return _conversation(row)

    def assign(
        self, conversation: Conversation, *, assignee: str | None, team: str | None,
        clear: tuple[str, ...] = (),
    ) -> Conversation:
        """Set the assignee and/or team (a None leaves that one as it is); the columns named
        in ``clear`` (``assignee``, ``team``) become empty. A first response already counted
        moves to the new values in the rollups (``conversation``: as it was before)."""
        values: dict[str, str | None] = {
            k: v for k, v in (("assignee", assignee), ("team", team)) if v is not None}
        values.update(dict.fromkeys(clear))
        if not values:
            return conversation
        c = t.conversations
        statement = self._prepared(f"assign:{','.join(values)}", lambda: (
            update(c).where(c.c.id == bindparam("p_id"))
            .values({name: bindparam(f"p_{name}") for name in values}).returning(*c.c)))
        row = statement.first(self.connection, {"p_id": conversation.id,
                                                **{f"p_{k}": v for k, v in values.items()}})
        assert row is not None
        if row["first_response_seconds"] is not None:
            self.rollups.move(FIRST_RESPONSE, {**row, "assignee": conversation.assignee,
                                               "team": conversation.team}, row)
        return _conversation(row)

    def add_note(self, conversation_id: int, *, text: str, author: str, at: datetime,
                 event_id: str | None) -> int:
        """Keep an internal note on a conversation; its id."""
        row = self._insert_row(t.conversation_notes, {
            "conversation_id": conversation_id, "text": text, "author": author,
            "created_at": at, "event_id": event_id}, "id")
        assert row is not None
        return int(row["id"])

    def notes(self, *, conversation_id: int | None = None, limit: int) -> list[dict[str, Any]]:
        """Notes, newest first: a conversation's, or every conversation's."""
        n = t.conversation_notes
        statement = select(n).order_by(n.c.id.desc()).limit(limit)
        if conversation_id is not None:
            statement = statement.where(n.c.conversation_id == conversation_id)
        return [dict(row) for row in self.connection.execute(statement).mappings()]

    def set_bot_active(self, conversation_id: int, active: bool) -> bool:
        """Hand a conversation to a human (False) or back to the bot; False when unchanged."""
        c = t.conversations
        statement = self._prepared("set-bot-active", lambda: (
            update(c).where(c.c.id == bindparam("p_id"), c.c.bot_active != bindparam("p_active"))
            .values(bot_active=bindparam("p_active"))))
        return statement.count(self.connection, {"p_id": conversation_id, "p_active": active}) == 1

    def record_reply(self, conversation: Conversation, *, at: datetime,
                     first_response: bool) -> Conversation:
        """Note a reply on a conversation; with ``first_response``, also its first response
        time (from the open, never negative), counted in the rollups."""
        c = t.conversations
        seconds = max(0, int((at - conversation.opened_at).total_seconds()))
        statement = self._prepared(f"record-reply:{first_response}", lambda: (
            update(c).where(c.c.id == bindparam("p_id"))
            .values({"last_reply_at": bindparam("p_at", type_=c.c.last_reply_at.type),
                     **({"first_response_at": bindparam("p_at", type_=c.c.first_response_at.type),
                         "first_response_seconds": bindparam("p_seconds")}
                        if first_response else {})})
            .returning(*c.c)))
        row = statement.first(self.connection, {"p_id": conversation.id, "p_at": at,
                                                "p_seconds": seconds})
        assert row is not None
        if first_response:
            self.rollups.count(FIRST_RESPONSE, row)
        return _conversation(row)

    # -- timers ---------------------------------------------------------------------------

    def set_timers(self, timers: list[Timer]) -> None:
        """Write timers in one statement; a timer already set keeps the later due time (a
        clock only moves forward, whatever order the events arrive in)."""
        def build() -> Any:
            m = t.timers
            rows = [{name: bindparam(f"p{n}_{name}", type_=m.c[name].type) for name in m.c.keys()}
                    for n in range(len(timers))]
            statement = self._insert(m).values(rows)
            return statement.on_conflict_do_update(
                index_elements=["id"],
                set_={"due_at": statement.excluded.due_at,
                      "set_by_event": statement.excluded.set_by_event},
                where=m.c.due_at < statement.excluded.due_at)

        values = {f"p{n}_{name}": value for n, timer in enumerate(timers)
                  for name, value in _timer_row(timer).items()}
        self._prepared(f"set-timers:{len(timers)}", build).count(self.connection, values)

    def drop_timers(self, conversation_id: int) -> int:
        """Drop a conversation's timers (it closed); how many there were."""
        statement = self._prepared("drop-timers", lambda: delete(t.timers).where(
            t.timers.c.conversation_id == bindparam("p_id")))
        return statement.count(self.connection, {"p_id": conversation_id})

    def drop_timer(self, timer_id: str) -> int:
        """Drop one timer by its id (a date timer about to be set again); 1 if it was set."""
        statement = self._prepared("drop-timer", lambda: delete(t.timers).where(
            t.timers.c.id == bindparam("p_id")))
        return statement.count(self.connection, {"p_id": timer_id})

    def claim_due_timers(self, now: datetime, limit: int) -> list[Timer]:
        """Up to ``limit`` timers due at ``now``, earliest first, with their contacts' rows
        locked for this transaction. The contact is locked, not the timer row: an incoming
        event locks its contact before it touches that contact's timers, so both take the
        locks in the same order (never a deadlock); on PostgreSQL, contacts another
        transaction holds are skipped (SKIP LOCKED), so several tick processes share the
        work and a timer whose contact is busy waits for the next batch.

        The rows are as the statement found them before its locks were granted: on
        PostgreSQL an event that committed in between may have moved a timer on or dropped
        it, so a claimed timer fires only if ``delete_timer`` still finds it."""
        m, c = t.timers, t.contacts
        statement = self._prepared("claim-timers", lambda: (
            select(m).join(c, c.c.id == m.c.contact_id)
            .where(m.c.due_at <= bindparam("p_now", type_=m.c.due_at.type))
            .order_by(m.c.due_at, m.c.id).limit(bindparam("p_limit"))
            .with_for_update(of=c, skip_locked=True)))
        return [_timer(row) for row in
                statement.rows(self.connection, {"p_now": now, "p_limit": limit})]

    def due_timers_set_by(self, events: Collection[str], now: datetime,
                          limit: int) -> list[Timer]:
        """Up to ``limit`` timers due at ``now`` that one of ``events`` set, earliest first
        (for a simulation, which fires only what its own events set; nothing is locked)."""
        m = t.timers
        rows = self.connection.execute(
            select(m).where(m.c.due_at <= now, m.c.set_by_event.in_(sorted(events)))
            .order_by(m.c.due_at, m.c.id).limit(limit))
        return [_timer(row) for row in rows.mappings()]

    def delete_timer(self, timer: Timer) -> bool:
        """Remove a timer that is about to fire, if its row is still as claimed; False when
        a later event moved it on (it waits on) or dropped it: then it must not fire."""
        m = t.timers
        statement = self._prepared("delete-timer", lambda: delete(m).where(
            m.c.id == bindparam("p_id"), m.c.due_at == bindparam("p_due", type_=m.c.due_at.type)))
        return statement.count(self.connection, {"p_id": timer.id, "p_due": timer.due_at}) == 1

    def schedule_timers(self) -> list[Timer]:
        """The schedules' timers (one per schedule rule), by id."""
        m = t.timers
        rows = self.connection.execute(select(m).where(m.c.kind == "schedule").order_by(m.c.id))
        return [_timer(row) for row in rows.mappings()]

    def claim_due_schedule(self, now: datetime) -> Timer | None:
        """The earliest schedule due at ``now``, its row locked for this transaction; on
        PostgreSQL one another transaction holds is skipped (SKIP LOCKED), so concurrent
        tick processes never run the same batch."""
        m = t.timers
        row = self.connection.execute(
            select(m).where(m.c.kind == "schedule", m.c.due_at <= now)
            .order_by(m.c.due_at, m.c.id).limit(1)
            .with_for_update(skip_locked=True)).mappings().first()
        return None if row is None else _timer(row)

    def move_timer(self, timer: Timer) -> None:
        """Write a timer's new due time and payload (a schedule's progress or next firing)."""
        m = t.timers
        self.connection.execute(update(m).where(m.c.id == timer.id)
                                .values(due_at=timer.due_at, payload=timer.payload))

    def schedule_targets(self, applies_to: str, *, after: int,
                         limit: int) -> list[tuple[int, int | None]]:
        """Up to ``limit`` (contact id, open conversation id or None) past contact ``after``,
        by contact id: every contact not merged away (``contacts``), or every contact with
        an open conversation (``open_conversations``)."""
        c, v = t.contacts, t.conversations
        if applies_to == "contacts":
            query = select(c.c.id, literal(None, Integer)).where(
                c.c.id > after, c.c.merged_into.is_(None)).order_by(c.c.id)
        else:
            query = select(v.c.contact_id, v.c.id).where(
                v.c.contact_id > after, v.c.closed_at.is_(None)).order_by(v.c.contact_id)
        return [(contact_id, conversation_id) for contact_id, conversation_id
                in self.connection.execute(query.limit(limit))]

    def timers(self, *, limit: int = 1000) -> list[Timer]:
        """Pending timers, earliest first."""
        m = t.timers
        rows = self.connection.execute(select(m).order_by(m.c.due_at, m.c.id).limit(limit))
        return [_timer(row) for row in rows.mappings()]

    # -- what /metrics shows of other processes ------------------------------------------

    def add_counts(self, source: str,
                   counts: Mapping[tuple[str, tuple[str, ...]], int]) -> None:
        """Add ``counts`` (a metric and its label values -> how many) to ``source``'s, in
        key order (so that two transactions never take the rows in opposite orders)."""
        c = t.engine_counts
        for (metric, labels), count in sorted(counts.items()):
            statement = self._insert(c).values(source=source, metric=metric,
                                               labels=json.dumps(labels), count=count)
            self.connection.execute(statement.on_conflict_do_update(
                index_elements=["source", "metric", "labels"],
                set_={"count": c.c.count + statement.excluded.count}))

    def counts(self) -> list[tuple[str, str, tuple[str, ...], int]]:
        """(source, metric, label values, count) for everything counted so far."""
        c = t.engine_counts
        rows = self.connection.execute(select(c.c.source, c.c.metric, c.c.labels, c.c.count)
                                       .order_by(c.c.source, c.c.metric, c.c.labels))
        return [(source, metric, tuple(json.loads(labels)), count)
                for source, metric, labels, count in rows]

    # -- run-once and cooldowns --------------------------------------------------------

    def claim_rule_runs(self, rule_id: str, scopes: dict[str, timedelta | None],
                        at: datetime) -> str | None:
        """Record that ``rule_id`` fires now in every scope, or in none.

        ``scopes`` maps a scope to its cooldown (None: once ever). Returns None when every
        scope allowed it, else the first scope that did not (nothing is then recorded).
        """
        def build(once: bool) -> Any:
            r = t.rule_runs
            statement = self._insert(r).values(rule_id=bindparam("p_rule"),
                                               scope=bindparam("p_scope"),
                                               last_fired_at=bindparam("p_at", type_=r.c.last_fired_at.type))
            if once:
                statement = statement.on_conflict_do_nothing(index_elements=["rule_id", "scope"])
            else:
                statement = statement.on_conflict_do_update(
                    index_elements=["rule_id", "scope"],
                    set_={"last_fired_at": statement.excluded.last_fired_at},
                    where=r.c.last_fired_at <= bindparam("p_since", type_=r.c.last_fired_at.type))
            return statement.returning(r.c.scope)

        def claim(scope: str, cooldown: timedelta | None) -> bool:
            statement = self._prepared(f"claim-run:{cooldown is None}",
                                       lambda: build(cooldown is None))
            values = {"p_rule": rule_id, "p_scope": scope, "p_at": at}
            if cooldown is not None:
                values["p_since"] = at - cooldown
            return bool(statement.rows(self.connection, values))

        if len(scopes) == 1:
            [(scope, cooldown)] = scopes.items()
            return None if claim(scope, cooldown) else scope
        try:
            with self.savepoint():  # all or none: a refusal after a claim undoes the claim
                for scope, cooldown in scopes.items():
                    if not claim(scope, cooldown):
                        raise _Refused(scope)
        except _Refused as refused:
            return refused.scope
        return None


def _timer_row(timer: Timer) -> dict[str, Any]:
    return {"id": timer.id, "kind": timer.kind, "contact_id": timer.contact_id,
            "conversation_id": timer.conversation_id, "rule_id": timer.rule_id,
            "due_at": timer.due_at, "set_by_event": timer.set_by_event,
            "payload": timer.payload}


def _timer(row: Any) -> Timer:
    return Timer(row["id"], row["kind"], row["contact_id"], row["conversation_id"],
                 row["rule_id"], row["due_at"], row["set_by_event"], row["payload"])
