"""The edges: a Flask app with channel webhooks, Dialogflow fulfillment and the users' API.

``connectors.channels`` holds the channel adapters, which never import Flask; the app is
imported on first use of ``create_app``, so loading an adapter (as the core does through
its entry points) does not load the web framework.
"""
from __future__ import annotations

from typing import Any

__all__ = ["ConfigError", "Settings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    if name in ("ConfigError", "Settings"):
        from . import config

        return getattr(config, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
