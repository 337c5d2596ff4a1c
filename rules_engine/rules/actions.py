"""The action registry: each action type compiles its (schema-checked) arguments once and runs.

Adding an action is one class here plus its argument schema in ``schema/rules.schema.json``
(the single source of truth for the format; a test keeps the two in step).
"""
from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from rules_engine.domain.balancing import Strategy
from rules_engine.domain.errors import (
    ExpressionError,
    RulesEngineError,
    RuleValidationError,
)
from rules_engine.domain.lifecycle import Fact, Lifecycle, Outcome
from rules_engine.domain.model import (
    AnyEventType,
    CloseSource,
    CustomEventType,
    EventType,
    OpenSource,
)
from rules_engine.domain.redaction import CREDENTIAL_HEADERS, redact_headers, redact_url
from rules_engine.domain.timers import parse_duration
from rules_engine.formats.events import Declared, params_problems
from rules_engine.language.conditions import Condition, ConditionFailed, build_condition
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
    path: str  # the action's place in its rule, e.g. actions/2 or actions/0/choose/default/1
    context: Mapping[str, Any]
    now: datetime
    rule_digest: str = ""  # the rule's actions' fingerprint (a wait keeps it to resume)
    declared: Declared = field(default_factory=dict)  # the custom events' params' schemas


class Action:
    """Base of the registry's entries: ``name`` is the YAML key, ``run`` does the work."""

    name: ClassVar[str]
    emits: tuple[AnyEventType, ...] = ()  # the facts a run that changes state emits

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


class AddNote(Action):
    """Leave an internal note for the agents on the open conversation (templated text;
    never sent to the contact)."""

    name = "add_note"

    def __init__(self, arguments: Mapping[str, Any] | None, roots: Mapping[str, Spec]) -> None:
        super().__init__(arguments, roots)
        self.text = compile_template(self.arguments["text"], roots, path="text")

    def run(self, run: ActionRun) -> Outcome:
        try:
            text = self.text.render(run.context, now=run.now)
        except ExpressionRuntimeError as error:
            return Outcome(self.name, False, f"text failed: {error}", failed=True)
        return run.lifecycle.add_note(run.contact_id, str(text), by=f"rule '{run.rule_id}'")


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


class Emit(Action):
    """Start the rules that trigger on a custom event (``event``), for the same contact and
    conversation, with ``params`` (templates rendered for this event): a fact of this
    event's chain, so its depth counts toward the engine's ``max_depth``."""

    name = "emit"

    def __init__(self, arguments: Mapping[str, Any] | None, roots: Mapping[str, Spec]) -> None:
        super().__init__(arguments, roots)
        self.event = CustomEventType(self.arguments["event"])
        self.emits = (self.event,)
        self.params = compile_template(self.arguments.get("params", {}), roots, path="params")

    def run(self, run: ActionRun) -> Outcome:
        try:
            params = self.params.render(run.context, now=run.now)
        except ExpressionRuntimeError as error:
            return Outcome(self.name, False, f"params failed: {error}", failed=True)
        validator = run.declared.get(self.event)
        broken = params_problems(validator, params) if validator is not None else []
        if broken:
            return Outcome(self.name, False, f"{self.event}'s declared schema refuses "
                           f"{broken[0].path}: {broken[0].message}", failed=True)
        conversation_id = run.context["conversation"]["id"]
        fact = Fact(self.event, run.contact_id, run.channel, conversation_id, dict(params))
        return Outcome(self.name, True, f"emitted {self.event}", [fact],
                       conversation_id=conversation_id)


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
        sequence, index = run.path.rsplit("/", 1)
        resume = f"{sequence}/{int(index) + 1}"  # the next action, in the wait's own branch
        return run.lifecycle.wait(
            run.contact_id, rule_id=run.rule_id, due_at=run.now + self.duration, payload={
                "resume": resume, "if": self.arguments.get("if"), "digest": run.rule_digest,
                "trigger": run.context["event"]["type"], "channel": run.channel,
                "message": run.context.get("message"), "params": run.context["params"],
                "for": self.arguments["for"]})


MAX_CHOOSE_DEPTH = 3  # a choose inside a choose inside a choose, and no deeper


class ActionProblems(RuleValidationError):
    """Every problem found in one action's arguments, each with its ``path`` (a choose
    reports those of all its branches at once); worded as the first."""

    def __init__(self, problems: Sequence[RulesEngineError]) -> None:
        first = problems[0]
        super().__init__(first.message, path=first.path, hint=first.hint)
        self.problems: list[RulesEngineError] = list(problems)


@dataclass(frozen=True, slots=True)
class Branch:
    """One branch of a ``choose``: its conditions and the actions they run."""

    condition: Condition
    actions: tuple[Action, ...]


@dataclass(frozen=True, slots=True)
class Choice:
    """What a ``choose`` decided: the branch that runs (its index, ``"default"``, or None
    when none held and there is no default), the place of its actions under the choose
    (``branches/1/actions``, ``default``), and each condition it evaluated, logged by path
    under the choose as a rule's are (a failed one with its error)."""

    branch: int | str | None
    place: str | None
    actions: tuple[Action, ...]
    log: dict[str, Any]


class Choose(Action):
    """Run the actions of the first branch whose conditions hold, else the ``default``
    ones (``- choose: {branches: [{conditions, actions}, ...], default: [...]}``); the
    engine runs what ``pick`` chose, then the actions after the choose."""

    name = "choose"

    def __init__(self, arguments: Mapping[str, Any] | None, roots: Mapping[str, Spec]) -> None:
        super().__init__(arguments, roots)
        problems: list[RulesEngineError] = []
        self.branches = tuple(self._branch(index, raw, roots, problems)
                              for index, raw in enumerate(self.arguments["branches"]))
        self.default: tuple[Action, ...] | None = None
        if "default" in self.arguments:
            self.default = _compile_sequence(self.arguments["default"], roots, "default", problems)
        problems.extend(self._emptiness())
        depth = self.depth()
        if depth > MAX_CHOOSE_DEPTH:
            problems.append(RuleValidationError(
                f"choose is nested {depth} deep; at most {MAX_CHOOSE_DEPTH}",
                path="branches", hint="flatten it: join nested conditions with `all:`, or move "
                "the innermost choice into a rule of its own"))
        if problems:
            raise ActionProblems(problems)

    @staticmethod
    def _branch(index: int, raw: Mapping[str, Any], roots: Mapping[str, Spec],
                problems: list[RulesEngineError]) -> Branch:
        place = f"branches/{index}"
        broken: list[ExpressionError] = []
        condition = build_condition(raw["conditions"], roots, f"{place}/conditions", broken)
        problems.extend(broken)
        return Branch(condition, _compile_sequence(raw["actions"], roots, f"{place}/actions",
                                                   problems))

    def _emptiness(self) -> Iterator[RuleValidationError]:
        if not self.branches:
            yield RuleValidationError(
                "a choose with no branches: there is nothing to choose from", path="branches",
                hint="add a branch `{conditions: ..., actions: [...]}`, or write the default's "
                     "actions in place of the choose")
        for index, raw in enumerate(self.arguments["branches"]):
            if not raw["actions"]:
                yield RuleValidationError(
                    f"branch {index} has no actions", path=f"branches/{index}/actions",
                    hint="give it an action, or drop the branch")
        if self.arguments.get("default") == []:
            yield RuleValidationError("the default has no actions", path="default",
                                      hint="drop `default:` (when no branch holds, nothing "
                                           "runs) or give it an action")

    def sequences(self) -> Iterator[tuple[str, tuple[Action, ...]]]:
        """(place under the choose, actions) of each branch, then of the default."""
        for index, branch in enumerate(self.branches):
            yield f"branches/{index}/actions", branch.actions
        if self.default is not None:
            yield "default", self.default

    def depth(self) -> int:
        """How many choose deep this one is: 1, or more with a choose in a branch."""
        return 1 + max((action.depth() for _, actions in self.sequences()
                        for action in actions if isinstance(action, Choose)), default=0)

    def pick(self, context: Mapping[str, Any], now: datetime) -> Choice:
        """The branch that runs: the first whose conditions hold (a condition that fails
        counts as false), else the default; the later branches are not tried."""
        log: dict[str, Any] = {}
        for index, branch in enumerate(self.branches):
            try:
                if branch.condition.holds(context, now, log):
                    return Choice(index, f"branches/{index}/actions", branch.actions, log)
            except ConditionFailed:
                continue  # logged with its error
        if self.default is not None:
            return Choice("default", "default", self.default, log)
        return Choice(None, None, (), log)

    def shown_arguments(self) -> dict[str, Any]:
        """The branches and default with each action's arguments as traces show them."""
        def shown(actions: tuple[Action, ...]) -> list[dict[str, Any]]:
            return [{action.name: action.shown_arguments()} for action in actions]
        return {"branches": [{"conditions": raw["conditions"], "actions": shown(branch.actions)}
                             for raw, branch in zip(self.arguments["branches"], self.branches,
                                                    strict=True)],
                **({"default": shown(self.default)} if self.default is not None else {})}


ACTIONS: dict[str, type[Action]] = {
    action.name: action
    for action in (OpenConversation, CloseConversation, Assign, Unassign, SetBotStatus, AddTag,
                   RemoveTag, SetField, AddNote, SendMessage, SendTemplate, HttpRequest, Wait,
                   Choose, Emit)
}


def compile_action(
    name: str, arguments: Mapping[str, Any] | None, roots: Mapping[str, Spec], path: str
) -> Action:
    """Build the registry's action ``name`` from schema-checked arguments.

    Raises ActionProblems listing every problem (an expression that does not compile, an
    argument that breaks a rule the schema cannot state), each with its ``path`` set.
    """
    try:
        return ACTIONS[name](arguments, roots)
    except ActionProblems as failed:
        problems = failed.problems
    except (ExpressionError, RuleValidationError) as error:
        problems = [error]
    for problem in problems:
        problem.path = f"{path}/{name}/{problem.path or 'expr'}"
    raise ActionProblems(problems)


def _compile_sequence(raw: Sequence[Mapping[str, Any]], roots: Mapping[str, Spec], path: str,
                      problems: list[RulesEngineError]) -> tuple[Action, ...]:
    """The actions of a list (at ``path``); every problem goes to ``problems``."""
    actions = []
    for index, item in enumerate(raw):
        (name, arguments), = item.items()
        try:
            actions.append(compile_action(name, arguments, roots, f"{path}/{index}"))
        except ActionProblems as failed:
            problems.extend(failed.problems)
    return tuple(actions)


def walk(actions: Sequence[Action], base: str = "actions") -> Iterator[tuple[str, Action]]:
    """Every action with its path, those in a choose's branches included (in order, each
    choose before its branches' actions)."""
    for index, action in enumerate(actions):
        path = f"{base}/{index}"
        yield path, action
        if isinstance(action, Choose):
            for place, sequence in action.sequences():
                yield from walk(sequence, f"{path}/choose/{place}")


@dataclass(frozen=True, slots=True)
class Frame:
    """A list of actions being run: the list, its path, and where the run starts in it."""

    actions: tuple[Action, ...]
    base: str  # e.g. actions, or actions/2/choose/branches/0/actions
    start: int


_STEP = re.compile(r"/choose/(branches/\d+/actions|default)/(\d+)")


def frames_at(actions: tuple[Action, ...], path: str) -> list[Frame] | None:
    """Where a run that resumes at ``path`` (the action after a wait: ``actions/3``, or
    ``actions/2/choose/branches/0/actions/1`` inside a branch) goes: the list the path is
    in from there on, then each enclosing list from just after its choose, innermost
    first. None when ``path`` names no such place in ``actions``."""
    top = re.fullmatch(r"actions/(\d+)((?:/choose/(?:branches/\d+/actions|default)/\d+)*)",
                       path)
    if top is None:
        return None
    frames: list[Frame] = []
    sequence, base, index = actions, "actions", int(top.group(1))
    for place, inner in _STEP.findall(top.group(2)):
        chooser = sequence[index] if index < len(sequence) else None
        found = dict(chooser.sequences()).get(place) if isinstance(chooser, Choose) else None
        if found is None:
            return None
        frames.append(Frame(sequence, base, index + 1))
        sequence, base, index = found, f"{base}/{index}/choose/{place}", int(inner)
    if index > len(sequence):
        return None
    frames.append(Frame(sequence, base, index))
    return frames[::-1]
