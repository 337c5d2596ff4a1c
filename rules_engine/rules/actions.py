"""The action registry: each action type compiles its (schema-checked) arguments once and runs.

Adding an action is one class here plus its argument schema in ``schema/rules.schema.json``
(the single source of truth for the format; a test keeps the two in step).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from rules_engine.domain.balancing import Strategy
from rules_engine.domain.errors import ExpressionError, RuleValidationError
from rules_engine.domain.lifecycle import Lifecycle, Outcome
from rules_engine.domain.model import CloseSource, EventType, OpenSource
from rules_engine.domain.redaction import CREDENTIAL_HEADERS, redact_headers, redact_url
from rules_engine.domain.timers import parse_duration
from rules_engine.language.context import Spec
from rules_engine.language.expressions import (
    CompiledExpression,
    ExpressionRuntimeError,
    compile_expression,
)
from rules_engine.language.templates import compile_template
from rules_engine.language.url_template import compile_url


@dataclass(frozen=True, slots=True)
class ActionRun:
    """What an action needs at run time: the state changes, the triggering contact, the context."""

    lifecycle: Lifecycle
    contact_id: int
    channel: str | None
    rule_id: str
    path: str  # the action's place in its rule, e.g. actions/2
    context: Mapping[str, Any]
    now: datetime
    rule_digest: str = ""  # the rule's actions' fingerprint (a wait keeps it to resume)


class Action:
    """Base of the registry's entries: ``name`` is the YAML key, ``run`` does the work."""

    name: ClassVar[str]
    emits: ClassVar[tuple[EventType, ...]] = ()  # the facts a run that changes state emits

    def __init__(self, arguments: Mapping[str, Any] | None, roots: Mapping[str, Spec]) -> None:
        self.arguments: dict[str, Any] = dict(arguments or {})

    def run(self, run: ActionRun) -> Outcome:
        raise NotImplementedError

    def shown_arguments(self) -> dict[str, Any]:
        """The arguments as traces show them."""
        return self.arguments


class OpenConversation(Action):
    """Open a conversation for the triggering contact (source ``automation``)."""

    name = "open_conversation"
    emits = (EventType.CONVERSATION_OPENED,)

    def run(self, run: ActionRun) -> Outcome:
        return run.lifecycle.open(
            run.contact_id, channel=run.channel, source=OpenSource.AUTOMATION, actor=run.rule_id,
            assignee=self.arguments.get("assignee"), team=self.arguments.get("team"),
        )


class CloseConversation(Action):
    """Close the triggering contact's open conversation (source ``automation``)."""

    name = "close_conversation"
    emits = (EventType.CONVERSATION_CLOSED,)

    def run(self, run: ActionRun) -> Outcome:
        return run.lifecycle.close(run.contact_id, source=CloseSource.AUTOMATION,
                                   actor=run.rule_id, note=self.arguments.get("note"))


# the options of a balanced assign, which only a strategy reads
_BALANCING_OPTIONS = ("available_only", "max_open")


class Assign(Action):
    """Assign the open conversation to a user and/or a team; with a ``strategy``, to a free
    member of the team (``round_robin`` or ``least_open``, ``available_only``, ``max_open``),
    or, when nobody is free, to the team alone (``conversation.unassignable``)."""

    name = "assign"
    emits = (EventType.CONVERSATION_ASSIGNED, EventType.CONVERSATION_UNASSIGNABLE)

    def __init__(self, arguments: Mapping[str, Any] | None, roots: Mapping[str, Spec]) -> None:
        super().__init__(arguments, roots)
        strategy = self.arguments.get("strategy")
        self.strategy = Strategy(strategy) if strategy is not None else None
        if self.strategy is None:
            for option in _BALANCING_OPTIONS:
                if option in self.arguments:
                    raise RuleValidationError(
                        f"{option} only applies with a strategy", path=option,
                        hint="add strategy: round_robin (or least_open), or remove "
                             f"{option}")
        elif "user" in self.arguments:
            raise RuleValidationError(
                "a strategy chooses a member of a team, but `user` names the assignee",
                path="strategy", hint="give team: instead of user: (or remove strategy)")
        elif "team" not in self.arguments:
            raise RuleValidationError("a strategy needs the team to choose from",
                                      path="strategy", hint="add team: support")

    def run(self, run: ActionRun) -> Outcome:
        by = f"rule '{run.rule_id}'"
        if self.strategy is not None:
            return run.lifecycle.assign_balanced(
                run.contact_id, team=self.arguments["team"], strategy=self.strategy,
                available_only=bool(self.arguments.get("available_only", False)),
                max_open=self.arguments.get("max_open"), by=by)
        return run.lifecycle.assign(run.contact_id, user=self.arguments.get("user"),
                                    team=self.arguments.get("team"), by=by)


class Unassign(Action):
    """Take the open conversation from its user (``unassign: {}``), and from its team too
    with ``team: true``."""

    name = "unassign"
    emits = (EventType.CONVERSATION_UNASSIGNED,)

    def run(self, run: ActionRun) -> Outcome:
        return run.lifecycle.unassign(run.contact_id, team=bool(self.arguments.get("team")),
                                      by=f"rule '{run.rule_id}'")


class SetBotStatus(Action):
    """Hand the open conversation to a human (``paused``) or back to the bot (``active``):
    the state Dialogflow's ``RB_BOTSTATUS`` sets."""

    name = "set_bot_status"
    emits = (EventType.BOT_STATUS_CHANGED,)

    def __init__(self, arguments: Any, roots: Mapping[str, Spec]) -> None:
        super().__init__({"status": arguments}, roots)
        self.active = arguments == "active"

    def run(self, run: ActionRun) -> Outcome:
        return run.lifecycle.set_bot_status(run.contact_id, self.active, run.channel)


class _TagAction(Action):
    """Takes one tag or several, in any of the schema's forms (``vip``, ``[a, b]``,
    ``{tag: vip}``, ``{tags: [a, b]}``)."""

    def __init__(self, arguments: Any, roots: Mapping[str, Spec]) -> None:
        if isinstance(arguments, str):
            arguments = {"tag": arguments}
        elif isinstance(arguments, list):
            arguments = {"tags": arguments}
        super().__init__(arguments, roots)
        self.tags = ([self.arguments["tag"]] if "tag" in self.arguments
                     else list(self.arguments["tags"]))


class AddTag(_TagAction):
    """Tag the triggering contact."""

    name = "add_tag"
    emits = (EventType.CONTACT_TAG_ADDED,)

    def run(self, run: ActionRun) -> Outcome:
        return run.lifecycle.add_tags(run.contact_id, self.tags, run.channel)


class RemoveTag(_TagAction):
    """Remove tags from the triggering contact."""

    name = "remove_tag"
    emits = (EventType.CONTACT_TAG_REMOVED,)

    def run(self, run: ActionRun) -> Outcome:
        return run.lifecycle.remove_tags(run.contact_id, self.tags, run.channel)


class SetField(Action):
    """Set a contact attribute to a literal ``value`` or to the value of ``expr``."""

    name = "set_field"
    emits = (EventType.CONTACT_FIELD_SET,)

    def __init__(self, arguments: Mapping[str, Any] | None, roots: Mapping[str, Spec]) -> None:
        super().__init__(arguments, roots)
        source = self.arguments.get("expr")
        self.expression: CompiledExpression | None = (
            compile_expression(source, roots) if source is not None else None
        )

    def run(self, run: ActionRun) -> Outcome:
        value = self.arguments.get("value")
        if self.expression is not None:
            try:
                value = self.expression.evaluate(run.context, now=run.now)
            except ExpressionRuntimeError as error:
                return Outcome("set_field", False, f"expr failed: {error}", failed=True)
            if not isinstance(value, (str, int, float, bool, type(None))):
                return Outcome("set_field", False,
                               f"expr gave a {type(value).__name__}; fields hold plain values",
                               failed=True)
        return run.lifecycle.set_field(run.contact_id, self.arguments["name"], value,
                                       run.channel, by=f"rule '{run.rule_id}'")


def _identity_on(run: ActionRun, channel: str) -> dict[str, Any] | None:
    """The contact's identity on ``channel``, to send to."""
    return next((i for i in run.lifecycle.state(run.contact_id).identities
                 if i["channel"] == channel), None)


def _queue_message(run: ActionRun, action: str, identity: Mapping[str, Any],
                   content: dict[str, Any]) -> Outcome:
    """Queue ``content`` for the contact's ``identity``; the worker sends it with the
    channel's own send API."""
    channel = identity["channel"]
    return run.lifecycle.queue_outbound(
        action=action, rule_id=run.rule_id, path=run.path, target="message",
        recipient=identity["external_id"], url=None, method="POST", headers={},
        body={"channel": channel, **content}, channel=channel, contact_id=run.contact_id)


class SendMessage(Action):
    """Reply to the contact on their channel, through the outbox (on Messenger, with a
    message ``tag`` to write outside the 24-hour window)."""

    name = "send_message"

    def __init__(self, arguments: Mapping[str, Any] | None, roots: Mapping[str, Spec]) -> None:
        super().__init__(arguments, roots)
        self.text = compile_template(self.arguments["text"], roots, path="text")

    def run(self, run: ActionRun) -> Outcome:
        wanted = self.arguments.get("channel") or run.channel
        identity = _identity_on(run, wanted) if wanted else None
        if identity is None:
            return Outcome(self.name, False, f"the contact has no {wanted} identity to reply on",
                           failed=True)
        try:
            text = self.text.render(run.context, now=run.now)
        except ExpressionRuntimeError as error:
            return Outcome(self.name, False, f"text failed: {error}", failed=True)
        tag = {"tag": self.arguments["tag"]} if "tag" in self.arguments else {}
        return _queue_message(run, self.name, identity, {"text": str(text), **tag})


class SendTemplate(Action):
    """Send an approved WhatsApp message template to the contact's WhatsApp identity, at any
    time (free text needs the contact to have written in the last 24 hours)."""

    name = "send_template"

    def __init__(self, arguments: Mapping[str, Any] | None, roots: Mapping[str, Spec]) -> None:
        super().__init__(arguments, roots)
        self.parameters = compile_template(self.arguments.get("parameters", []), roots,
                                           path="parameters")

    def run(self, run: ActionRun) -> Outcome:
        identity = _identity_on(run, "whatsapp")
        if identity is None:
            return Outcome(self.name, False, "the contact has no whatsapp identity", failed=True)
        try:
            parameters = self.parameters.render(run.context, now=run.now)
        except ExpressionRuntimeError as error:
            return Outcome(self.name, False, f"parameters failed: {error}", failed=True)
        template = {"name": self.arguments["name"], "language": self.arguments["language"],
                    "parameters": parameters}
        return _queue_message(run, self.name, identity, {"template": template})


# Headers the worker writes itself (the message's framing, the call's key): never a rule's.
_WORKER_HEADERS = frozenset({"connection", "content-length", "expect", "host",
                             "idempotency-key", "keep-alive", "te", "trailer",
                             "transfer-encoding", "upgrade"})
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e\xa0-\xff]*")  # one line of printable Latin-1


def _check_header(name: str, value: str) -> None:
    """RuleValidationError for a header a rule may not set (in any letter case), or a value
    HTTP cannot carry."""
    lowered = name.lower()
    if lowered in CREDENTIAL_HEADERS:
        raise RuleValidationError(
            f"a rule may not set {name}: rule files carry no credentials", path=f"headers/{name}",
            hint="a key the receiver takes in a header of its own (e.g. X-Api-Key) is sent as "
                 "written, shown redacted by the API and never sent anywhere else")
    if lowered in _WORKER_HEADERS:
        raise RuleValidationError(f"a rule may not set {name}: the worker writes it itself",
                                  path=f"headers/{name}", hint=f"remove {name}")
    if not _HEADER_VALUE.fullmatch(value):
        raise RuleValidationError(f"the value of {name} is not one line of printable text",
                                  path=f"headers/{name}",
                                  hint="remove line breaks, control and non-Latin-1 characters")


class HttpRequest(Action):
    """Call an external URL (a CRM, a ticketing system) with a templated JSON body."""

    name = "http_request"

    def __init__(self, arguments: Mapping[str, Any] | None, roots: Mapping[str, Spec]) -> None:
        super().__init__(arguments, roots)
        self.headers: dict[str, str] = dict(self.arguments.get("headers", {}))
        for header, value in self.headers.items():
            _check_header(header, value)
        self.url = compile_url(self.arguments["url"], roots)
        self.body = compile_template(self.arguments.get("body"), roots, path="body")

    def shown_arguments(self) -> dict[str, Any]:
        """The arguments without the secrets the URL's query or a header may hold."""
        return {**self.arguments, "url": redact_url(self.arguments["url"]),
                **({"headers": redact_headers(self.headers)} if self.headers else {})}

    def run(self, run: ActionRun) -> Outcome:
        try:
            url, body = self.url.render(run.context, now=run.now), self.body.render(run.context, now=run.now)
        except ExpressionRuntimeError as error:
            return Outcome(self.name, False, f"template failed: {error}", failed=True)
        return run.lifecycle.queue_outbound(
            action=self.name, rule_id=run.rule_id, path=run.path, target="http", recipient=None,
            url=url, method=self.arguments.get("method", "POST"), headers=self.headers, body=body)


class Wait(Action):
    """Run the rule's remaining actions later (``- wait: 2h`` or ``{for: 2h, if: ...}``): the
    engine writes a durable timer instead of running them now (see rules_engine.domain.timers)."""

    name = "wait"

    def __init__(self, arguments: Any, roots: Mapping[str, Spec]) -> None:
        super().__init__({"for": arguments} if isinstance(arguments, str) else arguments, roots)
        self.duration = parse_duration(self.arguments["for"])
        source = self.arguments.get("if")
        self.condition: CompiledExpression | None = None
        if source is not None:
            try:
                self.condition = compile_expression(source, roots)
            except ExpressionError as error:
                error.path = "if"
                raise

    def run(self, run: ActionRun) -> Outcome:
        resume = int(run.path.rsplit("/", 1)[1]) + 1
        return run.lifecycle.wait(
            run.contact_id, rule_id=run.rule_id, due_at=run.now + self.duration, payload={
                "resume": resume, "if": self.arguments.get("if"), "digest": run.rule_digest,
                "trigger": run.context["event"]["type"], "channel": run.channel,
                "message": run.context.get("message"), "params": run.context["params"],
                "for": self.arguments["for"]})


ACTIONS: dict[str, type[Action]] = {
    action.name: action
    for action in (OpenConversation, CloseConversation, Assign, Unassign, SetBotStatus, AddTag,
                   RemoveTag, SetField, SendMessage, SendTemplate, HttpRequest, Wait)
}


def compile_action(
    name: str, arguments: Mapping[str, Any] | None, roots: Mapping[str, Spec], path: str
) -> Action:
    """Build the registry's action ``name`` from schema-checked arguments.

    Raises ExpressionError when an argument expression does not compile, RuleValidationError
    when an argument breaks a rule the schema cannot state; either with ``path`` set.
    """
    try:
        return ACTIONS[name](arguments, roots)
    except (ExpressionError, RuleValidationError) as error:
        error.path = f"{path}/{name}/{error.path or 'expr'}"
        raise
