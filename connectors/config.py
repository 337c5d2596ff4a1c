"""Settings of the webhook app, from the environment (names operators rely on) or a mapping.

The app's own settings are listed here; each channel's come from its adapter
(``connectors.channels``), so adding a channel adds its settings without a change here.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from rules_engine.store import DEFAULT_DATABASE_URL

from .channels import ChannelAdapter, adapters, channel_settings
from .channels.base import WEBHOOK

# the app's own setting name -> environment variable (keep these names: operators rely on them)
APP_ENVIRONMENT = {
    "database_url": "RULES_ENGINE_DATABASE_URL",
    "rules_dir": "RULES_ENGINE_RULES_DIR",
    "api_token": "RULES_ENGINE_API_TOKEN",
    "webhook_secret": "RULES_ENGINE_WEBHOOK_SECRET",
    "max_body_bytes": "RULES_ENGINE_MAX_BODY_BYTES",
    "max_depth": "RULES_ENGINE_MAX_DEPTH",
    "trusted_proxies": "RULES_ENGINE_TRUSTED_PROXIES",
}
APP_SECRETS = ("api_token", "webhook_secret")
MIN_SECRET_LENGTH = 32  # our own secrets; the platforms' are whatever the platform issued


def environment() -> dict[str, str]:
    """Every setting's environment variable: the app's own, then each channel's."""
    return {**APP_ENVIRONMENT, **{setting.name: setting.env for setting in channel_settings()}}


class ConfigError(Exception):
    """The app cannot start with these settings."""


@dataclass(frozen=True)
class Settings:
    """Everything the app needs; secrets are None when not configured."""

    database_url: str = DEFAULT_DATABASE_URL
    rules_dir: str = "rules"
    api_token: str | None = None
    webhook_secret: str | None = None
    max_body_bytes: int = 1_048_576
    max_depth: int = 5
    trusted_proxies: int = 0  # reverse proxies in front, whose X-Forwarded-For/-Proto count
    dev: bool = False  # only from `serve --dev` or create_app({"dev": True}), never the environment
    channels: Mapping[str, Any] = field(default_factory=dict)  # every channel setting by name

    @classmethod
    def load(cls, overrides: Mapping[str, Any] | None = None,
             environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``environ`` (default ``os.environ``), then ``overrides`` on top."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, variable in environment().items():
            if environ.get(variable):
                values[name] = environ[variable]
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        own = {f.name for f in fields(cls)} - {"channels"}
        by_name = {setting.name: setting for setting in channel_settings()}
        unknown = set(values) - own - set(by_name)
        if unknown:
            raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
        channels: dict[str, Any] = {}
        for name, setting in by_name.items():
            value = values.pop(name, setting.default)
            channels[name] = setting.parse(value) if setting.parse and isinstance(value, str) else value
        return cls(**_typed(values), channels=channels)

    def channel_config(self, adapter: ChannelAdapter) -> dict[str, Any]:
        """The settings of one channel's adapter."""
        return {setting.name: self.channels.get(setting.name) for setting in adapter.settings}

    def configured_secrets(self) -> list[str]:
        """The names of the set secrets that authenticate requests."""
        app = [name for name in APP_SECRETS if getattr(self, name)]
        return app + [s.name for s in channel_settings() if s.role == WEBHOOK and self.channels.get(s.name)]

    def disabled_endpoints(self) -> list[str]:
        """Webhooks whose secret is unset (disabled outside --dev), with what to set."""
        disabled = []
        for adapter in adapters().values():
            secrets = [s for s in adapter.settings if s.role == WEBHOOK]
            if secrets and not any(self.channels.get(s.name) for s in secrets):
                disabled.append(f"{adapter.route} (set {' or '.join(s.env for s in secrets)})")
        if not self.webhook_secret:
            disabled.append(f"/webhooks/events (set {APP_ENVIRONMENT['webhook_secret']})")
        return disabled

    def check(self) -> list[str]:
        """Refuse an app that would be open to anyone, or guarded by a guessable secret;
        returns warnings to log."""
        problems = [problem for adapter in adapters().values()
                    for problem in adapter.check_settings(self.channel_config(adapter))]
        problems += [f"{APP_ENVIRONMENT[name]} is shorter than {MIN_SECRET_LENGTH} characters "
                     f"(make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
                     for name in APP_SECRETS
                     if getattr(self, name) and len(getattr(self, name)) < MIN_SECRET_LENGTH]
        if problems:
            raise ConfigError("; ".join(dict.fromkeys(problems)))
        unset = [variable for name, variable in environment().items()
                 if (name in APP_SECRETS or name in self._webhook_secrets())
                 and not (getattr(self, name, None) or self.channels.get(name))]
        if not self.configured_secrets() and not self.dev:
            raise ConfigError(
                "no secret is configured, so no request could be authenticated. Set "
                + ", ".join(unset) + " (those you use), or pass --dev for local development")
        if self.dev:
            return [f"DEVELOPMENT MODE: endpoints whose secret is unset accept unauthenticated "
                    f"requests (unset: {', '.join(unset) or 'none'}). Never expose this server."]
        return [f"disabled until configured: {', '.join(self.disabled_endpoints())}"] \
            if self.disabled_endpoints() else []

    @staticmethod
    def _webhook_secrets() -> set[str]:
        return {s.name for s in channel_settings() if s.role == WEBHOOK}


def _typed(values: dict[str, Any]) -> dict[str, Any]:
    typed = dict(values)
    for name in ("max_body_bytes", "max_depth", "trusted_proxies"):
        if name in typed:
            try:
                typed[name] = int(typed[name])
            except (TypeError, ValueError):
                raise ConfigError(f"{APP_ENVIRONMENT[name]} must be a whole number") from None
    return typed
