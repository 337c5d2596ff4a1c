"""The OpenAPI 3.1 document: the shipped description of the app's own routes, plus one
path per registered channel adapter, generated from the adapter itself."""
from __future__ import annotations

import inspect
import json
import sys
from functools import cache
from importlib import resources
from typing import Any

from rules_engine.formats.schema import load_schema

from .channels import ChannelAdapter, adapters

_ERRORS = {
    "400": "The body is not JSON, or not this channel's format at all",
    "401": "Missing or bad signature / credentials",
    "413": "Body over the size limit",
    "503": "The endpoint's secret is not configured (the message names the variable)",
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Error"}}}}


def _description(adapter: ChannelAdapter) -> str:
    doc = type(adapter).__doc__ or sys.modules[type(adapter).__module__].__doc__ or adapter.title
    return inspect.cleandoc(doc)


def _channel_path(adapter: ChannelAdapter) -> dict[str, Any]:
    item: dict[str, Any] = {"post": {
        "summary": f"{adapter.title} webhook (channel {adapter.channel})",
        "tags": ["channels"],
        "description": _description(adapter),
        "security": [{name: []} for name in adapter.auth_schemes],
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"type": "object"}}}},
        "responses": {
            "200": {"description": "Authentic and in the channel's format: every item applied "
                                   "or skipped with a reason",
                    "content": {"application/json": {"schema": adapter.response_schema}}},
            **{status: _error(text) for status, text in _ERRORS.items()},
        },
    }}
    if adapter.handshake:
        query = [{"name": name, "in": "query", "required": True, "schema": {"type": "string"}}
                 for name in ("hub.mode", "hub.verify_token", "hub.challenge")]
        item["get"] = {
            "summary": f"{adapter.title} subscription handshake", "tags": ["channels"],
            "description": "Echoes hub.challenge when hub.verify_token matches.",
            "security": [], "parameters": query,
            "responses": {"200": {"description": "The challenge", "content": {
                "text/plain": {"schema": {"type": "string"}}}},
                "403": _error("Verification failed"), "503": _error(_ERRORS["503"])}}
    return item


@cache
def openapi_document() -> dict[str, Any]:
    """The whole document, with the core's event schema and every channel's webhook."""
    text = resources.files(__package__).joinpath("openapi.json").read_text("utf-8")
    document = json.loads(text)
    event = {k: v for k, v in load_schema("event").items() if k not in ("$schema", "$id")}
    document["components"]["schemas"]["Event"] = event
    for adapter in adapters().values():
        document["paths"][adapter.route] = _channel_path(adapter)
        document["components"]["securitySchemes"].update(adapter.auth_schemes)
    return document
