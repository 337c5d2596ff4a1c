"""The webhook written by hand over ``sqlite3``: the floor the webhook benchmark puts beside
bare Flask and the engine.

It does the least an endpoint with the engine's guarantees must do for one event, with no
rules engine: check the HMAC signature (constant time), parse the JSON, and in one
transaction (writers queued on the same OS lock as the engine's) record the event id once,
find or create the contact by its channel identity, open a conversation unless one is
open, close it on "thanks", restart its idle clock and store a short trace. The schema is
the engine's own (``RULES_ENGINE_DATABASE_URL``, made by ``rules-engine db upgrade``).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flask import Flask, abort, jsonify, request

from connectors.asgi import buffered_wsgi
from rules_engine.store.writer_lock import WriterLock

app = Flask(__name__)
SECRET = os.environ["RULES_ENGINE_WEBHOOK_SECRET"].encode()
DATABASE = Path(os.environ["RULES_ENGINE_DATABASE_URL"].removeprefix("sqlite:///"))
writer = WriterLock(DATABASE)
local = threading.local()


def connection() -> sqlite3.Connection:
    if getattr(local, "pid", None) != os.getpid():
        local.connection = sqlite3.connect(DATABASE, isolation_level=None, timeout=30)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON",
                       "wal_autocheckpoint=10000"):
            local.connection.execute(f"PRAGMA {pragma}")
        local.pid = os.getpid()
    return local.connection


def apply(db: sqlite3.Connection, event: dict[str, Any], now: str) -> str:
    channel, external_id = event["channel"], event["contact"]["external_id"]
    if db.execute("INSERT INTO processed_events (event_id, type, channel, received_at) "
                  "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                  (event["id"], event["type"], channel, now)).rowcount == 0:
        return "duplicate"
    found = db.execute("SELECT contact_id FROM contact_identities WHERE channel = ? AND "
                       "external_id = ?", (channel, external_id)).fetchone()
    if found is None:
        contact = db.execute("INSERT INTO contacts (created_at) VALUES (?)", (now,)).lastrowid
        db.execute("INSERT INTO contact_identities (channel, external_id, contact_id) "
                   "VALUES (?, ?, ?)", (channel, external_id, contact))
    else:
        contact = found[0]
    db.execute("UPDATE processed_events SET contact_id = ? WHERE event_id = ?",
               (contact, event["id"]))
    open_row = db.execute("SELECT id, opened_at FROM conversations WHERE contact_id = ? AND "
                          "closed_at IS NULL", (contact,)).fetchone()
    if open_row is None:
        conversation = db.execute(
            "INSERT INTO conversations (contact_id, channel, opened_at, open_source, "
            "opened_by, opened_by_event, bot_active) VALUES (?, ?, ?, 'message', ?, ?, 0)",
            (contact, channel, now, external_id, event["id"])).lastrowid
    else:
        conversation = open_row[0]
    status = "opened" if open_row is None else "continued"
    if "thanks" in event.get("message", {}).get("text", ""):
        db.execute("UPDATE conversations SET closed_at = ?, close_source = 'automation', "
                   "closed_by_event = ? WHERE id = ?", (now, event["id"], conversation))
        db.execute("DELETE FROM timers WHERE conversation_id = ?", (conversation,))
        status = "closed"
    else:
        due = (datetime.now(UTC) + timedelta(hours=24)).isoformat()
        db.execute("INSERT INTO timers (id, kind, contact_id, conversation_id, rule_id, due_at, "
                   "set_by_event, payload) VALUES (?, 'idle', ?, ?, 'idle', ?, ?, '{}') "
                   "ON CONFLICT (id) DO UPDATE SET due_at = excluded.due_at",
                   (f"idle:{conversation}", contact, conversation, due, event["id"]))
    db.execute("INSERT INTO event_traces (event_id, recorded_at, trace) VALUES (?, ?, ?)",
               (event["id"], now, json.dumps({"status": status, "conversation": conversation})))
    return status


@app.post("/webhooks/events")
def receive() -> Any:
    body = request.get_data()
    expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, request.headers.get("X-Signature-256", "")):
        abort(401)
    event = json.loads(body)
    now = datetime.now(UTC).isoformat()
    db = connection()
    with writer.held():
        db.execute("BEGIN IMMEDIATE")
        try:
            status = apply(db, event, now)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    return jsonify({"results": [{"event_id": event["id"], "status": status}]})


# As `rules-engine serve` serves the engine (the benchmark runs all three alike).
asgi = buffered_wsgi(app, threads=4, max_body_bytes=1_048_576, body_timeout=30)
