"""Settings of the webhook app, from the environment (names operators rely on) or a mapping."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from rules_engine.store import DEFAULT_DATABASE_URL

# setting name -> environment variable (keep these names exactly: operators rely on them)
ENVIRONMENT = {
    "database_url": "RULES_ENGINE_DATABASE_URL",
    "rules_dir": "RULES_ENGINE_RULES_DIR",
    "api_token": "RULES_ENGINE_API_TOKEN",
    "webhook_secret": "RULES_ENGINE_WEBHOOK_SECRET",
    "facebook_app_secret": "FACEBOOK_APP_SECRET",
    "facebook_verify_token": "FACEBOOK_VERIFY_TOKEN",
    "viber_auth_token": "VIBER_AUTH_TOKEN",
    "dialogflow_username": "DIALOGFLOW_WEBHOOK_USERNAME",
    "dialogflow_password": "DIALOGFLOW_WEBHOOK_PASSWORD",
    "dialogflow_token": "DIALOGFLOW_WEBHOOK_TOKEN",
    "max_body_bytes": "RULES_ENGINE_MAX_BODY_BYTES",
    "max_depth": "RULES_ENGINE_MAX_DEPTH",
    "dev": "RULES_ENGINE_DEV",
    "facebook_welcome_payloads": "FACEBOOK_WELCOME_PAYLOADS",
}
SECRETS = ("api_token", "webhook_secret", "facebook_app_secret", "facebook_verify_token",
           "viber_auth_token", "dialogflow_password", "dialogflow_token")


class ConfigError(Exception):
    """The app cannot start with these settings."""


@dataclass(frozen=True)
class Settings:
    """Everything the app needs; secrets are None when not configured."""

    database_url: str = DEFAULT_DATABASE_URL
    rules_dir: str = "rules"
    api_token: str | None = None
    webhook_secret: str | None = None
    facebook_app_secret: str | None = None
    facebook_verify_token: str | None = None
    viber_auth_token: str | None = None
    dialogflow_username: str | None = None
    dialogflow_password: str | None = None
    dialogflow_token: str | None = None
    max_body_bytes: int = 1_048_576
    max_depth: int = 5
    dev: bool = False
    facebook_welcome_payloads: tuple[str, ...] = ("GET_STARTED", "GET_STARTED_PAYLOAD")

    @classmethod
    def load(cls, overrides: Mapping[str, Any] | None = None,
             environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``environ`` (default ``os.environ``), then ``overrides`` on top."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, variable in ENVIRONMENT.items():
            if environ.get(variable):
                values[name] = environ[variable]
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
        return cls(**_typed(values))

    def configured_secrets(self) -> list[str]:
        return [name for name in SECRETS if getattr(self, name)]

    def check(self) -> list[str]:
        """Refuse an app that would be open to anyone; returns warnings for dev mode."""
        problems = []
        if (self.dialogflow_username is None) != (self.dialogflow_password is None):
            problems.append("set both DIALOGFLOW_WEBHOOK_USERNAME and DIALOGFLOW_WEBHOOK_PASSWORD")
        if problems:
            raise ConfigError("; ".join(problems))
        missing = [ENVIRONMENT[name] for name in SECRETS if not getattr(self, name)
                   and name != "dialogflow_password"]
        if not self.configured_secrets() and not self.dev:
            raise ConfigError(
                "no secret is configured, so every endpoint would be open to anyone. Set "
                + ", ".join(missing) + " (those you use), or pass --dev for local development")
        if self.dev:
            return [f"DEVELOPMENT MODE: endpoints whose secret is unset accept unauthenticated "
                    f"requests (unset: {', '.join(missing) or 'none'}). Never expose this server."]
        return []


def _typed(values: dict[str, Any]) -> dict[str, Any]:
    typed = dict(values)
    for name in ("max_body_bytes", "max_depth"):
        if name in typed:
            try:
                typed[name] = int(typed[name])
            except (TypeError, ValueError):
                raise ConfigError(f"{ENVIRONMENT[name]} must be a whole number") from None
    if isinstance(typed.get("dev"), str):
        typed["dev"] = typed["dev"].strip().lower() in ("1", "true", "yes", "on")
    if isinstance(typed.get("facebook_welcome_payloads"), str):
        typed["facebook_welcome_payloads"] = tuple(
            p.strip() for p in typed["facebook_welcome_payloads"].split(",") if p.strip())
    return typed
