"""The edges: a Flask app with channel webhooks, Dialogflow fulfillment and the users' API."""
from .app import create_app
from .config import ConfigError, Settings

__all__ = ["ConfigError", "Settings", "create_app"]
