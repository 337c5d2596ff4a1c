"""The app's shared services (``app.extensions``), for the blueprints to reach."""
from __future__ import annotations

from flask import current_app

from rules_engine import Engine

from .config import Settings


def engine() -> Engine:
    """The app's engine."""
    return current_app.extensions["rules_engine"]


def settings() -> Settings:
    """The app's settings."""
    return current_app.extensions["rules_engine_settings"]
