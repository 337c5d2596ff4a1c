"""An automation rules engine for customer-messaging platforms.

Load YAML rules with ``load_rule_set``, open a ``Store``, and feed ``Event`` objects
(``parse_event`` builds them from JSON) to an ``Engine``.

The public names are imported when first used, so that importing a part of the package
(the domain, say) loads only what that part needs: the domain never loads the store, nor
SQLAlchemy.
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

# public name -> the module that defines it
_HOME = {
    "Condition": "language.condition_api", "compile_condition": "language.condition_api",
    "BatchRefused": "engine", "Engine": "engine", "Result": "engine",
    **dict.fromkeys(["ActionError", "EventError", "ExpressionError", "NotFoundError",
                     "RuleFileError", "RulesEngineError", "RuleSetInvalid",
                     "RuleValidationError"], "domain.errors"),
    "parse_event": "formats.events", "load_rule_set": "rules.loader",
    **dict.fromkeys(["CloseSource", "Contact", "Conversation", "Event", "EventType",
                     "OpenSource"], "domain.model"),
    "Rule": "rules.ruleset", "RuleSet": "rules.ruleset", "Store": "store",
}
__all__ = [
    "ActionError", "BatchRefused", "CloseSource", "Condition", "Contact", "Conversation",
    "Engine", "Event", "EventError", "EventType", "ExpressionError", "NotFoundError",
    "OpenSource", "Result", "Rule", "RuleFileError", "RuleSet", "RuleSetInvalid",
    "RuleValidationError", "RulesEngineError", "Store", "compile_condition", "load_rule_set",
    "parse_event",
]


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{home}", __name__), name)
    globals()[name] = value  # found once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOME])


if TYPE_CHECKING:
    from rules_engine.domain.errors import (
        ActionError,
        EventError,
        ExpressionError,
        NotFoundError,
        RuleFileError,
        RulesEngineError,
        RuleSetInvalid,
        RuleValidationError,
    )
    from rules_engine.domain.model import (
        CloseSource,
        Contact,
        Conversation,
        Event,
        EventType,
        OpenSource,
    )
    from rules_engine.engine import BatchRefused, Engine, Result
    from rules_engine.formats.events import parse_event
    from rules_engine.language.condition_api import Condition, compile_condition
    from rules_engine.rules.loader import load_rule_set
    from rules_engine.rules.ruleset import Rule, RuleSet
    from rules_engine.store import Store
