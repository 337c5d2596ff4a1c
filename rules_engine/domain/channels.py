"""The channels the engine knows: what each channel's adapter declares about itself.

Channel adapters live at the edges (``connectors/channels/``); the core only needs their
traits (the channel's name, whether it sends a welcome event). Adapters are registered as
entry points of the group ``rules_engine.domain.channels`` (``pyproject.toml``), so the core finds
them without importing the edges by name, and adding a channel changes nothing here.
"""
from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from functools import cache
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

ENTRY_POINT_GROUP = "rules_engine.channels"

# Channels that no adapter owns but that events may name: the users' API and the
# channel-neutral webhook's own default.
BUILT_IN_CHANNELS = frozenset({"api"})


@runtime_checkable
class ChannelTraits(Protocol):
    """What the core knows of a channel."""

    channel: str  # the name events and rules use (``facebook``, ``viber``, ...)
    has_welcome: bool  # the platform sends a welcome event (the 4th way to open)


@cache
def registered() -> tuple[Any, ...]:
    """The objects the entry points name, in entry-point name order (loaded once)."""
    loaded = []
    for entry_point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        adapter = entry_point.load()
        if not isinstance(adapter, ChannelTraits):
            raise TypeError(f"entry point {entry_point.value} is not a channel adapter")
        loaded.append(adapter)
    return tuple(loaded)


@cache
def channel_catalog() -> Mapping[str, ChannelTraits]:
    """Every registered channel by name (read once per process)."""
    catalog: dict[str, ChannelTraits] = {}
    for traits in registered():
        catalog.setdefault(traits.channel, traits)
    return catalog


@cache
def welcome_channels() -> frozenset[str]:
    """The channels whose platform sends a welcome event."""
    return frozenset(name for name, traits in channel_catalog().items() if traits.has_welcome)


@cache
def known_channels() -> frozenset[str]:
    """Every channel name an adapter registers, plus the built-in ones."""
    return frozenset(channel_catalog()) | BUILT_IN_CHANNELS


@cache
def reply_windows() -> Mapping[str, timedelta]:
    """The channels whose platform takes free text only within a time of the contact's
    latest message, with that time (an optional trait: ``reply_window``)."""
    return {name: window for name, traits in channel_catalog().items()
            if (window := getattr(traits, "reply_window", None)) is not None}
