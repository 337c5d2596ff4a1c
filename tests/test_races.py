"""Crossing requests on the real server: 4 gunicorn worker processes, requests released at
the same moment (a barrier per round). Meaningful on PostgreSQL (the suite's second run),
where the workers really run side by side; on SQLite the write lock serialises them."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from sqlalchemy import text

from . import webhook_payloads as p
from .test_server import post_signed_event, start_server, stop_server

API = {"Authorization": f"Bearer {p.SECRETS['api_token']}"}
PAIRS = 24


@pytest.fixture
def four_workers(database_url, tmp_path):
    process, base = start_server(database_url, 4, tmp_path / "server.log")
    yield base
    stop_server(process)


def _message(base: str, visitor: str, n: int) -> requests.Response:
    return post_signed_event(base, {"id": f"{visitor}-{n}", "type": "message.received",
                                    "channel": "webchat", "contact": {"external_id": visitor},
                                    "message": {"text": f"message {n}"}})


def _merge(base: str, primary: int, secondary: int) -> requests.Response:
    return requests.post(f"{base}/api/contacts/{primary}/merge", headers=API, timeout=60,
                         json={"user": "agent", "secondary_id": secondary})


def _at_once(calls: list[Any]) -> list[requests.Response]:
    """Run the calls in threads released together by a barrier."""
    barrier = threading.Barrier(len(calls))

    def run(call: Any) -> requests.Response:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


def _audit(store) -> dict[str, int]:
    """Counts that must all be zero, read with SQL as an auditor would."""
    checks = {
        "contacts merged into a merged-away contact (chains, cycles)":
            "SELECT count(*) FROM contacts a JOIN contacts b ON a.merged_into = b.id "
            "WHERE b.merged_into IS NOT NULL",
        "identities on merged-away contacts": "SELECT count(*) FROM contact_identities i JOIN "
                                              "contacts c ON c.id = i.contact_id "
                                              "WHERE c.merged_into IS NOT NULL",
        "open conversations on merged-away contacts": "SELECT count(*) FROM conversations v "
                                                      "JOIN contacts c ON c.id = v.contact_id "
                                                      "WHERE c.merged_into IS NOT NULL "
                                                      "AND v.closed_at IS NULL",
        "contacts with two open conversations": "SELECT count(*) FROM (SELECT contact_id FROM "
                                                "conversations WHERE closed_at IS NULL GROUP BY "
                                                "contact_id HAVING count(*) > 1) AS twice",
    }
    with store.read() as tx:
        return {name: tx.connection.execute(text(sql)).scalar_one() for name, sql in checks.items()}


def test_crossing_merges_and_messages_racing_them_leave_contacts_whole(four_workers, store):
    ids: dict[str, int] = {}
    for n in range(PAIRS):
        for side in ("a", "b"):
            visitor = f"pair{n}-{side}"
            ids[visitor] = _message(four_workers, visitor, 0).json()["results"][0]["contact_id"]

    def round_of(n: int) -> list[requests.Response]:
        a, b = ids[f"pair{n}-a"], ids[f"pair{n}-b"]
        return _at_once([lambda: _merge(four_workers, a, b), lambda: _merge(four_workers, b, a),
                         lambda: _message(four_workers, f"pair{n}-a", 1),
                         lambda: _message(four_workers, f"pair{n}-b", 1)])

    with ThreadPoolExecutor(max_workers=6) as pool:
        rounds = list(pool.map(round_of, range(PAIRS)))
    for merges_and_messages in rounds:
        statuses = [r.status_code for r in merges_and_messages]
        assert all(status < 500 for status in statuses), [r.text[:300] for r in merges_and_messages]
        merges = merges_and_messages[:2]
        applied = [r for r in merges if r.status_code == 200 and r.json()["changes"]]
        assert len(applied) == 1, [(r.status_code, r.text[:200]) for r in merges]
        refused = [r for r in merges if r is not applied[0]][0]
        assert refused.status_code == 422 and "merged into" in refused.json()["error"]["message"]
        assert [r.status_code for r in merges_and_messages[2:]] == [200, 200]
    assert _audit(store) == dict.fromkeys(_audit(store), 0)

    # Afterwards each person is one contact, with at most one open conversation, and a new
    # message for either identity lands on the surviving contact.
    for n in range(PAIRS):
        results = [_message(four_workers, f"pair{n}-{side}", 2).json()["results"][0]
                   for side in ("a", "b")]
        assert results[0]["contact_id"] == results[1]["contact_id"]
        conversations = requests.get(f"{four_workers}/api/contacts/{results[0]['contact_id']}"
                                     "/conversations", headers=API, timeout=30).json()
        assert sum(c["status"] == "open" for c in conversations) == 1
    assert _audit(store) == dict.fromkeys(_audit(store), 0)


def test_a_chain_of_merges_at_once_never_makes_a_cycle(four_workers, store):
    ids = [_message(four_workers, f"ring-{n}", 0).json()["results"][0]["contact_id"]
           for n in range(6)]
    ring = [(ids[n], ids[(n + 1) % len(ids)]) for n in range(len(ids))]  # 1<-2<-...<-6<-1
    responses = _at_once([lambda pair=pair: _merge(four_workers, *pair) for pair in ring])
    assert all(r.status_code in (200, 422) for r in responses), [r.text[:200] for r in responses]
    assert _audit(store) == dict.fromkeys(_audit(store), 0)
    survivors = {_message(four_workers, f"ring-{n}", 1).json()["results"][0]["contact_id"]
                 for n in range(6)}
    with store.read() as tx:
        merged = tx.connection.execute(text(
            "SELECT count(*) FROM contacts WHERE merged_into IS NOT NULL")).scalar_one()
    assert len(survivors) == 6 - merged
