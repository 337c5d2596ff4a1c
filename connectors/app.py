"""The Flask app factory: webhooks, Dialogflow fulfillment and the users' API over the engine."""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask, jsonify
from werkzeug.middleware.proxy_fix import ProxyFix

from rules_engine import Engine, RuleSet, Store, load_rule_set

from . import api, events_webhook, observability, reload, reports
from .access import PUBLIC, access, guard
from .channel_webhooks import build_blueprint
from .config import Settings
from .http import DatabaseIdConverter, FastJSONProvider, register_error_handlers
from .openapi import openapi_document

log = logging.getLogger("rules_engine.app")


def create_app(config: Mapping[str, Any] | None = None, *, rules: RuleSet | None = None) -> Flask:
    """Build the app: settings from the environment with ``config`` on top.

    ``rules`` is the rule set to serve (by default the rules directory, loaded now). Raises
    ConfigError when no secret is configured outside development mode, and RuleSetInvalid
    when the rules do not validate.
    """
    settings = Settings.load(config)
    for warning in settings.check():
        log.warning(warning)
    app = Flask(__name__, static_folder=None)
    app.url_map.converters["id"] = DatabaseIdConverter
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json = FastJSONProvider(app)
    app.json.sort_keys = False
    store = Store(settings.database_url)
    rules = rules or load_rule_set([settings.rules_dir])
    app.extensions["rules_engine_settings"] = settings
    app.extensions["rules_engine"] = Engine(store, rules, max_depth=settings.max_depth)
    register_error_handlers(app)
    guard(app)
    if settings.trusted_proxies:  # the client's address and scheme as the proxies saw them
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies,  # type: ignore[method-assign]
                                x_proto=settings.trusted_proxies)
    for module in (events_webhook, api, reports, observability, reload):
        app.register_blueprint(module.blueprint)
    app.register_blueprint(build_blueprint())

    @app.get("/healthz")
    @access(PUBLIC)
    def healthz() -> Any:
        """Liveness: the store answers and the rules are loaded."""
        with store.read() as tx:
            tx.is_event_processed("healthz")
        serving = app.extensions["rules_engine"].rules
        return jsonify({"status": "ok", "rules": len(serving), "rules_version": serving.version})

    @app.get("/openapi.json")
    @access(PUBLIC)
    def openapi() -> Any:
        """This API, described in OpenAPI 3.1."""
        return jsonify(openapi_document())

    return app
