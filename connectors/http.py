"""HTTP plumbing shared by the blueprints: JSON errors, body parsing, running events."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from flask import Flask, current_app, g, jsonify, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.routing import BaseConverter, ValidationError

from rules_engine import (
    BatchRefused,
    Event,
    EventError,
    NotFoundError,
    Result,
    RulesEngineError,
)
from rules_engine.domain.model import MAX_ID

from .decoding import decode_json
from .errors import ApiError
from .observability import record_event, record_rejection
from .services import engine


class DatabaseIdConverter(BaseConverter):
    """``<id:name>`` in a route: a whole number that can be a database id, else 404."""

    regex = r"[1-9][0-9]{0,9}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if number > MAX_ID:
            raise ValidationError()
        return number

    def to_url(self, value: Any) -> str:
        return str(int(value))


class FastJSONProvider(DefaultJSONProvider):
    """Flask's JSON responses written by orjson (several times faster than ``json``), with
    Flask's own conversions for what orjson leaves to it (dates as HTTP dates, decimals,
    UUIDs, dataclasses); what orjson refuses (an integer beyond 64 bits) goes to Flask's
    writer, as does everything in debug mode (indented)."""

    _OPTIONS = (orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME
                | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_APPEND_NEWLINE)

    def response(self, *args: Any, **kwargs: Any) -> Any:
        if self.compact is False or (self.compact is None and self._app.debug):
            return super().response(*args, **kwargs)
        options = self._OPTIONS | (orjson.OPT_SORT_KEYS if self.sort_keys else 0)
        try:
            body = orjson.dumps(self._prepare_response_obj(args, kwargs), default=self.default,
                                option=options)
        except TypeError:
            return super().response(*args, **kwargs)
        return self._app.response_class(body, mimetype=self.mimetype)  # type: ignore[arg-type]


def whole_number_parameter(name: str, *, default: int, least: int, most: int) -> int:
    """A query-string parameter that must be a whole number in ``[least, most]``; 400 else."""
    text = request.args.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= 10) \
            or not least <= int(text) <= most:
        raise ApiError(400, "invalid_parameter",
                       f"{name} must be a whole number from {least} to {most}", path=name)
    return int(text)


def raw_body() -> bytes:
    """The request body as bytes, read once; 413 past ``MAX_CONTENT_LENGTH``, whether the
    client sent a Content-Length or a chunked body."""
    body = g.get("raw_body")
    if body is None:
        body = g.raw_body = _read_body()
    return body


def _read_body() -> bytes:
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    length, stream = request.content_length, request.environ["wsgi.input"]
    if length is not None:  # straight from the server's stream: Werkzeug's wrapping of
        if length > limit:  # it costs more than the read
            raise RequestEntityTooLarge(f"the body is larger than {limit} bytes")
        return stream.read(length) if length else b""
    if "wsgi.input_terminated" not in request.environ:
        return b""  # no length and no terminated stream: WSGI gives no body to read
    chunks, size = [], 0
    while chunk := stream.read(65536):  # a chunked body: count it as it arrives
        size += len(chunk)
        if size > limit:
            raise RequestEntityTooLarge(f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def require_json_content_type() -> None:
    """415 unless the body is declared as application/json."""
    if request.mimetype != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")


def json_body(*, expect: type | tuple[type, ...] = dict) -> Any:
    """The body parsed as JSON of the expected top-level type; 400/415 otherwise."""
    require_json_content_type()
    data = decode_json(raw_body())
    if not isinstance(data, expect):
        kind = "object" if expect is dict else "object or list"
        raise ApiError(400, "invalid_body", f"the body must be a JSON {kind}")
    return data


def from_engine_error(error: RulesEngineError) -> ApiError:
    """An engine error as the HTTP error it stands for."""
    if isinstance(error, NotFoundError):
        return ApiError(404, "not_found", error.message, path=error.path, hint=error.hint)
    if isinstance(error, EventError):
        return ApiError(422, "invalid_event", error.message, path=error.path, hint=error.hint)
    return ApiError(422, "rejected", error.message, path=error.path, hint=error.hint)


def at_index(index: int, path: str | None) -> str:
    """``path`` inside the event at ``index`` of a list of events."""
    return f"{index}/{path or ''}".rstrip("/")


def invalid_events(problems: Sequence[RulesEngineError]) -> ApiError:
    """A 422 worded as the first problem, listing every one (``path``, ``message``, ``hint``)."""
    first = problems[0]
    return ApiError(422, "invalid_event", first.message, path=first.path, hint=first.hint,
                    problems=[{"path": problem.path, "message": problem.message,
                               "hint": problem.hint} for problem in problems])


def run_events(events: Sequence[Event], *,
               refused: Callable[[Event, ApiError], None] | None = None) -> list[dict[str, Any]]:
    """Apply one body's events in order, in one transaction, so that a failure leaves
    none of them applied (a 5xx always means nothing was applied); their results.

    An event the engine refuses is an ApiError that undoes the whole body (its ``index``
    names it), unless ``refused`` is given: then that event alone is undone, ``refused`` is
    told, and the others apply. Once the transaction has committed, nothing that follows
    (metrics, the answer) can turn the request into a 5xx: see ``register_error_handlers``.
    """
    started = time.perf_counter()
    try:
        outcomes: Sequence[Result | RulesEngineError] = (
            [engine().process(events[0])] if len(events) == 1 else
            engine().process_many(events, atomic=refused is None))
    except BatchRefused as batch:
        raise _refusal(batch.error, batch.index, len(events)) from None
    except RulesEngineError as error:  # the single event's
        if refused is None:
            raise _refusal(error, 0, 1) from None
        outcomes = [error]
    applied = [outcome for outcome in outcomes if isinstance(outcome, Result)]
    g.applied = [result.to_dict() for result in applied]
    for event, outcome in zip(events, outcomes):
        if refused is not None and isinstance(outcome, RulesEngineError):
            refused(event, from_engine_error(outcome))
    seconds = (time.perf_counter() - started) / max(len(events), 1)
    for event, outcome in zip(events, outcomes):
        if isinstance(outcome, Result):
            record_event(event, outcome, seconds)
    return list(g.applied)


def _refusal(error: RulesEngineError, index: int, count: int) -> ApiError:
    api_error = from_engine_error(error)
    if count > 1:
        api_error.path = at_index(index, api_error.path)
        api_error.message += f" (event {index} of the list; none of the list was applied)"
    return api_error


def register_error_handlers(app: Flask) -> None:
    """Every error leaves as JSON; nothing leaves as an HTML page or a bare 500."""

    @app.errorhandler(ApiError)
    def _api_error(error: ApiError) -> Any:
        record_rejection(error.code)
        return jsonify(error.body()), error.status

    @app.errorhandler(RulesEngineError)
    def _engine_error(error: RulesEngineError) -> Any:
        return _api_error(from_engine_error(error))

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Any:
        code = (error.name or "error").lower().replace(" ", "_")
        record_rejection(code)
        return jsonify({"error": {"code": code, "message": error.description}}), error.code

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Any:
        app.logger.exception("unexpected error")
        applied = g.get("applied")
        if applied:  # committed: the truth is 200, with what was applied
            return jsonify({"results": applied, "warning": "the events were applied, but "
                            "the full answer could not be built (see the server log)"}), 200
        return jsonify({"error": {"code": "internal_error",
                                  "message": "an unexpected error occurred; nothing was applied"}}), 500
