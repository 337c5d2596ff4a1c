"""The engine's error hierarchy: one base, one subclass per phase, locations as fields."""
from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence


class RulesEngineError(Exception):
    """Base of every error the engine raises on purpose.

    The location lives in fields (``file``, ``line``, ``column``, ``rule_id``, ``path``)
    and ``hint`` says how to fix it; ``str()`` renders
    ``file:line:col [rule-id] path: message (hint: ...)``.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
        rule_id: str | None = None,
        path: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        self.rule_id = rule_id
        self.path = path
        self.hint = hint

    def location(self) -> str:
        """``file:line:col``, with whichever parts are known."""
        parts = [str(p) for p in (self.file, self.line, self.column) if p is not None]
        return ":".join(parts)

    def __str__(self) -> str:
        prefix = []
        if self.location():
            prefix.append(self.location())
        if self.rule_id:
            prefix.append(f"[{self.rule_id}]")
        if self.path:
            prefix.append(f"{self.path}:")
        elif prefix:
            prefix[-1] += ":"
        text = " ".join(prefix + [self.message])
        if self.hint:
            text += f" (hint: {self.hint})"
        return text

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready view, for APIs and machine-readable output."""
        return {
            "message": self.message,
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "rule_id": self.rule_id,
            "path": self.path,
            "hint": self.hint,
        }


class RuleFileError(RulesEngineError):
    """A rule file cannot be read or is not well-formed YAML."""


class RuleValidationError(RulesEngineError):
    """A rule breaks the schema or a cross-rule check (duplicate id, unknown name...)."""


class RuleWarning(RulesEngineError):
    """A rule that loads, but probably does not do what its author meant (a possible loop,
    a rule that can never fire...). Reported by ``validate``; the rule set still loads."""


class ExpressionError(RulesEngineError):
    """A condition or value expression is invalid, or failed while being evaluated."""


class ActionError(RulesEngineError):
    """An action could not run with the arguments and state it was given."""


class EventError(RulesEngineError):
    """An incoming event is malformed: wrong types, missing fields, unknown type.

    ``problems`` holds every problem found in the event, in the order of its body; the
    error's own message, path and hint are the first one's (a lone problem: itself).
    """

    def __init__(self, message: str, *, path: str | None = None, hint: str | None = None,
                 problems: Sequence[EventError] = ()) -> None:
        super().__init__(message, path=path, hint=hint)
        self.problems: tuple[EventError, ...] = tuple(problems) or (self,)

    @classmethod
    def of_all(cls, problems: Sequence[EventError]) -> EventError:
        """One error for several problems (at least one), worded as the first."""
        first = problems[0]
        return cls(first.message, path=first.path, hint=first.hint, problems=problems)


class NotFoundError(RulesEngineError):
    """A contact, conversation or trace the caller named does not exist."""


class RuleSetInvalid(RulesEngineError):
    """A rule set was rejected; ``errors`` lists every problem found, in file order."""

    def __init__(self, errors: Iterable[RulesEngineError]) -> None:
        self.errors = list(errors)
        super().__init__(f"{len(self.errors)} problem(s) in the rules")

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


def nearest(name: str, known: Iterable[str]) -> str | None:
    """The known name nearest to ``name``, or None when nothing is close."""
    matches = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return matches[0] if matches else None


def did_you_mean(name: str, known: Iterable[str]) -> str | None:
    """A hint naming the known name nearest to ``name``, or None when nothing is close."""
    match = nearest(name, known)
    return f"did you mean `{match}`?" if match else None
