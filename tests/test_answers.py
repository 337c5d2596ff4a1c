"""An answer is a promise: a 5xx means nothing was applied, and an applied event is never
answered 5xx, whatever fails after its transaction committed."""
from __future__ import annotations

from connectors import channels, observability
from rules_engine import Engine

from . import webhook_payloads as p
from .test_webhooks import app, client  # noqa: F401 (fixtures)


def post_events(client, data) -> object:  # noqa: F811
    body = p.encode(data)
    return client.post("/webhooks/events", data=body, content_type="application/json",
                       headers=p.signed_headers("/webhooks/events", body))


def hello(event_id: str, contact: str = "answer-visitor") -> dict:
    return {"id": event_id, "type": "message.received", "channel": "webchat",
            "contact": {"external_id": contact}, "message": {"text": "hello"}}


def applied(app, event_id: str) -> bool:  # noqa: F811
    with app.extensions["rules_engine"].store.read() as tx:
        return tx.is_event_processed(event_id)


def test_counting_that_fails_after_the_commit_never_turns_the_answer_into_a_5xx(
        app, client, monkeypatch, caplog):  # noqa: F811
    def broken(*_args):
        raise OSError("the metrics directory is gone")

    monkeypatch.setattr(observability, "_child", broken)
    answer = post_events(client, hello("counted-or-not"))
    assert answer.status_code == 200
    assert answer.json["results"][0]["status"] == "applied"
    assert applied(app, "counted-or-not")
    assert "metrics: record_event failed" in caplog.text


def test_an_answer_that_cannot_be_built_after_the_commit_is_a_200_saying_so(
        app, client, monkeypatch):  # noqa: F811
    adapter = channels.adapters()["facebook"]

    def broken(*_args):
        raise RuntimeError("cannot render")

    monkeypatch.setattr(type(adapter), "respond", broken)
    body = p.encode(p.messenger(p.fb_message("PSID-ANSWER", "m_answer_1", "hello")))
    answer = client.post("/webhooks/facebook", data=body, content_type="application/json",
                         headers=p.signed_headers("/webhooks/facebook", body))
    assert answer.status_code == 200
    assert answer.json["results"][0]["status"] == "applied"
    assert "the events were applied" in answer.json["warning"]


def test_a_failure_in_the_middle_of_a_list_applies_none_of_it(app, client, monkeypatch):  # noqa: F811
    original = Engine._process

    def failing_on_the_second(self, tx, event, *args, **kwargs):
        if event.id == "list-2":
            raise RuntimeError("the database went away")
        return original(self, tx, event, *args, **kwargs)

    monkeypatch.setattr(Engine, "_process", failing_on_the_second)
    answer = post_events(client, [hello("list-1"), hello("list-2", "other"), hello("list-3")])
    assert answer.status_code == 500
    assert "nothing was applied" in answer.json["error"]["message"]
    assert not any(applied(app, f"list-{n}") for n in (1, 2, 3))
    monkeypatch.setattr(Engine, "_process", original)
    retried = post_events(client, [hello("list-1"), hello("list-2", "other"), hello("list-3")])
    assert [r["status"] for r in retried.json["results"]] == ["applied"] * 3


def test_a_refused_event_in_a_list_is_named_and_none_of_the_list_applies(app, client):  # noqa: F811
    refused = {"id": "close-missing", "type": "conversation.close", "conversation_id": 999999,
               "actor": "maria"}
    answer = post_events(client, [hello("before-refusal"), refused, hello("after-refusal")])
    assert answer.status_code == 404
    assert answer.json["error"]["path"].startswith("1/")
    assert "none of the list was applied" in answer.json["error"]["message"]
    assert not applied(app, "before-refusal") and not applied(app, "after-refusal")
