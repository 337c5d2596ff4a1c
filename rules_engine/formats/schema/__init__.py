"""The JSON Schemas shipped with the package: the single source of truth for file formats."""
from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any


@cache
def load_schema(name: str) -> dict[str, Any]:
    """The schema ``name`` (``rules`` or ``event``) as a dict; read once per process."""
    text = resources.files(__package__).joinpath(f"{name}.schema.json").read_text("utf-8")
    return json.loads(text)


def rules_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a rule file."""
    return load_schema("rules")
