"""Structure-aware mutations of real-format request bodies, for the fuzz suite and the
fuzz campaign (``bench/fuzz_campaign.py``).

A mutation takes a body the platform really sends (``tests/fixtures/channels``) or one the
users' API documents, picks places in it, and replaces what is there with a hostile raw
JSON fragment (``NaN``, a 5,000-digit number, a lone surrogate, nesting 1,000 deep, an
impossible timestamp, an id past 2^63...), a value of another type, or removes it; the
result is then signed as the platform would sign it. Operations are plain data, so
Hypothesis can draw and shrink them, and a seeded ``random.Random`` can replay them.
"""
from __future__ import annotations

import copy
import json
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.set_int_max_str_digits(0)  # the fuzzer itself writes numbers of any length

FIXTURES = Path(__file__).parent / "fixtures" / "channels"
ROUTE_OF_FOLDER = {"messenger": "/webhooks/facebook", "viber": "/webhooks/viber",
                   "whatsapp": "/webhooks/whatsapp", "telegram": "/webhooks/telegram",
                   "dialogflow_es": "/webhooks/dialogflow", "dialogflow_cx": "/webhooks/dialogflow-cx"}

# Raw JSON fragments that once gave (or could give) a 500: each must now be a 4xx or ignored.
HOSTILE = [
    "NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1" * 5000, "9" * 41,
    "9223372036854775808", "18446744073709551616", "2147483648", "1e20", "-1", "0", "1.5",
    '"\\ud800"', '"a\\udfffb"', "[" * 1000 + "]" * 1000, '{"a":' * 200 + "1" + "}" * 200,
    '"9999-12-31T23:59:59-23:59"', '"0001-01-01T00:00:00+23:59"', '"2026-13-45"', '"soon"',
    '""', '" "', "null", "true", "false", "{}", "[]", '[{"x": []}]',
    '"' + "x" * 5000 + '"', '"' + "\\u0000" * 10 + '"', '"\\u202e\\u0000<script>"',
    '{"id": 1}', '{"external_id": 5}', '["a", "b"]', '{"$ne": null}',
]


@dataclass(frozen=True)
class Mutation:
    """Replace (with ``raw`` JSON text), delete, or duplicate the node at ``path``."""

    kind: str  # "replace", "delete" or "duplicate"
    path: tuple[str | int, ...]
    raw: str = ""


def paths(value: Any, prefix: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    """Every place in a JSON value, the value itself first."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths(item, (*prefix, index))


def _parent(body: Any, path: tuple[str | int, ...]) -> Any:
    node = body
    for key in path[:-1]:
        node = node[key]
    return node


def apply(body: Any, mutations: list[Mutation]) -> bytes:
    """The body with the mutations applied, as the bytes to send."""
    data = copy.deepcopy(body)
    fragments: dict[str, str] = {}
    for n, mutation in enumerate(mutations):
        try:
            parent = _parent(data, mutation.path) if mutation.path else None
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced this place
        key = mutation.path[-1] if mutation.path else None
        if parent is not None and not isinstance(parent, (dict, list)):
            continue
        if parent is not None and isinstance(parent, list) and not (
                isinstance(key, int) and key < len(parent)):
            continue
        if parent is not None and isinstance(parent, dict) and key not in parent:
            continue
        if mutation.kind == "replace":
            marker = f"\u0001fuzz{n}\u0001"
            fragments[json.dumps(marker)] = mutation.raw
            if parent is None:
                data = marker
            else:
                parent[key] = marker
        elif mutation.kind == "delete" and parent is not None:
            del parent[key]
        elif mutation.kind == "duplicate" and isinstance(parent, list):
            parent.insert(key, copy.deepcopy(parent[key]))
    text = json.dumps(data)
    for marker, raw in fragments.items():
        text = text.replace(marker, raw)
    return text.encode("utf-8", "surrogatepass")


ID_KEYS = frozenset({"mid", "id", "message_token", "update_id", "responseId",
                     "detectIntentResponseId", "wamid"})


def fresh_ids(body: Any, salt: int) -> Any:
    """A copy of ``body`` whose message and event ids are new (so it is applied, not
    recognised as a repeat), each keeping its type."""
    data = copy.deepcopy(body)
    stack = [data]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) \
            if isinstance(node, list) else ()
        for key, value in list(items):
            if key in ID_KEYS and isinstance(value, str):
                node[key] = f"{value}-{salt}"
            elif key in ID_KEYS and isinstance(value, int) and not isinstance(value, bool):
                node[key] = value * 1000 + salt % 1000 + 1 if value < 2**40 else salt
            else:
                stack.append(value)
    return data


def channel_bodies() -> list[tuple[str, Any]]:
    """(route, body) for every published body in the corpus."""
    found = []
    for folder, route in ROUTE_OF_FOLDER.items():
        for file in sorted((FIXTURES / folder).glob("*.json")):
            if file.name != "expected.json":
                found.append((route, json.loads(file.read_text("utf-8"))))
    return found


def event_bodies() -> list[tuple[str, Any]]:
    """(route, body) for the channel-neutral webhook: an input, a batch, each command."""
    message = {"id": "evt-1", "type": "message.received", "channel": "webchat",
               "timestamp": "2026-11-25T10:00:00Z", "contact": {"external_id": "web-1", "name": "Ana"},
               "message": {"text": "hello", "attachments": [{"type": "image", "url": "https://x"}]},
               "params": {"page": "pricing"}}
    commands = [
        {"id": "cmd-1", "type": "conversation.open", "contact": {"id": 1}, "actor": "susan",
         "params": {"team": "support", "assignee": "susan", "channel": "webchat"}},
        {"id": "cmd-2", "type": "conversation.close", "conversation_id": 1, "actor": "susan",
         "params": {"note": "done"}},
        {"id": "cmd-3", "type": "contacts.merge", "contact": {"id": 1}, "secondary_contact_id": 2,
         "actor": "susan"},
        {"id": "cmd-4", "type": "contacts.merge", "contact": {"id": 2},
         "secondary_contact": {"channel": "webchat", "external_id": "web-1"}, "actor": "susan"},
    ]
    return [("/webhooks/events", message), ("/webhooks/events", [message, *commands]),
            *[("/webhooks/events", command) for command in commands]]


def api_requests() -> list[tuple[str, str, Any]]:
    """(method, path, body) for the users' API, as documented."""
    return [
        ("POST", "/api/contacts/1/conversations", {"user": "susan", "team": "support"}),
        ("POST", "/api/conversations/1/close", {"user": "susan", "note": "solved"}),
        ("POST", "/api/contacts/1/merge", {"user": "susan", "secondary_id": 2}),
        ("GET", "/api/contacts?channel=webchat&external_id=web-1", None),
        ("GET", "/api/contacts/1/conversations", None),
        ("GET", "/api/conversations/1", None),
        ("GET", "/api/outbox?status=failed&limit=10", None),
        ("GET", "/api/events/evt-1/trace", None),
        ("GET", "/api/reports/conversations?since=2026-11-01&until=2026-11-30&by=user", None),
    ]


# Replacements for the parts of a URL: the path's ids and the query's values.
HOSTILE_URL_PARTS = ["0", "-1", "2147483648", "9223372036854775808", "1" * 400, "²", "1.5",
                     "%00", "%ud800", "%F0%9F%92%A9", "9999-12-31", "0001-01-02", "abc", "",
                     "2026-02-30", "1e20", "NaN", "..%2F..%2Fetc", "x" * 3000]


def mutate_url(path: str, rng: random.Random) -> str:
    """The URL with one id or query value replaced by a hostile one."""
    parts = path.replace("?", "/?").split("/")
    choices = [i for i, part in enumerate(parts) if part.isdigit() or "=" in part]
    if not choices:
        return path
    index = rng.choice(choices)
    hostile = quote(rng.choice(HOSTILE_URL_PARTS), safe="%")  # as a client would send it
    if "=" in parts[index]:
        query = parts[index].lstrip("?").split("&")
        slot = rng.randrange(len(query))
        query[slot] = query[slot].split("=", 1)[0] + "=" + hostile
        parts[index] = ("?" if parts[index].startswith("?") else "") + "&".join(query)
    else:
        parts[index] = hostile
    return "/".join(parts).replace("/?", "?")


TYPE_SWAPS = ["{}", "[]", "1", "-1", "null", "true", '""', '"x"', '{"a": 1}', '[1, "a"]']


def places_by_name(body: Any) -> dict[str, list[tuple[str | int, ...]]]:
    """Every place of ``body`` grouped by its key's name (so that a rare key such as
    ``type`` is picked as often as a frequent one such as ``id``)."""
    grouped: dict[str, list[tuple[str | int, ...]]] = {}
    for place in paths(body):
        grouped.setdefault(str(place[-1]) if place else "", []).append(place)
    return grouped


def random_mutations(body: Any, rng: random.Random, *, most: int = 3) -> list[Mutation]:
    """Up to ``most`` mutations at random places of ``body`` (for the campaign)."""
    grouped = places_by_name(body)
    names = sorted(grouped)
    mutations = []
    for _ in range(rng.randint(1, most)):
        path = rng.choice(grouped[rng.choice(names)])
        kind = rng.choices(["replace", "delete", "duplicate"], weights=[8, 1, 1])[0]
        raw = rng.choice(HOSTILE if rng.random() < 0.6 else TYPE_SWAPS)
        mutations.append(Mutation(kind, path, raw if kind == "replace" else ""))
    return mutations
