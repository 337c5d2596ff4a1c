"""The shapes of a trace, in its two forms, as the JSON they are.

An event's trace is a list of steps (the event, then each fact it raised); a step lists the
rules that triggered on it; a rule entry lists its condition lines and action lines. Each
has a compact form, the one the engine writes and the store keeps (``Stored*``), and an
expanded form, the one ``explain``, the API and rule tests read. ``forms.expand`` turns the
first into the second with the rule set's catalog (``CatalogEntry`` per rule).

The forms are ``TypedDict``s rather than classes because they are JSON documents: the store
keeps them as such, the API returns them as such, and traces written by earlier releases
read through the same types. (No ``from __future__ import annotations`` here: the
required and optional keys must be readable at run time, by ``typing.get_type_hints`` and
the ``__required_keys__`` the tests check traces against.)
"""

from typing import Any, NotRequired, TypedDict

# -- compact: written by the engine, kept by the store ------------------------------------


class LoggedValue(TypedDict):
    """A condition's result with the value it saw (when that value was not just true or
    false) or the error it raised."""

    result: bool
    value: NotRequired[Any]
    error: NotRequired[str]


# A condition's stored line: its result alone when the value was a boolean.
StoredCondition = bool | LoggedValue


class StoredOutcome(TypedDict):
    """What an action (``action`` set) or a built-in operation did. ``operation`` is left
    out when it is the action's name; ``conversation_id`` when there was none; ``path``
    when the action is the rule's next top-level one (it is set inside a choose's
    branches).

    A choose's line has outcome ``chosen`` (``noop`` when no branch held and there is no
    default), ``branch`` (the index of the branch that ran, or ``default``), and
    ``conditions``: each condition it tried, keyed by the branch's index and the path
    under the branch's conditions (``0`` for a branch's one condition, ``1/all/0``), its
    branches after the one that ran left out (they were not tried). Its ``detail`` is
    left out: ``forms.expand`` words it from these."""

    outcome: str
    detail: NotRequired[str]
    action: NotRequired[str]
    operation: NotRequired[str | None]
    conversation_id: NotRequired[int]
    path: NotRequired[str]
    branch: NotRequired[int | str]
    conditions: NotRequired[dict[str, StoredCondition]]


# One rule's entry. ``result`` is left out when implied (conditions and no actions: they
# were false; actions: it fired); ``from`` is where a resumed rule's actions start (the
# index of a top-level action, or the path of one inside a choose). ``conditions`` also
# holds the result of the ``if`` of the wait a resumed rule waited on, by its full path.
StoredRule = TypedDict("StoredRule", {
    "rule_id": str,
    "result": NotRequired[str],
    "detail": NotRequired[str],
    "conditions": NotRequired[dict[str, StoredCondition]],  # path (under conditions) -> line
    "actions": NotRequired[list[StoredOutcome]],
    "from": NotRequired[int | str],
})


class Dropped(TypedDict):
    """A fact not processed because the depth bound was reached."""

    event: str
    depth: int
    contact_id: int | None


class StoredStep(TypedDict):
    """One fact and the rules that triggered on it; channel and contact are left out when
    they are the event's."""

    event: str
    depth: int
    rules: list[StoredRule]
    channel: NotRequired[str | None]
    contact_id: NotRequired[int | None]
    conversation_id: NotRequired[int]
    params: NotRequired[dict[str, Any]]
    builtin: NotRequired[list[StoredOutcome]]


class StoredTrace(TypedDict):
    """An event's trace as the engine writes it (``forms.to_store`` then leaves out what
    the event's ledger row holds)."""

    event_id: NotRequired[str]
    type: NotRequired[str]
    channel: NotRequired[str | None]
    contact_id: NotRequired[int | None]
    received_at: NotRequired[str]
    conversation_id: int | None
    timestamp: str
    ruleset_version: str
    steps: list[StoredStep]
    fired: list[str]
    actor: NotRequired[str | None]
    via: NotRequired[str]
    created_contact: NotRequired[int]
    dropped: NotRequired[list[Dropped]]
    max_depth: NotRequired[int]


class CatalogEntry(TypedDict):
    """What every trace of a rule would repeat, kept once per rule-set version: where the
    rule is, its expressions' text by path, its actions' arguments (secrets redacted)."""

    file: str
    line: int
    priority: int
    conditions: dict[str, str]
    args: list[dict[str, Any]]


Catalog = dict[str, CatalogEntry]

# -- expanded: what readers get ---------------------------------------------------------


class Outcome(TypedDict):
    """What a built-in operation or an action did."""

    operation: str | None
    outcome: str
    detail: str
    conversation_id: int | None


class ConditionLine(TypedDict):
    """One condition: its path, its text, its result and the value it saw or its error."""

    path: str
    expr: str
    result: bool
    value: NotRequired[Any]
    error: NotRequired[str]


class ActionLine(Outcome):
    """One action: its path, its name and arguments, and what it did (a choose: which
    ``branch`` ran, an index or ``default``; its branches' conditions are among the
    rule's condition lines, by their full paths)."""

    path: str
    action: str
    args: dict[str, Any]
    branch: NotRequired[int | str]


class RuleEntry(TypedDict):
    """One rule on one step: where it is, each condition, each action, and its result."""

    rule_id: str
    file: str
    line: int | str
    priority: int | str
    conditions: list[ConditionLine]
    actions: list[ActionLine]
    result: str
    detail: NotRequired[str]


class Step(TypedDict):
    """One fact, where it happened, and the rules that triggered on it."""

    event: str
    depth: int
    channel: str | None
    contact_id: int | None
    conversation_id: int | None
    rules: list[RuleEntry]
    params: NotRequired[dict[str, Any]]
    builtin: NotRequired[list[Outcome]]


class DepthBound(TypedDict):
    """The depth bound and whether facts were dropped because of it."""

    max_depth: int | None
    reached: bool
    dropped: list[Dropped]


class Trace(TypedDict):
    """An event's trace as read: the event, each step, what fired and what changed."""

    event_id: str
    type: str
    channel: str | None
    contact_id: int | None
    conversation_id: int | None
    timestamp: str
    received_at: str
    ruleset_version: str
    steps: list[Step]
    fired: list[str]
    changes: list[Outcome]
    depth_bound: DepthBound
    actor: NotRequired[str | None]
    via: NotRequired[str]
