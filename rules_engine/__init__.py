"""An automation rules engine for customer-messaging platforms.

Load YAML rules with ``load_rule_set``, open a ``Store``, and feed ``Event`` objects
(``parse_event`` builds them from JSON) to an ``Engine``.
"""
from .condition_api import Condition, compile_condition
from .engine import BatchRefused, Engine, Result
from .errors import (
    ActionError,
    EventError,
    ExpressionError,
    NotFoundError,
    RuleFileError,
    RulesEngineError,
    RuleSetInvalid,
    RuleValidationError,
)
from .events import parse_event
from .loader import load_rule_set
from .model import CloseSource, Contact, Conversation, Event, EventType, OpenSource
from .rules import Rule, RuleSet
from .store import Store

__all__ = [
    "ActionError",
    "BatchRefused",
    "CloseSource",
    "Condition",
    "Contact",
    "Conversation",
    "Engine",
    "Event",
    "EventError",
    "EventType",
    "ExpressionError",
    "NotFoundError",
    "OpenSource",
    "Result",
    "Rule",
    "RuleFileError",
    "RuleSet",
    "RuleSetInvalid",
    "RuleValidationError",
    "RulesEngineError",
    "Store",
    "compile_condition",
    "load_rule_set",
    "parse_event",
]
