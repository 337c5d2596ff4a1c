"""Custom events: ``custom.<name>`` posted by other systems to /webhooks/events or emitted by
a rule (``emit``), their params' JSON Schemas declared under ``events:`` in a rule file,
checked on arrival and typing conditions, and the static checks about them."""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from connectors import create_app
from rules_engine import Engine, RuleSetInvalid, load_rule_set
from rules_engine.domain.errors import EventError, RuleWarning
from rules_engine.domain.model import CustomEventType, event_type

from . import webhook_payloads as p
from .conftest import T0, event, message

REPO = Path(__file__).resolve().parent.parent

ORDERS = """\
events:
  custom.order_shipped:
    params:
      type: object
      required: [order_id, tracking_url]
      properties:
        order_id: {type: string}
        tracking_url: {type: string}
        total: {type: number}
rules:
  - id: send-the-tracking-link
    trigger: {event: custom.order_shipped}
    actions:
      - send_message: {text: "Order {{ params.order_id }}: {{ params.tracking_url }}"}
  - id: note-any-ping
    trigger: {event: custom.ping}
    actions: [{add_tag: pinged}]
"""


def shipped(**params: Any) -> dict[str, Any]:
    return {"id": f"order-{params.get('order_id', 'x')}", "type": "custom.order_shipped",
            "channel": "whatsapp", "contact": {"external_id": "+33600000001"}, "params": params}


@pytest.fixture
def client(tmp_path, clean_environment, database_url):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "orders.yaml").write_text(ORDERS, "utf-8")
    application = create_app({**p.SECRETS, "rules_dir": str(rules), "database_url": database_url})
    yield application.test_client()
    application.extensions["rules_engine"].store.dispose()


def post_events(client, data: Any):
    body = p.encode(data)
    return client.post("/webhooks/events", data=body, content_type="application/json",
                       headers=p.signed_headers("/webhooks/events", body))


def api_get(client, path: str):
    return client.get(path, headers={"Authorization": f"Bearer {p.SECRETS['api_token']}"})


# -- the type ---------------------------------------------------------------------------------


def test_a_custom_type_is_its_whole_text_and_other_texts_are_refused():
    kind = event_type("custom.order_shipped")
    assert isinstance(kind, CustomEventType)
    assert str(kind) == "custom.order_shipped" == kind
    with pytest.raises(ValueError, match="is not custom.<name>"):
        CustomEventType("custom.Order-Shipped")


# -- at the edge ------------------------------------------------------------------------------


def test_an_order_system_posts_a_custom_event_and_its_rule_sends_the_link(client):
    response = post_events(client, shipped(order_id="A-17", tracking_url="https://t.example/A"))
    assert response.status_code == 200, response.json
    [result] = response.json["results"]
    assert result["fired"] == ["send-the-tracking-link"]
    assert api_get(client, f"/api/contacts/{result['contact_id']}/conversations").json == []
    trace = api_get(client, "/api/events/order-A-17/trace").json
    assert trace["type"] == "custom.order_shipped"
    assert [step["event"] for step in trace["steps"]] == ["custom.order_shipped",
                                                          "contact.created"]
    [rule] = trace["steps"][0]["rules"]
    assert rule["actions"][0]["outcome"] == "applied"
    metrics = api_get(client, "/metrics").get_data(as_text=True)
    assert 'type="custom.order_shipped"' in metrics


def test_params_that_break_the_declared_schema_are_refused_with_the_place_and_nothing_applied(
        client):
    response = post_events(client, shipped(order_id=17, tracking_url="https://t.example/17"))
    assert response.status_code == 422
    error = response.json["error"]
    assert error["path"] == "params/order_id"
    assert (error["message"], error["hint"]) == ("expected text, got a whole number",
                                                 "`order_id` takes text")
    assert error["code"] == "invalid_event"
    missing = post_events(client, shipped(order_id="B-1"))
    assert missing.status_code == 422
    assert missing.json["error"]["path"] == "params/tracking_url"
    assert "tracking_url" in missing.json["error"]["message"]
    lookup = api_get(client, "/api/contacts?channel=whatsapp&external_id=%2B33600000001")
    assert lookup.json == []


def test_the_custom_event_the_api_reference_shows_is_applied(client):
    documented = (REPO / "docs" / "api.md").read_text("utf-8").split(
        "### Events from other systems")[1].split("```json\n")[1].split("```")[0]
    response = post_events(client, json.loads(documented))
    assert response.status_code == 200, response.json
    assert response.json["results"][0]["fired"] == ["send-the-tracking-link"]


def test_an_undeclared_custom_event_is_accepted_with_free_form_params(client):
    response = post_events(client, {"id": "ping-1", "type": "custom.ping", "channel": "webchat",
                                    "contact": {"external_id": "v-1"},
                                    "params": {"anything": [1, {"goes": True}]}})
    assert response.status_code == 200, response.json
    assert response.json["results"][0]["fired"] == ["note-any-ping"]


def test_the_engine_refuses_broken_params_whatever_brings_the_event(make_engine):
    engine = make_engine(ORDERS)
    with pytest.raises(EventError) as refused:
        engine.process(event("custom.order_shipped", channel="whatsapp",
                             contact={"external_id": "+1"}, params={"order_id": "D"}))
    assert refused.value.path == "params/tracking_url"


# -- emit -------------------------------------------------------------------------------------

HANDOVER = """\
events:
  custom.big_order:
    params:
      type: object
      required: [order_id]
      properties: {order_id: {type: string}}
rules:
  - id: spot
    trigger: {event: message.received}
    conditions: "message.text != 'number'"
    actions:
      - emit: {event: custom.big_order, params: {order_id: "{{ message.text }}"}}
  - id: spot-a-number
    trigger: {event: message.received}
    conditions: "message.text == 'number'"
    actions:
      - emit: {event: custom.big_order, params: {order_id: "{{ len(message.text) }}"}}
  - id: follow-up
    trigger: {event: custom.big_order}
    actions:
      - set_field: {name: last_order, expr: params.order_id}
"""


def test_emit_starts_the_rules_on_the_custom_event_in_the_same_chain(make_engine):
    engine = make_engine(HANDOVER)
    result = engine.process(message("fb-1", "A-9"))
    assert result.fired == ["spot", "follow-up"]
    trace = result.trace
    assert trace is not None
    [emitted] = [step for step in trace["steps"] if step["event"] == "custom.big_order"]
    assert (emitted["depth"], emitted["params"]) == (1, {"order_id": "A-9"})


def test_emitted_params_that_break_the_declared_schema_are_an_error_and_start_nothing(
        make_engine):
    result = make_engine(HANDOVER).process(message("fb-2", "number"))
    assert result.fired == ["spot-a-number"]
    trace = result.trace
    assert trace is not None
    [rule] = [rule for rule in trace["steps"][0]["rules"] if rule["rule_id"] == "spot-a-number"]
    [line] = rule["actions"]
    assert line["outcome"] == "error"
    assert line["detail"] == ("custom.big_order's declared schema refuses params/order_id: "
                              "expected text, got a whole number")
    assert "custom.big_order" not in [step["event"] for step in trace["steps"]]


PING_PONG = """\
rules:
  - id: ping
    trigger: {event: custom.ping}
    conditions: "event.depth < 100"
    actions: [{emit: {event: custom.pong}}]
  - id: pong
    trigger: {event: custom.pong}
    conditions: "event.depth < 100"
    actions: [{emit: {event: custom.ping}}]
"""


def test_rules_that_emit_each_other_are_a_loop_the_depth_bound_stops(make_engine):
    engine = make_engine(PING_PONG, max_depth=3)
    assert any("trigger one another in a loop" in w.message for w in engine.rules.warnings)
    result = engine.process(event("custom.ping", channel="api", contact={"external_id": "x"}))
    trace = result.trace
    assert trace is not None
    assert [step["event"] for step in trace["steps"] if step["event"] != "contact.created"] == [
        "custom.ping", "custom.pong", "custom.ping", "custom.pong"]
    bound = trace["depth_bound"]
    assert bound["reached"] is True and bound["max_depth"] == 3
    assert [(d["event"], d["depth"]) for d in bound["dropped"]] == [("custom.ping", 4)]


def test_rules_that_emit_each_other_with_nothing_to_stop_them_are_refused(write_rules):
    loop = PING_PONG.replace('    conditions: "event.depth < 100"\n', "")
    with pytest.raises(RuleSetInvalid, match="trigger one another with no condition"):
        load_rule_set([write_rules(loop)])


# -- static checks ----------------------------------------------------------------------------


def problems_of(write_rules, text: str) -> list[str]:
    """The errors (not the warnings) that refuse the rule set ``text``."""
    with pytest.raises(RuleSetInvalid) as invalid:
        load_rule_set([write_rules(text)])
    return [str(error) for error in invalid.value.errors if not isinstance(error, RuleWarning)]


def test_a_trigger_on_a_custom_event_nothing_declares_or_emits_is_a_warning(write_rules):
    rules = load_rule_set([write_rules(ORDERS.replace("custom.ping", "custom.order_shiped"))])
    [warning] = [w for w in rules.warnings if "nothing declares or emits" in w.message]
    assert warning.path == "trigger/event" and warning.rule_id == "note-any-ping"
    assert warning.hint == "did you mean `custom.order_shipped`?"


def test_an_emitted_custom_event_is_not_reported_as_undeclared(write_rules):
    rules = load_rule_set([write_rules(PING_PONG)])
    assert not [w for w in rules.warnings if "nothing declares or emits" in w.message]


def test_emit_params_that_break_the_declared_schema_are_refused_at_load(write_rules):
    broken = HANDOVER.replace('params: {order_id: "{{ message.text }}"}', "params: {order_id: 7}")
    [problem] = [text for text in problems_of(write_rules, broken) if "declared schema" in text]
    assert "[spot] actions/0/emit/params/order_id" in problem
    assert "expected text, got a whole number" in problem
    missing = HANDOVER.replace('params: {order_id: "{{ message.text }}"}', "params: {}")
    [problem] = [text for text in problems_of(write_rules, missing) if "declared schema" in text]
    assert "actions/0/emit/params/order_id" in problem


@pytest.mark.parametrize("condition, expected", [
    ("params.trackng_url == ''", "did you mean `params.tracking_url`?"),
    ("upper(params.total) == 'X'", "number"),
])
def test_conditions_on_declared_params_are_typed_by_their_schema(write_rules, condition,
                                                                  expected):
    text = ORDERS.replace("    actions:\n      - send_message",
                          f"    conditions: \"{condition}\"\n    actions:\n      - send_message", 1)
    [problem] = problems_of(write_rules, text)
    assert "[send-the-tracking-link] conditions" in problem and expected in problem


def test_a_comparison_a_declared_type_can_never_make_true_is_a_warning(write_rules):
    text = ORDERS.replace("    actions:\n      - send_message",
                          "    conditions: \"params.total == 'big'\"\n    actions:\n"
                          "      - send_message", 1)
    rules = load_rule_set([write_rules(text)])
    [warning] = [w for w in rules.warnings if w.rule_id == "send-the-tracking-link"]
    assert warning.path == "conditions"


def test_a_custom_event_declared_twice_or_with_a_broken_schema_is_refused(write_rules):
    write_rules("events: {custom.order_shipped: {}}\n", "more.yaml")
    [twice] = problems_of(write_rules, ORDERS)
    assert "custom.order_shipped is already declared in" in twice
    broken = ORDERS.replace("total: {type: number}", "total: {type: numeric}")
    (write_rules("rules: []\n", "more.yaml") / "more.yaml").unlink()
    [problem] = problems_of(write_rules, broken)
    assert "not a valid JSON Schema" in problem and "events/custom.order_shipped/params" in problem


def test_validate_reports_the_undeclared_trigger_with_its_place(write_rules):
    folder = write_rules(ORDERS.replace("custom.ping", "custom.order_shiped"))
    done = subprocess.run([sys.executable, "-m", "rules_engine.cli", "validate", str(folder)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert "rules.yaml:15:5 [note-any-ping] trigger/event: nothing declares" in output
    assert "nothing declares or emits custom.order_shiped" in output


def test_ingest_refuses_broken_params_by_line_and_explain_shows_the_emitted_chain(tmp_path):
    events = tmp_path / "orders.jsonl"
    good = {"id": "o-1", "type": "custom.order_shipped", "channel": "whatsapp",
            "contact": {"external_id": "+33611"},
            "params": {"order_id": "Z-1", "tracking_url": "https://t.example/Z", "total": 900}}
    broken = {**good, "id": "o-2", "params": {"order_id": "Z-2"}}
    events.write_text(p.encode(good).decode() + "\n" + p.encode(broken).decode() + "\n")
    database = ["--rules", str(REPO / "rules"), "--database-url",
                f"sqlite:///{tmp_path / 'store.db'}"]
    ingested = subprocess.run([sys.executable, "-m", "rules_engine.cli", *database, "ingest",
                               str(events)], capture_output=True, text=True, check=False)
    assert ingested.returncode == 1
    assert "1 applied, 0 duplicate(s) skipped, 1 rejected" in ingested.stdout
    assert ("orders.jsonl:2: rejected: params/tracking_url: missing required key "
            "'tracking_url' (hint: add `tracking_url: ...`)") in ingested.stderr
    explained = subprocess.run([sys.executable, "-m", "rules_engine.cli", *database, "explain",
                                "o-1"], capture_output=True, text=True, check=False)
    assert explained.returncode == 0, explained.stderr
    assert "event o-1: custom.order_shipped on whatsapp" in explained.stdout
    assert "actions/0 emit: applied (emitted custom.big_order)" in explained.stdout
    assert "  custom.big_order (depth 1) {order_id=Z-1}\n    [FIRED] follow-up-big-orders" \
        in explained.stdout


def test_a_rule_on_a_custom_event_resumes_after_a_wait_with_its_params(make_engine):
    engine = make_engine(ORDERS.replace(
        "    actions: [{add_tag: pinged}]",
        "    actions: [{wait: {for: 10m}}, {set_field: {name: pinged_by, expr: params.who}}]"))
    started = engine.process(event("custom.ping", channel="api", contact={"external_id": "p"},
                                   params={"who": "billing"}))
    [(_, resumed)] = engine.fire_due(T0 + timedelta(minutes=11))
    assert not isinstance(resumed, Exception)
    assert resumed.fired == ["note-any-ping"]
    with engine.store.read() as tx:
        assert tx.fields(started.contact_id)["pinged_by"] == "billing"


def test_a_declared_param_the_event_leaves_out_reads_as_null(store):
    engine = Engine(store, load_rule_set([REPO / "rules"]))
    result = engine.process(event("custom.order_shipped", channel="whatsapp",
                                  contact={"external_id": "+1"},
                                  params={"order_id": "A", "tracking_url": "https://t/A"}))
    trace = result.trace
    assert trace is not None
    [spot] = [r for r in trace["steps"][0]["rules"] if r["rule_id"] == "spot-big-orders"]
    assert spot["result"] == "conditions_false"
    assert result.fired == ["send-the-tracking-link", "remember-first-channel"]


def test_an_object_param_s_own_fields_are_free_form(write_rules):
    text = ORDERS.replace("        total: {type: number}",
                          "        total: {type: number}\n"
                          "        address: {type: object, properties: {city: {type: string}}}")
    text = text.replace("    actions:\n      - send_message",
                        "    conditions: \"params.address.anything == 1\"\n    actions:\n"
                        "      - send_message", 1)
    rules = load_rule_set([write_rules(text)])
    assert not [w for w in rules.warnings if w.rule_id == "send-the-tracking-link"]


def test_a_trigger_on_a_custom_type_in_the_wrong_form_is_explained(write_rules):
    problems = problems_of(write_rules, ORDERS.replace("custom.ping", "custom.Ping"))
    [problem] = [text for text in problems if "custom.Ping" in text]
    assert "[note-any-ping] trigger/event: unknown trigger event 'custom.Ping' (hint: a " \
           "custom event is custom.<name>, the name in lower case, digits and _" in problem


def test_an_event_of_a_custom_type_in_the_wrong_form_is_refused_at_its_type(client):
    response = post_events(client, {**shipped(order_id="C", tracking_url="u"),
                                    "type": "custom.Order"})
    assert (response.status_code, response.json["error"]["path"]) == (422, "type")
    assert response.json["error"]["hint"].startswith("a custom event is custom.<name>")
