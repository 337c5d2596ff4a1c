"""Property-based fuzzing of every webhook and the users' API (Hypothesis, fixed budget).

Each example is a real-format body with structure-aware mutations (``tests/fuzzing.py``),
signed as the platform signs it. Whatever the mutation: never a 5xx, always a JSON answer,
and the store's invariants hold afterwards (one open conversation per contact, nothing
left on a merged-away contact, no merge cycle).
"""
from __future__ import annotations

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from connectors import create_app

from . import fuzzing
from . import webhook_payloads as p

BODIES = fuzzing.channel_bodies() + fuzzing.event_bodies()
FUZZ = settings(max_examples=1000, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture
def app(tmp_path, clean_environment, database_url):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text((fuzzing.FIXTURES.parent.parent.parent / "rules" /
                                       "conversations.yaml").read_text("utf-8"), "utf-8")
    application = create_app({**p.SECRETS, "rules_dir": str(rules), "database_url": database_url,
                              "max_body_bytes": 256_000})
    yield application
    application.extensions["rules_engine"].store.dispose()


def invariants_hold(app) -> None:
    """The store's invariants, read with SQL as an auditor would."""
    store = app.extensions["rules_engine"].store
    with store.engine.connect() as connection:
        def count(sql: str) -> int:
            return connection.execute(text(sql)).scalar_one()
        assert count("SELECT count(*) FROM (SELECT contact_id FROM conversations WHERE closed_at "
                     "IS NULL GROUP BY contact_id HAVING count(*) > 1) AS twice") == 0
        assert count("SELECT count(*) FROM contact_identities i JOIN contacts c ON "
                     "c.id = i.contact_id WHERE c.merged_into IS NOT NULL") == 0
        assert count("SELECT count(*) FROM conversations v JOIN contacts c ON c.id = v.contact_id "
                     "WHERE c.merged_into IS NOT NULL AND v.closed_at IS NULL") == 0
        assert count("SELECT count(*) FROM contacts a JOIN contacts b ON a.merged_into = b.id "
                     "WHERE b.merged_into IS NOT NULL") == 0


def mutations_of(body) -> st.SearchStrategy[list[fuzzing.Mutation]]:
    """Mutations at places picked by their key's name first (so a rare key such as ``type``
    is as likely as ``id``), with raw JSON from the hostile list, type swaps or any JSON."""
    by_name = fuzzing.places_by_name(body)
    names = sorted(by_name)
    place = st.sampled_from(names).flatmap(lambda name: st.sampled_from(by_name[name]))
    raw = st.one_of(st.sampled_from(fuzzing.HOSTILE), st.sampled_from(fuzzing.TYPE_SWAPS),
                    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20)
                                 | st.floats(allow_nan=True, allow_infinity=True),
                                 lambda inner: st.lists(inner, max_size=3)
                                 | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                                 max_leaves=8).map(json.dumps))
    one = st.builds(fuzzing.Mutation, st.sampled_from(["replace", "replace", "delete", "duplicate"]),
                    place, raw)
    return st.lists(one, min_size=1, max_size=3)


def answered_as_json(response) -> None:
    assert response.status_code < 500, response.get_data(as_text=True)[:500]
    if response.status_code >= 400:
        assert response.is_json and "error" in response.json


@FUZZ
@given(data=st.data())
def test_mutated_webhook_bodies_never_get_a_5xx(app, data):
    route, body = data.draw(st.sampled_from(BODIES), label="body")
    if data.draw(st.booleans(), label="new ids"):
        body = fuzzing.fresh_ids(body, data.draw(st.integers(0, 10**9), label="salt"))
    raw = fuzzing.apply(body, data.draw(mutations_of(body), label="mutations"))
    response = app.test_client().post(route, data=raw, content_type="application/json",
                                      headers=p.signed_headers(route, raw))
    answered_as_json(response)
    invariants_hold(app)


@FUZZ
@given(data=st.data())
def test_mutated_api_requests_never_get_a_5xx(app, data):
    client = app.test_client()
    for route, body in fuzzing.event_bodies()[:1]:  # a contact and a conversation to act on
        raw = json.dumps(body).encode()
        client.post(route, data=raw, content_type="application/json",
                    headers=p.signed_headers(route, raw))
    method, url, body = data.draw(st.sampled_from(fuzzing.api_requests()), label="request")
    url = fuzzing.mutate_url(url, random.Random(data.draw(st.integers(0, 2**32), label="seed")))
    headers = {"Authorization": f"Bearer {p.SECRETS['api_token']}"}
    if body is None:
        response = client.get(url, headers=headers)
    else:
        raw = fuzzing.apply(body, data.draw(mutations_of(body), label="mutations"))
        response = client.post(url, data=raw, content_type="application/json", headers=headers)
    answered_as_json(response)
    invariants_hold(app)


@settings(max_examples=800, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_compiled_event_schema_agrees_with_the_reference(data):
    """fastjsonschema (the fast path) and jsonschema (the messages) judge every mutated
    event the same way."""
    from rules_engine.formats.events import _event_validator, _fast_event_check

    _, body = data.draw(st.sampled_from(fuzzing.event_bodies()), label="event")
    mutated = json.loads(fuzzing.apply(body, data.draw(mutations_of(body), label="mutations"))
                         .decode("utf-8", "surrogatepass"), parse_constant=lambda c: None)
    for item in mutated if isinstance(mutated, list) else [mutated]:
        reference_valid = not any(True for _ in _event_validator().iter_errors(item))
        try:
            _fast_event_check()(item)
            fast_valid = True
        except Exception:  # noqa: BLE001 - fastjsonschema's refusal, of whatever kind
            fast_valid = False
        assert fast_valid == reference_valid, item
