"""The registry of channel adapters: one module per channel, one registry line each.

The registry is the entry-point group ``rules_engine.domain.channels`` in ``pyproject.toml``
(``name = "connectors.channels.<module>:ADAPTER"``). The web app mounts each adapter's
webhook, the settings read each adapter's environment variables, the outbox worker sends
through each adapter's API, and the core learns each channel's traits (``has_welcome``)
from the same entries, without importing the edges by name.
"""
from __future__ import annotations

from collections.abc import Mapping
from functools import cache

from rules_engine.domain.channels import registered

from .base import ChannelAdapter, Outbound, Parsed, Setting, Skipped

__all__ = ["ChannelAdapter", "Outbound", "Parsed", "Setting", "Skipped", "adapter_for_channel",
           "adapters", "channel_settings"]


@cache
def adapters() -> Mapping[str, ChannelAdapter]:
    """Every registered adapter by its registry name, in name order."""
    found: dict[str, ChannelAdapter] = {}
    for adapter in registered():
        if not isinstance(adapter, ChannelAdapter):
            raise TypeError(f"{adapter!r} is registered as a channel but is no ChannelAdapter")
        found[adapter.name] = adapter
    if not found:
        raise RuntimeError("no channel adapter is registered: install the package "
                           "(pip install -e .) so that its entry points exist")
    return found


def adapter_for_channel(channel: str) -> ChannelAdapter | None:
    """The adapter that sends on ``channel`` (the first registered for it), if any."""
    return next((a for a in adapters().values() if a.channel == channel), None)


def channel_settings() -> tuple[Setting, ...]:
    """Every channel setting once (adapters of one platform may share settings)."""
    seen: dict[str, Setting] = {}
    for adapter in adapters().values():
        for setting in adapter.settings:
            seen.setdefault(setting.name, setting)
    return tuple(seen.values())
