"""The contract every channel adapter implements, and the small pieces adapters share.

An adapter knows everything about one channel and nothing about Flask or SQL: its settings
(environment variables), how to check that a request really comes from the platform, how
to turn one webhook body into the core's typed events plus the items it deliberately
skips (each with a reason), whether the channel has a welcome event, and how an outbound
``send_message`` is delivered. ``connectors.channels`` registers the adapters; the web app,
the settings, the outbox worker and the core all read that one registry.
"""
from __future__ import annotations

import email.utils
import hashlib
import hmac
import json
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from typing import Any, ClassVar, Protocol

from rules_engine import Event
from rules_engine.formats.events import LATEST

from ..auth import not_configured, require_signature
from ..decoding import decode_json
from ..errors import ApiError

MAX_ID_LENGTH = 150  # event ids are "<channel>:<id>" and must fit the ledger's 200
MAX_NAME_LENGTH = 200
EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)  # no platform's clock says earlier


WEBHOOK, SEND, OPTION = "webhook", "send", "option"


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting of a channel, read from the environment variable ``env``.

    ``role``: ``webhook`` for a credential that authenticates the platform's requests (the
    app refuses to start, outside --dev, when no such secret is set at all), ``send`` for a
    credential the outbox worker uses to deliver, ``option`` for anything else.
    """

    name: str  # the key in ``create_app(config)``, e.g. ``whatsapp_app_secret``
    env: str  # the environment variable operators set
    help: str
    role: str = WEBHOOK
    default: Any = None
    parse: Callable[[str], Any] | None = None  # text from the environment -> value


@dataclass(frozen=True, slots=True)
class Skipped:
    """An item of a webhook body that was acknowledged without becoming an event."""

    path: str  # where in the body, e.g. ``entry/0/messaging/2``
    reason: str  # a short, stable label, e.g. ``delivery_receipt``, ``invalid_item``
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Parsed:
    """What one webhook body holds: events to apply, in order, and what was skipped."""

    events: tuple[Event, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    reply: Any = None  # what the adapter needs to build its response (Dialogflow)


class AnswerKind(StrEnum):
    """What a send API's answer means for the outbox row."""

    SENT = "sent"  # accepted: the row is sent, the platform's message id kept
    TRANSIENT = "transient"  # try again later, with backoff (5xx, timeouts, Meta code 2)
    RATE_LIMITED = "rate_limited"  # too many calls: deferred (retry_after honoured), never failed
    PERMANENT = "permanent"  # trying again cannot help: the row fails
    AUTH = "auth"  # the credential is refused: the channel pauses until an operator resumes it


class Headers(Protocol):
    """HTTP headers, looked up by name case-insensitively: werkzeug's ``Headers`` for a
    webhook, an ``email.message.Message`` for a send API's answer, a dict in tests."""

    def get(self, name: str, /) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Answer:
    """What a send API answered (any HTTP status but a redirect)."""

    status: int
    headers: Headers
    body: bytes


@dataclass(frozen=True, slots=True)
class Verdict:
    """An answer (or a failure to get one) as the outbox records it."""

    kind: AnswerKind
    code: str | None = None  # the platform's own code ("131047", "5"), else the HTTP status
    message: str = ""  # the platform's own words (or ours), one bounded line
    retry_after: float | None = None  # seconds the platform asked us to wait
    platform_message_id: str | None = None  # on SENT: wamid, mid, message_id, message_token


def http_verdict(answer: Answer) -> Verdict:
    """The meaning of an answer by its HTTP status alone: for rules' URLs, and any channel
    whose API has nothing more to say (see ``ChannelAdapter.classify``)."""
    text = one_line(answer.body)
    code = str(answer.status)
    if 200 <= answer.status < 300:
        return Verdict(AnswerKind.SENT)
    retry_after = retry_after_header(answer.headers)
    if answer.status == 429:
        return Verdict(AnswerKind.RATE_LIMITED, code, text, retry_after)
    if answer.status in (401, 407):
        return Verdict(AnswerKind.AUTH, code, text)
    if answer.status in (408, 425) or answer.status >= 500:
        return Verdict(AnswerKind.TRANSIENT, code, text, retry_after)
    return Verdict(AnswerKind.PERMANENT, code, text)


MESSAGE_LIMIT = 300  # characters of a platform's words kept on a row


def one_line(text: bytes | str, limit: int = MESSAGE_LIMIT) -> str:
    """Text (an answer's body, a platform's message) as one line, cut to ``limit``."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "..."


def retry_after_header(headers: Headers) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), or None."""
    value = (headers.get("Retry-After") or "").strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():
        return float(min(int(value), 7 * 86400))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


@dataclass(frozen=True, slots=True)
class Outbound:
    """One HTTP call the outbox worker makes: a message through a channel's send API, or a
    rule's ``http_request``."""

    method: str
    url: str
    headers: dict[str, str]
    body: Any
    # What the answer means (the channel's own reading of its API's answers).
    classify: Callable[[Answer], Verdict] = http_verdict
    # A URL written in a rule (not the operator's): it may reach public addresses only.
    from_rule: bool = False


class Unsendable(ValueError):
    """The content cannot go out on this channel (a template on Telegram, a tag the platform
    does not know): the row fails for good with this message."""


@dataclass(frozen=True, slots=True)
class Pace:
    """How often the worker may call a channel's send API, held across threads and
    processes: at most one call per ``recipient_interval`` seconds to one recipient, and
    one per ``channel_interval`` seconds on the channel as a whole (0: no limit)."""

    recipient_interval: float = 0.0
    channel_interval: float = 0.0


class ItemError(Exception):
    """One item of a body is unusable; it is skipped, never allowed to fail its neighbours."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


class ChannelAdapter:
    """Base of every channel adapter; subclasses set the class attributes and ``parse``."""

    name: ClassVar[str]  # the registry key; the webhook is ``/webhooks/<name>``
    channel: ClassVar[str]  # the channel events and rules name (``facebook``, ``viber`` ...)
    title: ClassVar[str]  # what people call it, for documentation and errors
    has_welcome: ClassVar[bool] = False
    pace: ClassVar[Pace] = Pace()  # the send API's documented limits
    # How long after the contact's latest message free text may be sent (None: any time),
    # and the tags that lift that limit, each with the time it allows (None: any time).
    reply_window: ClassVar[timedelta | None] = None
    tag_windows: ClassVar[Mapping[str, timedelta | None]] = {}
    settings: ClassVar[tuple[Setting, ...]] = ()
    handshake: ClassVar[bool] = False  # whether GET on the webhook answers a verification
    # For the OpenAPI document: the security schemes (any one suffices), by scheme name,
    # and the schema of the 200 answer.
    auth_schemes: ClassVar[dict[str, dict[str, Any]]] = {}
    response_schema: ClassVar[dict[str, Any]] = {"$ref": "#/components/schemas/ChannelResults"}

    @property
    def route(self) -> str:
        return f"/webhooks/{self.name}"

    def authenticate(self, body: bytes, headers: Headers, *,
                     config: Mapping[str, Any], dev: bool) -> None:
        """Raise ApiError (401, or 503 when the secret is unset outside dev) unless authentic."""
        raise NotImplementedError

    def parse(self, body: bytes, headers: Headers, *, config: Mapping[str, Any],
              received_at: datetime) -> Parsed:
        """The events and skipped items of one authentic body; ApiError(4xx) only when the
        body is not JSON or not this channel's format at all."""
        raise NotImplementedError

    def respond(self, parsed: Parsed, results: list[dict[str, Any]]) -> Any:
        """The JSON answered to the platform."""
        return {"results": results, "skipped": [item.to_dict() for item in parsed.skipped]}

    def verify_subscription(self, query: Mapping[str, str], *, config: Mapping[str, Any]) -> str:
        """The answer to the platform's GET verification (only when ``handshake``)."""
        raise ApiError(405, "method_not_allowed", f"{self.title} has no GET handshake")

    def outbound(self, recipient: str, content: Mapping[str, Any],
                 environ: Mapping[str, str]) -> Outbound | None:
        """The call that sends ``content`` (an outbox row's body: ``{"channel", "text"}``,
        with ``"tag"`` on Messenger, or ``{"channel", "template": {"name", "language",
        "parameters"}}`` on WhatsApp) to ``recipient``; None when the channel has no send
        API. LookupError names a missing credential; Unsendable, content the channel cannot
        carry."""
        return None

    def classify(self, answer: Answer) -> Verdict:
        """What the send API's answer means (by default, its HTTP status alone)."""
        return http_verdict(answer)

    def check_settings(self, config: Mapping[str, Any]) -> list[str]:
        """Problems that must stop the app from starting (e.g. half a credential pair)."""
        return []

    def env(self, name: str) -> str:
        """The environment variable of setting ``name``."""
        return next(setting.env for setting in self.settings if setting.name == name)


# -- pieces adapters share ---------------------------------------------------------------------


class Collector:
    """Gathers a body's events and skipped items; an unusable item becomes a skip."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.skipped: list[Skipped] = []

    def add(self, event: Event) -> None:
        self.events.append(event)

    def skip(self, path: str, reason: str, detail: str = "") -> None:
        self.skipped.append(Skipped(path, reason, detail))

    @contextmanager
    def item(self, path: str) -> Iterator[None]:
        """Run the body of the ``with`` for the item at ``path``; an ItemError skips it."""
        try:
            yield
        except ItemError as error:
            self.skip(error.path or path, "invalid_item", error.message)

    def parsed(self, reply: Any = None) -> Parsed:
        return Parsed(tuple(self.events), tuple(self.skipped), reply)


def json_object(body: bytes, *, title: str) -> dict[str, Any]:
    """The body as a JSON object (the one guarded decoder); 400 otherwise."""
    data = decode_json(body)
    if not isinstance(data, dict):
        raise not_this_format("", "the body must be a JSON object", title=title)
    return data


def not_this_format(path: str, message: str, *, title: str) -> ApiError:
    """The 400 for a body that is not the channel's format at all."""
    return ApiError(400, "invalid_payload", message, path=path or None,
                    hint=f"send the {title} webhook format")


def identifier(value: Any, path: str) -> str:
    """A platform id (string, or a whole number some platforms send) as a bounded string."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise ItemError(path, "expected an id")
    if len(value) > MAX_ID_LENGTH:
        raise ItemError(path, f"an id longer than {MAX_ID_LENGTH} characters")
    return value


def optional_text(value: Any, path: str, *, limit: int = 100_000) -> str | None:
    """A string field that may be absent; its length is bounded."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ItemError(path, "expected a string")
    if len(value) > limit:
        raise ItemError(path, f"a string longer than {limit} characters")
    return value


def display_name(*parts: Any) -> str | None:
    """A person's name from its parts (non-strings ignored), bounded for the store."""
    name = " ".join(part.strip() for part in parts if isinstance(part, str) and part.strip())
    return name[:MAX_NAME_LENGTH] or None


def epoch_time(value: Any, path: str, *, unit: float) -> datetime:
    """A platform timestamp (seconds since the epoch times ``unit``) as an aware datetime."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 16:
        value = int(value)  # WhatsApp sends its timestamps as strings of digits
    if (not isinstance(value, (int, float)) or isinstance(value, bool)
            or not math.isfinite(value)):
        raise ItemError(path, "expected a timestamp")
    seconds = value / unit
    if not EARLIEST.timestamp() <= seconds < LATEST.timestamp():
        raise ItemError(path, f"timestamp {value} is not a time the platform could send")
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def mapping(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ItemError(path, "expected an object")
    return value


def clipped(value: Any, limit: int) -> str | None:
    """An optional descriptive string (a title, a MIME type), cut to ``limit``."""
    return value[:limit] if isinstance(value, str) else None


def content_digest(value: Any) -> str:
    """A short, stable digest of a JSON value (its canonical form), for an item that the
    platform gives no id: the same item always digests the same."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def number(value: Any) -> float | None:
    """A number, or None for anything else (booleans included)."""
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# Graph API error codes both Meta send APIs answer with, by what they mean for a row
# (https://developers.facebook.com/docs/graph-api/guides/error-handling): 1 and 2 are
# "temporary issue ... wait and retry", 4, 17, 32, 341 and 613 throttling, 102 and 190 the
# session or the token, 200-299 a permission the app or the token lacks.
GRAPH_ERROR_KINDS: Mapping[int, AnswerKind] = {
    1: AnswerKind.TRANSIENT, 2: AnswerKind.TRANSIENT,
    4: AnswerKind.RATE_LIMITED, 17: AnswerKind.RATE_LIMITED, 32: AnswerKind.RATE_LIMITED,
    341: AnswerKind.RATE_LIMITED, 613: AnswerKind.RATE_LIMITED,
    102: AnswerKind.AUTH, 190: AnswerKind.AUTH,
    368: AnswerKind.PERMANENT, 506: AnswerKind.PERMANENT,
}
GRAPH_PERMISSION_CODES = range(200, 300)


class MetaWebhook(ChannelAdapter):
    """Meta's webhooks (Messenger, WhatsApp): ``{"object": ..., "entry": [...]}`` signed with
    ``X-Hub-Signature-256`` (the app secret), and the ``hub.verify_token`` handshake; and
    the Graph API's answers to a send.

    A send's answer is read by its ``error.code`` first and its HTTP status second (Meta:
    "Build your app's error handling around error codes instead of subcodes or HTTP response
    status codes"). A verdict's ``code`` is that ``error.code`` alone; the deprecated
    ``error_subcode``, when present, ends its ``message`` as ``(subcode N)``."""

    SIGNATURE_HEADER = "X-Hub-Signature-256"
    handshake = True
    webhook_object: ClassVar[str]  # the body's ``object``
    app_secret: ClassVar[Setting]
    verify_token: ClassVar[Setting]
    # This API's own error codes (over GRAPH_ERROR_KINDS), by what they mean for a row.
    error_kinds: ClassVar[Mapping[int, AnswerKind]] = {}

    @classmethod
    def error_kind(cls, code: int) -> AnswerKind | None:
        """What a Meta error code means; None for a code neither table knows."""
        kind = cls.error_kinds.get(code) or GRAPH_ERROR_KINDS.get(code)
        if kind is None and code in GRAPH_PERMISSION_CODES:
            return AnswerKind.AUTH
        return kind

    def sent_message_id(self, answer: Mapping[str, Any]) -> str | None:
        """The platform's id of the message in a successful answer's JSON object."""
        raise NotImplementedError

    def classify(self, answer: Answer) -> Verdict:
        data = _json_or_none(answer.body)
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict):
            code = meta_code(error.get("code"))
            text = meta_error_text(error) or one_line(answer.body)
            if code is not None:
                kind = self.error_kind(code)
                if kind is None:  # a code we do not know: its HTTP status says what it is
                    return replace(http_verdict(answer), code=str(code), message=text)
                retry_after = (retry_after_header(answer.headers)
                               if kind in (AnswerKind.RATE_LIMITED, AnswerKind.TRANSIENT) else None)
                return Verdict(kind, str(code), text, retry_after)
            return replace(http_verdict(answer), message=text)
        if not 200 <= answer.status < 300:
            return http_verdict(answer)
        message_id = self.sent_message_id(data) if isinstance(data, dict) else None
        if message_id is None:
            # Meta documents no 2xx that is not an acceptance: calling again could send
            # the message twice, so the row is sent, with no id for later statuses to find.
            return Verdict(AnswerKind.SENT, message=one_line(
                f"accepted without a message id: {one_line(answer.body, 200)}"))
        return Verdict(AnswerKind.SENT, platform_message_id=message_id)

    @property
    def auth_schemes(self) -> dict[str, dict[str, Any]]:  # type: ignore[override]
        return {f"{self.name}Signature": {
            "type": "apiKey", "in": "header", "name": self.SIGNATURE_HEADER,
            "description": f"sha256=<hex HMAC-SHA256 of the raw body keyed with {self.app_secret.env}>"}}

    def authenticate(self, body: bytes, headers: Headers, *,
                     config: Mapping[str, Any], dev: bool) -> None:
        require_signature(config.get(self.app_secret.name), body,
                          headers.get(self.SIGNATURE_HEADER), prefix="sha256=",
                          header=self.SIGNATURE_HEADER, env=self.app_secret.env, dev=dev)

    def verify_subscription(self, query: Mapping[str, str], *, config: Mapping[str, Any]) -> str:
        token = config.get(self.verify_token.name)
        if token is None:
            not_configured(self.verify_token.env)
        given = query.get("hub.verify_token", "")
        if query.get("hub.mode") != "subscribe" or not hmac.compare_digest(
                given.encode("utf-8", "replace"), token.encode()):
            raise ApiError(403, "verification_failed", "hub.mode or hub.verify_token does not match")
        return query.get("hub.challenge", "")

    def entries(self, body: bytes) -> list[Any]:
        """The body's ``entry`` list, after checking that the body is this webhook's format."""
        data = json_object(body, title=self.title)
        if data.get("object") != self.webhook_object:
            raise not_this_format("object", f'expected "{self.webhook_object}"', title=self.title)
        if not isinstance(data.get("entry"), list):
            raise not_this_format("entry", "expected a list", title=self.title)
        return data["entry"]


@dataclass
class Attachments:
    """Builds the core's attachment mappings (``Message.attachments``)."""

    items: list[dict[str, Any]] = field(default_factory=list)

    def add(self, kind: str, **values: Any) -> None:
        self.items.append({"type": kind, **{k: v for k, v in values.items() if v is not None}})

    def as_tuple(self) -> tuple[dict[str, Any], ...]:
        return tuple(self.items)


def _json_or_none(body: bytes) -> Any:
    """An answer's body as JSON, or None when it is not JSON (the guarded decoder)."""
    try:
        return decode_json(body)
    except ApiError:
        return None


def meta_code(value: Any) -> int | None:
    """A Meta error code (a number, or digits as some relays send it), else None."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 12:
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def meta_error_text(error: Mapping[str, Any]) -> str:
    """A Graph API ``error`` (or a WhatsApp status's ``errors[]`` item) in Meta's own words,
    one line: ``message`` (else ``title``), then ``error_data.details`` when it says more,
    then ``(subcode N)``."""
    words = [value for value in (error.get("message"), error.get("title"))
             if isinstance(value, str) and value.strip()][:1]
    data = error.get("error_data")
    details = data.get("details") if isinstance(data, dict) else None
    if isinstance(details, str) and details.strip() and details not in words:
        words.append(details)
    text = words[0] if words else ""
    if len(words) > 1:
        text += (" " if text.endswith((".", "!", "?")) else ": ") + words[1]
    subcode = error.get("error_subcode")
    if isinstance(subcode, int) and not isinstance(subcode, bool):
        text = f"{text} (subcode {subcode})".strip()
    return one_line(text)


def iso_utc(at: datetime) -> str:
    """A UTC time (as ``epoch_time`` gives) as the ISO 8601 string events carry
    (``2016-07-10T12:11:46.921Z``)."""
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- pieces the send side of adapters shares -----------------------------------------------------


def plain_text(content: Mapping[str, Any], *, title: str) -> str:
    """The text of an outbox row's content for a channel that sends free text only: a
    template (WhatsApp) or a message tag (Messenger) is Unsendable here."""
    for key in ("template", "tag"):
        if content.get(key) is not None:
            raise Unsendable(f"{title} cannot send a message with a {key}")
    text = content.get("text")
    if not isinstance(text, str):
        raise Unsendable(f"{title} can only send text")
    return text


def answer_object(body: bytes) -> dict[str, Any] | None:
    """A send API's answer as a JSON object, or None when it is anything else."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return data if isinstance(data, dict) else None


def platform_id(value: Any) -> str | None:
    """A platform's message id (a whole number, or a string of one) as a bounded string."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and value.strip() and len(value) <= MAX_ID_LENGTH:
        return value
    return None
