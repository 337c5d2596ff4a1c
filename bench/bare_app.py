"""A bare Flask endpoint: the baseline the webhook benchmark compares the engine against."""
from __future__ import annotations

from typing import Any

from flask import Flask, jsonify, request

from connectors.asgi import buffered_wsgi

app = Flask(__name__)


@app.post("/webhooks/events")
def receive() -> Any:
    """Parse the JSON body and answer; no authentication, no engine, no store."""
    data = request.get_json()
    return jsonify({"results": [{"event_id": data.get("id"), "status": "applied"}]})


# As `rules-engine serve` serves the engine (the benchmark runs all three alike).
asgi = buffered_wsgi(app, threads=4, max_body_bytes=1_048_576, body_timeout=30)
