"""One Flask blueprint that mounts every registered channel adapter's webhook.

For each adapter: ``POST <route>`` authenticates the request, parses the body into events
and skipped items, applies each event in its own transaction (an event the engine refuses
is skipped with the reason, never failing its neighbours), and answers what the adapter
renders; ``GET <route>`` answers the platform's verification handshake where it has one.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from flask import Blueprint, jsonify, request

from .access import PLATFORM, access
from .channels import ChannelAdapter, Skipped, adapters
from .http import raw_body, run_events
from .observability import record_skipped
from .services import settings as app_settings

log = logging.getLogger("rules_engine.channels")


def _receive(adapter: ChannelAdapter) -> Any:
    settings = app_settings()
    config = settings.channel_config(adapter)
    body = raw_body()
    adapter.authenticate(body, request.headers, config=config, dev=settings.dev)
    parsed = adapter.parse(body, request.headers, config=config,
                           received_at=datetime.now(timezone.utc))
    skipped = list(parsed.skipped)
    results = run_events(parsed.events, refused=lambda event, refusal: skipped.append(
        Skipped(event.id, "refused", f"{refusal.code}: {refusal.message}")))
    for item in skipped:
        record_skipped(adapter.name, item.reason)
        log.info("%s: skipped %s (%s) %s", adapter.name, item.path or "body", item.reason,
                 item.detail)
    response = jsonify(adapter.respond(replace(parsed, skipped=tuple(skipped)), results))
    if len(results) == 1:
        response.headers["X-Rules-Engine-Status"] = results[0]["status"]
    return response


def _verify(adapter: ChannelAdapter) -> Any:
    config = app_settings().channel_config(adapter)
    challenge = adapter.verify_subscription(request.args, config=config)
    return challenge, 200, {"Content-Type": "text/plain; charset=utf-8"}


def build_blueprint() -> Blueprint:
    """The routes of every registered channel."""
    blueprint = Blueprint("channels", __name__)
    for adapter in adapters().values():
        blueprint.add_url_rule(adapter.route, f"receive_{adapter.name}",
                               access(PLATFORM)(lambda adapter=adapter: _receive(adapter)),
                               methods=["POST"])
        if adapter.handshake:
            blueprint.add_url_rule(adapter.route, f"verify_{adapter.name}",
                                   access(PLATFORM)(lambda adapter=adapter: _verify(adapter)),
                                   methods=["GET"])
    return blueprint
