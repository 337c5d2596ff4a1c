"""The engine: one event in, its effects committed in one transaction, a trace of why."""
from __future__ import annotations

import gc
import logging
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from rules_engine.domain.errors import EventError, NotFoundError, RulesEngineError
from rules_engine.domain.inputs import handler_for
from rules_engine.domain.lifecycle import Fact, Lifecycle, Outcome
from rules_engine.domain.message_status import aimed
from rules_engine.domain.model import (
    COMMAND_TYPES,
    ISSUED_TYPES,
    MESSAGE_STATUS_TYPES,
    ONE_RULE_TYPES,
    AnyEventType,
    Contact,
    Conversation,
    Event,
    EventType,
    event_type,
    is_trigger,
    sent_by_bot,
)
from rules_engine.domain.schedules import schedule_event, schedule_timer
from rules_engine.domain.timers import Timer, date_timer_id, idle_timer
from rules_engine.language.conditions import ConditionFailed
from rules_engine.language.context import build_context
from rules_engine.language.expressions import BUSINESS_HOURS_KEY, ExpressionRuntimeError
from rules_engine.rules.actions import ActionRun, Choose, Frame, Wait, frames_at
from rules_engine.rules.ruleset import Rule, RuleSet
from rules_engine.store import DATABASE_ERRORS, Store, StoreTx
from rules_engine.trace.counts import CountKey, tally
from rules_engine.trace.forms import (
    expand,
    outcome_line,
    read_trace,
    result_of,
    stored_choice,
    stored_conditions,
    to_store,
)
from rules_engine.trace.shapes import (
    Catalog,
    Dropped,
    StoredCondition,
    StoredOutcome,
    StoredRule,
    StoredStep,
    StoredTrace,
    Trace,
)

log = logging.getLogger(__name__)
DEFAULT_MAX_DEPTH = 5
MAX_MERGE_HOPS = 16


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class Result:
    """What processing one event did; ``trace`` is the JSON-ready explanation (built from
    the compact ``stored_trace`` and its rule set's ``catalog`` when read)."""

    event_id: str
    status: str  # "applied", "noop" (a command that changed nothing), "duplicate", "simulated"
    contact_id: int | None
    # what this run wrote; None for a repeat, or for a status callback aimed at no message
    stored_trace: StoredTrace | None
    fired: list[str] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)
    conversation_id: int | None = None  # the conversation the event itself opened, closed or found
    reason: str | None = None  # why a command was a no-op
    catalog: Catalog | None = None
    first_trace: Trace | None = None  # a repeat's: what its first delivery did

    @property
    def duplicate(self) -> bool:
        return self.status == "duplicate"

    @property
    def trace(self) -> Trace | None:
        """The expanded trace: this run's, or a repeat's first one (None when there is none)."""
        if self.stored_trace is None:
            return self.first_trace
        return expand(self.stored_trace, self.catalog)

    def to_dict(self) -> dict[str, Any]:
        result = {"event_id": self.event_id, "status": self.status, "contact_id": self.contact_id,
                  "conversation_id": self.conversation_id, "fired": self.fired,
                  "changes": self.changes}
        if self.reason:
            result["reason"] = self.reason
        return result


class BatchRefused(RulesEngineError):
    """The event at ``index`` of an atomic batch was refused (``error``), so none of the
    batch was applied."""

    def __init__(self, index: int, error: RulesEngineError) -> None:
        super().__init__(error.message, path=error.path, hint=error.hint)
        self.index = index
        self.error = error


@dataclass(slots=True)
class _Pending:
    fact: Fact
    depth: int


class _Run:
    """Processing of one event inside its unit of work; collects the trace as it goes."""

    def __init__(self, engine: Engine, tx: StoreTx, event: Event, rules: RuleSet) -> None:
        self.engine = engine
        self.tx = tx
        self.event = event
        self.rules = rules
        self.lifecycle = Lifecycle(tx, event_id=event.id, at=event.timestamp)
        self.steps: list[StoredStep] = []
        self.changes: list[dict[str, Any]] = []
        self.fired: list[str] = []
        self.dropped: list[Dropped] = []
        self.queue: deque[_Pending] = deque()
        self.new_contacts: set[int] = set()
        self.conversation_id: int | None = None
        self.contact_id: int | None = None  # the event's contact, once resolved
        self.builtin: list[StoredOutcome] = []
        # (contact, field) this event changed; field None: all of them (a merge moved them)
        self.fields_changed: set[tuple[int, str | None]] = set()

    def resolve_contact(self) -> int:
        """The event's contact id, its row locked for the transaction (so events for one
        contact apply one after another, across processes); a contact merged away is
        followed to the one it was merged into; a contact never seen before is created."""
        ref, event = self.event.contact, self.event
        if ref.id is not None:
            merging = event.type is EventType.MERGE_CONTACTS  # the merge locks both, in order
            contact = self.tx.get_contact(ref.id, lock=not merging)
            if contact is None:
                raise NotFoundError(f"contact {ref.id} does not exist", path="contact/id")
            return contact.id if merging else self.lifecycle.seed(self.follow_merges(contact)).contact.id
        if ref.external_id is not None:
            if event.channel is None:
                raise EventError("a contact named by its external_id needs the event's channel",
                                 path="channel", hint="add the channel the id belongs to")
            found = self.tx.find_contact_by_identity(event.channel, ref.external_id, lock=True)
            if found is not None:
                return self.lifecycle.seed(self.follow_merges(found)).contact.id
            if event.type in ISSUED_TYPES:
                raise NotFoundError(
                    f"no contact has {event.channel} id '{ref.external_id}'",
                    path="contact/external_id", hint="users' commands name existing contacts",
                )
            contact, created = self.tx.create_contact(
                name=ref.name, created_at=event.timestamp, channel=event.channel,
                external_id=ref.external_id,
            )
            if created:
                self.new_contacts.add(contact.id)
                self.changes.append({"operation": "create_contact", "outcome": "applied",
                                     "detail": f"created contact {contact.id}",
                                     "conversation_id": None})
                self.queue.append(_Pending(
                    Fact(EventType.CONTACT_CREATED, contact.id, event.channel), 1))
            locked = self.tx.get_contact(contact.id, lock=True) or contact
            return self.lifecycle.seed(self.follow_merges(locked)).contact.id
        if event.conversation_id is not None:
            conversation = self.tx.get_conversation(event.conversation_id)
            if conversation is None:
                raise NotFoundError(f"conversation {event.conversation_id} does not exist",
                                    path="conversation_id")
            return self.lifecycle.state(conversation.contact_id).contact.id
        raise EventError("the event names no contact", path="contact")

    def follow_merges(self, contact: Contact) -> Contact:
        """The contact a merged-away contact now lives on (locked), at most MAX_MERGE_HOPS
        merges away; a cycle (which merges refuse to make) is an error, never a loop."""
        seen = {contact.id}
        while contact.merged_into is not None:
            following = self.tx.get_contact(contact.merged_into, lock=True)
            if following is None or following.id in seen or len(seen) > MAX_MERGE_HOPS:
                raise EventError(f"contact {contact.id} was merged into a contact that cannot "
                                 "be followed", path="contact",
                                 hint="repair the contacts' merged_into chain")
            seen.add(following.id)
            contact = following
        return contact

    def record(self, outcomes: list[Outcome], depth: int,
               action: str | None = None) -> list[StoredOutcome]:
        """Note what ``outcomes`` changed and the facts they raised; their trace lines."""
        lines = []
        for outcome in outcomes:
            done = outcome.to_dict()
            lines.append(outcome_line(done, action))
            if outcome.applied:
                self.changes.append(done)
            for fact in outcome.facts:
                self.queue.append(_Pending(fact, depth + 1))
                self.fields_changed.update(_fields_changed(fact))
        return lines

    def run(self, contact_id: int) -> None:
        """Apply the event to its (resolved, locked) contact: built-in lifecycle, then rules."""
        event = self.event
        self.contact_id = contact_id
        if event.type is EventType.MANUAL:
            run_by_hand(self.rules, event.params.get("rule_id"))
        by_contact = event.type in _FOR_A_CONTACT
        outcomes = handler_for(event.type)(event, contact_id, self.lifecycle)
        self.conversation_id = next(  # else the one it names (a timer's firing)
            (o.conversation_id for o in outcomes if o.conversation_id is not None),
            self.open_conversation_id(contact_id) if by_contact else event.conversation_id)
        builtin = self.record(outcomes, 0)
        self.builtin = builtin
        channel = self.contacts_channel(contact_id) if by_contact else event.channel
        root = Fact(event.type, contact_id, channel, None, dict(event.params))
        self.queue.appendleft(_Pending(root, 0))
        first = True
        while self.queue:
            pending = self.queue.popleft()
            if pending.depth > self.engine.max_depth:
                self.dropped.append({"event": str(pending.fact.type), "depth": pending.depth,
                                     "contact_id": pending.fact.contact_id})
                continue
            step = self.process(pending, is_root=first)
            if first:
                step["builtin"] = builtin
                first = False
            self.steps.append(step)

    def open_conversation_id(self, contact_id: int) -> int | None:
        conversation = self.lifecycle.state(contact_id).open_conversation
        return None if conversation is None else conversation.id

    def contacts_channel(self, contact_id: int) -> str | None:
        """Where a rule run by hand acts (its sends go there): the channel of the contact's
        open conversation, else of the contact's first identity."""
        state = self.lifecycle.state(contact_id)
        if state.open_conversation is not None and state.open_conversation.channel:
            return state.open_conversation.channel
        return next((str(identity["channel"]) for identity in state.identities), None)

    def process(self, pending: _Pending, *, is_root: bool) -> StoredStep:
        fact, event = pending.fact, self.event
        step: StoredStep = {"event": str(fact.type), "depth": pending.depth, "rules": []}
        if fact.channel != event.channel:  # compact: see trace.shapes
            step["channel"] = fact.channel
        if fact.contact_id != self.contact_id:
            step["contact_id"] = fact.contact_id
        if fact.conversation_id is not None:
            step["conversation_id"] = fact.conversation_id
        if fact.params and not is_root:
            step["params"] = fact.params
        if fact.type is EventType.WAIT_ENDED:
            step["rules"].append(self.resume(fact, pending.depth))
            return step
        candidates = self.rules.candidates(fact.type, fact.channel) if is_trigger(fact.type) else ()
        if fact.type in ONE_RULE_TYPES:
            candidates = tuple(r for r in candidates if r.id == fact.params.get("rule_id"))
        if not candidates:
            return step
        context = self.context(fact, pending.depth, is_root=is_root)
        stopped_by: str | None = None
        for rule in candidates:
            step["rules"].append(self.apply_rule(rule, fact, context, pending.depth, stopped_by))
            if stopped_by is None and rule.stop and result_of(step["rules"][-1]) == "fired":
                stopped_by = rule.id
        return step

    def context(self, fact: Fact, depth: int, *, is_root: bool,
                as_type: AnyEventType | None = None) -> dict[str, Any]:
        """What conditions and actions read for ``fact`` (``as_type``: for a rule resumed
        after a wait, the type of the fact that triggered it)."""
        event, kind = self.event, as_type or fact.type
        context = build_context(
            self.lifecycle, event_id=event.id, event_type=kind,
            channel=fact.channel, timestamp=event.timestamp, depth=depth,
            contact_id=fact.contact_id, contact_is_new=fact.contact_id in self.new_contacts,
            conversation_id=fact.conversation_id,
            params=self.rules.condition_params(kind, fact.params),
            message=event.message if is_root else None,
            intent=event.intent if is_root else None,
            actor=event.actor if is_root else None,
        )
        if self.rules.business_hours is not None:
            context[BUSINESS_HOURS_KEY] = self.rules.business_hours
        return context

    def apply_rule(self, rule: Rule, fact: Fact, context: dict[str, Any], depth: int,
                   stopped_by: str | None) -> StoredRule:
        entry: StoredRule = {"rule_id": rule.id}  # compact: see trace.shapes
        if not rule.enabled:
            entry["result"] = "disabled"
            return entry
        if stopped_by is not None:
            entry["result"] = "skipped_by_stop"
            entry["detail"] = f"rule '{stopped_by}' fired with stop: true"
            return entry
        if rule.condition is not None:
            log: dict[str, StoredCondition] = {}
            try:
                holds = rule.condition.holds(context, self.event.timestamp, log)
            except ConditionFailed as failure:
                entry["result"] = "condition_error"
                entry["detail"] = f"{failure.path}: {failure.message}"
                return entry
            finally:
                entry["conditions"] = stored_conditions(log)
            if not holds:  # compact: a rule with conditions and no result was false on them
                return entry
        refused = self.claim_run(rule, fact, context)
        if refused is not None:
            entry["result"], entry["detail"] = refused
            return entry
        self.fired.append(rule.id)  # compact: a rule with actions and no result fired
        self.run_actions(rule, fact, context, depth, entry,
                         [Frame(rule.actions, "actions", 0)])
        return entry

    def run_actions(self, rule: Rule, fact: Fact, context: dict[str, Any], depth: int,
                    entry: StoredRule, frames: Sequence[Frame]) -> None:
        """Run each frame's actions from its start (innermost first: a branch's rest, then
        what follows its choose), up to and including a wait (which leaves the rest to its
        timer); their lines go to ``entry``."""
        entry["actions"] = []
        for frame in frames:
            if self.run_frame(rule, fact, context, depth, entry, frame):
                return

    def run_frame(self, rule: Rule, fact: Fact, context: dict[str, Any], depth: int,
                  entry: StoredRule, frame: Frame) -> bool:
        """Run ``frame``'s actions from its start; True when a wait deferred the rest."""
        for index in range(frame.start, len(frame.actions)):
            action, path = frame.actions[index], f"{frame.base}/{index}"
            if isinstance(action, Choose):
                if self.run_choice(rule, fact, context, depth, entry, action, path):
                    return True
                continue
            outcome = action.run(ActionRun(
                lifecycle=self.lifecycle, contact_id=fact.contact_id, channel=fact.channel,
                rule_id=rule.id, path=path, context=context,
                now=self.event.timestamp, rule_digest=rule.digest, declared=self.rules.declared,
            ))
            entry["actions"].extend(_placed(line, path)
                                    for line in self.record([outcome], depth, action.name))
            if outcome.defers:
                return True
        return False

    def run_choice(self, rule: Rule, fact: Fact, context: dict[str, Any], depth: int,
                   entry: StoredRule, choose: Choose, path: str) -> bool:
        """Pick the branch of ``choose`` (at ``path``) and run it; its line keeps which
        branch ran and each condition tried (see trace.shapes); True when a wait in it
        deferred the rest."""
        choice = choose.pick(context, self.event.timestamp)
        line: StoredOutcome = {"outcome": "noop" if choice.place is None else "chosen",
                               "action": choose.name, "conditions": stored_choice(choice.log)}
        if choice.branch is not None:
            line["branch"] = choice.branch
        entry["actions"].append(_placed(line, path))
        if choice.place is None:
            return False
        return self.run_frame(rule, fact, context, depth, entry,
                              Frame(choice.actions, f"{path}/choose/{choice.place}", 0))

    def resume(self, fact: Fact, depth: int) -> StoredRule:
        """A rule's wait is over: check its ``if`` now, then run the rest of its actions
        (those after the wait in its branch, then those after each enclosing choose)."""
        wait = fact.params
        rule = self.rules.get(str(wait.get("rule_id")))
        resume = wait.get("resume")
        start = (f"actions/{resume}" if isinstance(resume, int)  # timers before branches
                 else resume if isinstance(resume, str) else "")
        entry: StoredRule = {"rule_id": str(wait.get("rule_id")), "from": _from(start)}
        frames = frames_at(rule.actions, start) if rule is not None else None
        if rule is None or not rule.enabled or rule.digest != wait.get("digest") \
                or not frames or frames[0].start == 0:
            why = ("the rule no longer exists" if rule is None else "the rule is disabled"
                   if not rule.enabled else "the rule's actions changed since the wait began")
            entry["result"], entry["detail"] = "wait_dropped", why
            return entry
        message = wait.get("message")
        context = self.context(replace(fact, params=dict(wait.get("params") or {}),
                                       channel=wait.get("channel")),
                               depth, is_root=False, as_type=event_type(wait["trigger"]))
        if message is not None:
            context["message"] = message
        inner = frames[0]
        waited = inner.actions[inner.start - 1]
        if isinstance(waited, Wait) and waited.condition is not None:
            path = f"{inner.base}/{inner.start - 1}/wait/if"
            try:
                holds = bool(waited.condition.evaluate(context, now=self.event.timestamp))
            except ExpressionRuntimeError as error:
                entry["result"], entry["detail"] = "condition_error", f"{path}: {error}"
                entry["conditions"] = {path: {"result": False, "error": str(error)}}
                return entry
            entry["conditions"] = {path: holds}
            if not holds:
                entry["result"] = "wait_if_false"
                entry["detail"] = f"{path} is false: the rest is skipped"
                return entry
        entry["result"] = "resumed"
        self.fired.append(rule.id)
        self.run_actions(rule, fact, context, depth, entry, frames)
        return entry

    def claim_run(self, rule: Rule, fact: Fact, context: dict[str, Any]) -> tuple[str, str] | None:
        """Enforce ``once_per`` and ``cooldown`` in the store; (result, why) when refused."""
        scopes: dict[str, timedelta | None] = {}
        if rule.once_per == "contact":
            scopes[f"once:contact:{fact.contact_id}"] = None
        elif rule.once_per == "conversation":
            conversation_id = context["conversation"]["id"]
            if conversation_id is None:
                return "skipped_once", "once_per: conversation, and there is no conversation"
            scopes[f"once:conversation:{conversation_id}"] = None
        if rule.cooldown is not None:
            scopes[f"cooldown:contact:{fact.contact_id}"] = rule.cooldown
        if not scopes:
            return None
        refused = self.tx.claim_rule_runs(rule.id, scopes, self.event.timestamp)
        if refused is None:
            return None
        if refused.startswith("once:"):
            return "skipped_once", f"already fired once for this {rule.once_per}"
        return "skipped_cooldown", f"fired for this contact less than {rule.cooldown} ago"

    def arm_idle_clocks(self) -> None:
        """Start or restart the idle clocks this event sets on its contact's open
        conversation (rules_engine.domain.timers), in this event's transaction."""
        if not self.rules.idle_rules or self.contact_id is None:
            return
        conversation = self.lifecycle.state(self.contact_id).open_conversation
        if conversation is None:
            return
        opened_now = any(change["operation"] == "open_conversation"
                         and change["conversation_id"] == conversation.id
                         for change in self.changes)
        clocks = idle_clocks(self.rules.idle_rules, conversation, event=self.event,
                             opened_now=opened_now)
        if clocks:
            self.tx.set_timers(clocks)

    def arm_date_timers(self) -> None:
        """Set, move or drop the date timers whose fields this event changed
        (rules_engine.domain.timers), in this event's transaction; a contact merged away
        keeps none (its fields live on the contact it was merged into). A timer whose field
        did not change stays as it is (a date that fired is not set again)."""
        if not self.rules.date_rules or not self.fields_changed:
            return
        timers = []
        for contact_id, name in sorted(self.fields_changed, key=str):
            for rule, _ in self.rules.dated_rules(name):
                self.tx.drop_timer(date_timer_id(rule.id, contact_id))
            state = self.lifecycle.state(contact_id)
            if state.contact.merged_into is None:
                timers += self.rules.date_timers(contact_id, state.fields, field=name,
                                                 after=self.event.timestamp,
                                                 event_id=self.event.id)
        if timers:
            self.tx.set_timers(timers)

    def trace(self, received_at: datetime) -> StoredTrace:
        """The compact trace (see trace.shapes)."""
        event = self.event
        trace: StoredTrace = {
            "event_id": event.id, "type": str(event.type), "channel": event.channel,
            "contact_id": self.contact_id, "conversation_id": self.conversation_id,
            "timestamp": event.timestamp.isoformat(),
            "received_at": received_at.isoformat(), "ruleset_version": self.rules.version,
            "steps": self.steps, "fired": self.fired,
        }
        if event.via is not None:
            trace["actor"], trace["via"] = event.actor, event.via
        elif event.type is EventType.MANUAL:  # who ran the rule
            trace["actor"] = event.actor
        if self.new_contacts:
            trace["created_contact"] = next(iter(self.new_contacts))
        if self.dropped:
            trace["dropped"] = self.dropped
            trace["max_depth"] = self.engine.max_depth
        return trace


class Engine:
    """Evaluates rules for events against a store.

    ``process`` applies an event once (a repeated event id is a reported no-op) and commits
    all its effects together; ``simulate`` does the same work and rolls it back.
    """

    def __init__(
        self,
        store: Store,
        rules: RuleSet,
        *,
        max_depth: int = DEFAULT_MAX_DEPTH,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        if max_depth < 0:
            raise ValueError("max_depth must be >= 0")
        self.store = store
        self._rules = rules
        gc.freeze()  # see replace_rules
        self.max_depth = max_depth
        self.clock = clock
        self._catalog: tuple[str, Catalog] | None = None  # of the rules' version, once built
        self._kept: set[str] = set()  # versions whose catalog this engine saw stored

    @property
    def rules(self) -> RuleSet:
        return self._rules

    def replace_rules(self, rules: RuleSet) -> None:
        """Serve ``rules`` from now on; events already running finish on the set they began with."""
        self._rules = rules
        # A rule set lives long: out of the cyclic collector's reach, its objects cost
        # nothing per event (else every full collection walks all of them, and with 10,000
        # rules that is a quarter of an event's time).
        gc.freeze()

    def catalog(self, rules: RuleSet, *, keep: bool = True) -> Catalog:
        """What the stored traces of ``rules`` leave out (see trace.shapes); with ``keep``,
        stored once per version, in its own transaction, before any trace needs it."""
        if self._catalog is None or self._catalog[0] != rules.version:
            self._catalog = (rules.version, rules.catalog())
        catalog = self._catalog[1]
        if keep and rules.version not in self._kept:
            self.store.run(lambda tx: tx.remember_rule_set(rules.version, catalog, self.clock()))
            self._kept.add(rules.version)
        return catalog

    def process(self, event: Event) -> Result:
        """Apply ``event``: built-in lifecycle, then matching rules, all in one transaction
        (run again from the start if the database reports a transient conflict)."""
        rules = self.rules  # the set this event starts with is the one it finishes with
        catalog = self.catalog(rules)
        return self.store.run(lambda tx: self._process(tx, event, rules, catalog, status="applied"))

    def process_after(self, write: Callable[[StoreTx], bool], event: Event, *,
                      counted_as: str | None = None) -> Result | None:
        """Make ``write``, then apply ``event`` in the same transaction (so that neither is
        kept without the other); when ``write`` returns False, nothing more is done and the
        result is None. With ``counted_as``, what the event did is counted in the database
        under that source, in the same transaction (see ``trace.counts``)."""
        rules = self.rules
        catalog = self.catalog(rules)

        def work(tx: StoreTx) -> Result | None:
            if not write(tx):
                return None
            result = self._process(tx, event, rules, catalog, status="applied")
            if counted_as is not None:
                _count(tx, counted_as, [(event, result)])
            return result

        return self.store.run(work)

    def process_many(self, events: Sequence[Event], *,
                     atomic: bool = False) -> list[Result | RulesEngineError]:
        """Apply several events in one transaction, each inside its own savepoint: an event
        the engine refuses is undone alone and returned as its error, never rolling back
        another; with ``atomic``, a refusal undoes the whole batch instead and is raised as
        BatchRefused. (The whole batch runs again on a transient database conflict.)"""
        rules = self.rules
        catalog = self.catalog(rules)

        def work(tx: StoreTx) -> list[Result | RulesEngineError]:
            outcomes: list[Result | RulesEngineError] = []
            for index, event in enumerate(events):
                try:
                    with nullcontext() if atomic else tx.savepoint():
                        outcomes.append(self._process(tx, event, rules, catalog, status="applied"))
                except RulesEngineError as error:
                    if atomic:
                        raise BatchRefused(index, error) from error
                    outcomes.append(error)
            return outcomes

        return self.store.run(work)

    def fire_due(self, now: datetime, *, limit: int = 200) -> list[tuple[Timer, Result | RulesEngineError]]:
        """Fire up to ``limit`` timers due at ``now`` (earliest first), in one transaction,
        each in its own savepoint; a timer fires only if it is still due, unchanged, once
        its contact is locked, and is removed in the same transaction. Call again until it
        returns nothing. Concurrent callers share the due timers (PostgreSQL: SKIP LOCKED)
        and the ledger fires each firing once. What the firings did is counted in the
        database (source ``timer``) in the same transaction, for whichever process serves
        ``/metrics``."""
        rules = self.rules
        catalog = self.catalog(rules)

        def work(tx: StoreTx) -> list[tuple[Timer, Result | RulesEngineError]]:
            fired = self._fire(tx, lambda: tx.claim_due_timers(now, limit), rules, catalog,
                               "applied")
            _count(tx, "timer", [(timer.event(), outcome) for timer, outcome in fired])
            return fired

        return self.store.run(work)

    def fire_all_due(self, now: datetime, *,
                     limit: int = 200) -> Iterator[tuple[Timer, Result | RulesEngineError]]:
        """Arm the schedules (``arm_schedules``), then run every schedule and fire every
        timer due at ``now``, a batch (one transaction) at a time."""
        self.arm_schedules(now)
        while (batch := self.run_schedule_batch(now, limit=limit)) is not None:
            yield from batch
        while batch := self.fire_due(now, limit=limit):
            yield from batch

    def arm_schedules(self, now: datetime) -> None:
        """Give each enabled schedule rule its timer, due at its cron's next time after
        ``now`` (a schedule counts from the first tick that sees it), and set it again when
        its cron or applies_to changed; drop the timers of schedules no longer in the rules."""
        rules = self.rules
        zone = rules.zone

        def work(tx: StoreTx) -> None:
            unarmed = {rule.id: rule.schedule for rule in rules.schedule_rules
                       if rule.schedule is not None}
            for timer in tx.schedule_timers():
                schedule = unarmed.get(timer.rule_id)
                if schedule is not None and timer.payload.get("cron") == schedule.cron \
                        and timer.payload.get("applies_to") == schedule.applies_to:
                    del unarmed[timer.rule_id]
                else:
                    tx.drop_timer(timer.id)
            if unarmed:
                tx.set_timers([schedule_timer(rule_id, schedule, schedule.next_after(now, zone))
                               for rule_id, schedule in unarmed.items()])

        self.store.run(work)

    def run_schedule_batch(self, now: datetime, *,
                           limit: int = 200) -> list[tuple[Timer, Result | RulesEngineError]] | None:
        """One batch (one transaction) of the earliest schedule due at ``now``: its rule run
        for up to ``limit`` more of the contacts it applies to, by contact id, its progress
        kept in its timer; once every contact has had its run, the timer moves to the
        cron's next time after ``now`` (times missed while no tick ran fire once, late).
        None when no schedule is due."""
        rules = self.rules
        catalog = self.catalog(rules)

        def work(tx: StoreTx) -> list[tuple[Timer, Result | RulesEngineError]] | None:
            timer = tx.claim_due_schedule(now)
            if timer is None:
                return None
            rule = rules.get(timer.rule_id)
            if rule is None or rule.schedule is None or not rule.enabled:
                tx.drop_timer(timer.id)  # the rule went since the last tick armed it
                return []
            zone = rules.zone
            targets = tx.schedule_targets(rule.schedule.applies_to,
                                          after=int(timer.payload.get("after", 0)), limit=limit)
            events = [schedule_event(timer, contact_id, conversation_id)
                      for contact_id, conversation_id in targets]
            ran = [(event, self._run_one(tx, event, rules, catalog, "applied")) for event in events]
            _count(tx, "timer", ran)
            tx.move_timer(
                schedule_timer(rule.id, rule.schedule, timer.due_at, after=targets[-1][0])
                if len(targets) == limit else  # else every contact had its run: the next time
                schedule_timer(rule.id, rule.schedule, rule.schedule.next_after(now, zone)))
            return [(timer, outcome) for _, outcome in ran]

        return self.store.run(work)

    def _fire(self, tx: StoreTx, claim: Callable[[], list[Timer]], rules: RuleSet,
              catalog: Catalog, status: str) -> list[tuple[Timer, Result | RulesEngineError]]:
        """Fire the timers ``claim`` finds (again until one fires, or it finds none)."""
        fired: list[tuple[Timer, Result | RulesEngineError]] = []
        # A batch whose every timer had moved on claims again: nothing fired means nothing due.
        while not fired and (claimed := claim()):
            for timer in claimed:
                if tx.delete_timer(timer):  # else moved on or dropped since the claim read it
                    fired.append((timer, self._fire_one(tx, timer, rules, catalog, status)))
        return fired

    def _fire_one(self, tx: StoreTx, timer: Timer, rules: RuleSet, catalog: Catalog,
                  status: str) -> Result | RulesEngineError:
        """A claimed timer's firing, in its own savepoint; what it did, or why it could not."""
        return self._run_one(tx, timer.event(), rules, catalog, status)

    def _run_one(self, tx: StoreTx, event: Event, rules: RuleSet, catalog: Catalog,
                 status: str) -> Result | RulesEngineError:
        """A timer's or a schedule's firing (``event``), in its own savepoint; what it did,
        or why it could not."""
        try:
            with tx.savepoint():
                return self._process(tx, event, rules, catalog, status=status)
        except RulesEngineError as error:  # e.g. its contact is gone: never retried
            return error
        except DATABASE_ERRORS:
            raise  # the database's: the batch runs again (Store.run) or fails whole
        except Exception as error:  # a malformed timer must not block every later one
            log.exception("%s cannot fire; it is dropped", event.id)
            return RulesEngineError(f"{event.id} cannot fire: {error!r}")

    def simulate_then_advance(self, event: Event, advance: timedelta) -> list[Result | RulesEngineError]:
        """What ``process`` would do for ``event``, then what the timers it set (and those
        that their firings set in turn) would do over the following ``advance``; timers
        already in the store fire only if the event moved them; nothing is written."""
        rules = self.rules
        catalog = self.catalog(rules, keep=False)
        until = event.timestamp + advance
        with self.store.dry_run() as tx:
            results: list[Result | RulesEngineError] = [
                self._process(tx, event, rules, catalog, status="simulated")]
            ours = {event.id}  # the events whose timers fire

            def claim() -> list[Timer]:
                return tx.due_timers_set_by(ours, until, 200)

            while fired := self._fire(tx, claim, rules, catalog, "simulated"):
                for timer, outcome in fired:
                    ours.add(timer.event().id)
                    results.append(outcome)
            return results

    def simulate(self, event: Event) -> Result:
        """What ``process`` would do for ``event`` now; nothing is written."""
        rules = self.rules
        with self.store.dry_run() as tx:
            return self._process(tx, event, rules, self.catalog(rules, keep=False),
                                 status="simulated")

    def _process(self, tx: StoreTx, event: Event, rules: RuleSet, catalog: Catalog, *,
                 status: str) -> Result:
        received_at = self.clock()
        simulating = status == "simulated"
        refused = rules.params_problems(event)  # a custom event's declared params' schema
        if refused:
            raise EventError.of_all(refused)
        if event.type in MESSAGE_STATUS_TYPES:
            found = aimed(tx, event)
            if found is None:
                return Result(event.id, "noop", None, None, reason="no message of ours has this id")
            event = found
        run = _Run(self, tx, event, rules)
        contact_id = run.resolve_contact()  # its row is locked from here on
        first_time = tx.record_event(event.id, str(event.type), event.channel, received_at,
                                     contact_id=contact_id)
        if not first_time and not simulating:  # a simulation runs even an event seen before
            first = read_trace(tx, event.id)
            if first is None:  # its trace was pruned
                return Result(event.id, "duplicate", contact_id, None)
            return Result(event.id, "duplicate", first["contact_id"], None, list(first["fired"]),
                          [], first["conversation_id"], first_trace=first)
        run.run(contact_id)
        run.arm_idle_clocks()
        run.arm_date_timers()
        trace = run.trace(received_at)
        if first_time:
            tx.save_trace(event.id, to_store(trace), received_at)
        reason = None
        if event.type in COMMAND_TYPES and not run.changes and not simulating:
            status = "noop"  # the product document's "reported no-op"
            reason = "; ".join(line["detail"] for line in run.builtin) or "nothing to change"
        return Result(event.id, status, contact_id, trace, run.fired, run.changes,
                      run.conversation_id, reason, catalog)


# Events for a contact rather than a conversation: their rules act on the contact's open
# conversation, if any, on its channel (else the channel of its first identity).
_FOR_A_CONTACT = frozenset({EventType.MANUAL, EventType.DATE, EventType.SCHEDULE})


def _fields_changed(fact: Fact) -> list[tuple[int, str | None]]:
    """The (contact, field) ``fact`` changed: the field set, or every field of both
    contacts of a merge (None); nothing for other facts."""
    if fact.type is EventType.CONTACT_FIELD_SET:
        return [(fact.contact_id, str(fact.params["name"]))]
    if fact.type is EventType.CONTACTS_MERGED:
        return [(fact.contact_id, None), (int(fact.params["secondary_contact_id"]), None)]
    return []


def _placed(line: StoredOutcome, path: str) -> StoredOutcome:
    """An action's trace line, with its ``path`` when it is inside a choose (a line
    without one is the rule's next top-level action: see trace.shapes)."""
    if "/choose/" in path:
        line["path"] = path
    return line


def _from(start: str) -> int | str:
    """Where a resumed rule's actions start, as its trace keeps it: the index of a
    top-level action (as before branches existed), or the path inside a choose."""
    top, _, rest = start.removeprefix("actions/").partition("/")
    return int(top) if not rest and top.isdigit() else start or 0


def _count(tx: StoreTx, source: str,
           outcomes: Iterable[tuple[Event, Result | RulesEngineError]]) -> None:
    """Add what the applied events did to ``source``'s counts in the database."""
    counts: Counter[CountKey] = Counter()
    for event, outcome in outcomes:
        if isinstance(outcome, Result):
            counts += tally(event, outcome.status, outcome.stored_trace)
    if counts:
        tx.add_counts(source, counts)


def idle_clocks(rules: Iterable[Rule], conversation: Conversation, *, event: Event,
                opened_now: bool) -> list[Timer]:
    """The idle clocks ``event`` starts or restarts on the contact's open ``conversation``:
    all of them when it opened now, else those a message of this sender restarts."""
    sender = ("contact" if event.type is EventType.MESSAGE_RECEIVED else
              ("bot" if sent_by_bot(event.actor) else "agent")
              if event.type is EventType.MESSAGE_SENT else None)
    if sender is None and not opened_now:
        return []
    return [idle_timer(rule.id, rule.idle, contact_id=conversation.contact_id,
                       conversation=conversation, at=event.timestamp, event_id=event.id)
            for rule in rules
            if rule.idle and (opened_now or rule.idle.restarted_by(sender or ""))
            and (rule.channels is None or conversation.channel in rule.channels)]


def run_by_hand(rules: RuleSet, rule_id: object) -> None:
    """Refuse a run by hand of a rule that does not exist or whose trigger is not ``manual``."""
    rule = rules.get(str(rule_id))
    if rule is None:
        raise NotFoundError(f"no rule '{rule_id}'", path="params/rule_id",
                            hint="`rules-engine validate` lists the rules")
    if rule.event is not EventType.MANUAL:
        raise EventError(f"rule '{rule.id}' is not run by hand (its trigger is {rule.event})",
                         path="params/rule_id",
                         hint="give the rule `trigger: {event: manual}` to run it by hand")


def counted(count: int, noun: str) -> str:
    """``1 timer``, ``2 timers``: a count with its noun, for summaries people read."""
    return f"{count} {noun}" + ("" if count == 1 else "s")


def firings_summary(firings: Sequence[tuple[Timer, Result | RulesEngineError]]) -> str:
    """What firing timers did, in a few words: ``fired 2 timers (3 rules fired, 1 refused)``."""
    if not firings:
        return "fired 0 timers"
    rules = sum(len(outcome.fired) for _, outcome in firings if isinstance(outcome, Result))
    refused = sum(1 for _, outcome in firings if isinstance(outcome, RulesEngineError))
    details = counted(rules, "rule") + " fired" + (f", {refused} refused" if refused else "")
    return f"fired {counted(len(firings), 'timer')} ({details})"
