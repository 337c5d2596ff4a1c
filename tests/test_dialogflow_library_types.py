"""Fulfillment requests built with Google's own Dialogflow types, as the library prints them.

Each request is a ``google.cloud.dialogflow_v2`` (ES) or ``google.cloud.dialogflowcx_v3``
(CX) ``WebhookRequest``, printed by protobuf's ``json_format`` with and without the fields
that hold default values, and posted with the agent's credentials; every answer must parse
strictly (no unknown field) as the library's own ``WebhookResponse``. What the answers must
hold comes from Google's reference: an ES ``WebhookResponse.outputContexts`` "will overwrite
currently active contexts for the session", and a CX webhook removes a session parameter by
setting it "to null in WebhookResponse" (``SessionInfo.parameters``). What the requests must
do is the product's: ``RB_MARKDONE`` true closes the person's conversation (close source
``dialogflow``), false opens one, ``RB_ADDTAGS`` / ``RB_REMOVETAGS`` tag and untag,
``RB_BOTSTATUS`` false hands over to a human.
"""
from __future__ import annotations

import inspect
import itertools
from dataclasses import dataclass
from typing import Any

import pytest
from google.cloud import dialogflow_v2 as es
from google.cloud import dialogflowcx_v3 as cx
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors import create_app

from . import webhook_payloads as p

ROUTES = {"es": "/webhooks/dialogflow", "cx": "/webhooks/dialogflow-cx"}
AUTHORIZATION = {  # ES with the basic credentials, CX with the bearer token
    "es": p.basic_auth(p.SECRETS["dialogflow_username"], p.SECRETS["dialogflow_password"]),
    "cx": f"Bearer {p.SECRETS['dialogflow_token']}"}
API = {"Authorization": f"Bearer {p.SECRETS['api_token']}"}
# The printer's switch for fields with default values (the older name before protobuf 5.26).
WITH_DEFAULTS = ("always_print_fields_with_no_presence"
                 if "always_print_fields_with_no_presence"
                 in inspect.signature(json_format.MessageToJson).parameters
                 else "including_default_value_fields")
ES_AGENT = "projects/rules-engine-test/agent"
CX_AGENT = "projects/rules-engine-test/locations/global/agents/5f1c-agent"


@pytest.fixture
def client(tmp_path, clean_environment, database_url):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text("rules: []\n", "utf-8")
    app = create_app({**p.SECRETS, "rules_dir": str(rules), "database_url": database_url})
    yield app.test_client()
    app.extensions["rules_engine"].store.dispose()


def pb(message: Any) -> Any:
    """The protobuf message under a library (proto-plus) message."""
    return type(message).pb(message)


def printed(request: Any, *, defaults: bool) -> bytes:
    """The request as JSON, printed by the library (with or without default values)."""
    return json_format.MessageToJson(pb(request), **{WITH_DEFAULTS: defaults}).encode()


def post(client, version: str, body: bytes) -> Any:
    """Post a printed request; its answer parsed strictly as the library's WebhookResponse."""
    response = client.post(ROUTES[version], data=body, content_type="application/json",
                           headers={"Authorization": AUTHORIZATION[version]})
    assert response.status_code == 200, response.get_data(as_text=True)
    types = es if version == "es" else cx
    return json_format.Parse(response.get_data(as_text=True), types.WebhookResponse.pb()(),
                             ignore_unknown_fields=False)


@dataclass(frozen=True)
class Variant:
    """One way a request is built and printed.

    ``where``: ES ``query`` (``queryResult.parameters``) or ``context`` (an output context's
    parameters); CX ``session`` (``sessionInfo.parameters``) or ``intent``
    (``intentInfo.parameters``). ``rich``: many fields set, and the person named the way a
    real integration names them (ES: Dialogflow's Messenger integration; CX: the caller's
    payload), else only what a console test sends (the person is the session).
    """

    version: str
    where: str
    rich: bool
    defaults: bool

    @property
    def name(self) -> str:
        return (f"{self.version}-{self.where}-{'rich' if self.rich else 'plain'}-"
                f"{'defaults' if self.defaults else 'sparse'}")

    def person(self, session: str) -> tuple[str, str]:
        return ("facebook", f"psid-{session}") if self.rich else ("dialogflow", session)


VARIANTS = [Variant(version, where, rich, defaults)
            for version, places in (("es", ("query", "context")), ("cx", ("session", "intent")))
            for where in places for rich in (False, True) for defaults in (False, True)]


def es_request(variant: Variant, session: str, response_id: str,
               rb: dict[str, Any]) -> es.WebhookRequest:
    path = f"{ES_AGENT}/sessions/{session}"
    context = es.Context(name=f"{path}/contexts/order-followup", lifespan_count=5,
                         parameters={"order": 42, **(rb if variant.where == "context" else {})})
    request = es.WebhookRequest(session=path, response_id=response_id, query_result=es.QueryResult(
        query_text="that's all, thanks", language_code="en",
        parameters=rb if variant.where == "query" else {},
        output_contexts=[context], intent_detection_confidence=0.92,
        intent=es.Intent(name=f"{ES_AGENT}/intents/3b9c", display_name="order.done")))
    if variant.rich:
        result = request.query_result
        result.action = "order.done"
        result.all_required_params_present = True
        result.fulfillment_text = "Glad to help!"
        result.fulfillment_messages = [
            es.Intent.Message(text=es.Intent.Message.Text(text=["Glad to help!"])),
            es.Intent.Message(quick_replies=es.Intent.Message.QuickReplies(
                title="Anything else?", quick_replies=["No", "Yes"]),
                platform=es.Intent.Message.Platform.FACEBOOK),
            es.Intent.Message(payload={"facebook": {"text": "Bye"}})]
        result.output_contexts.append(es.Context(
            name=f"{path}/contexts/generic", lifespan_count=4,
            parameters={"facebook_sender_id": f"psid-{session}"}))
        result.intent = es.Intent(
            name=result.intent.name, display_name=result.intent.display_name,
            webhook_state=es.Intent.WebhookState.WEBHOOK_STATE_ENABLED, events=["ORDER_DONE"],
            parameters=[es.Intent.Parameter(
                name="b1c6", display_name="order", value="$order", mandatory=True,
                entity_type_display_name="@sys.number", prompts=["Which order?"])])
        result.diagnostic_info = {"webhook_latency_ms": 12}
        result.sentiment_analysis_result = es.SentimentAnalysisResult(
            query_text_sentiment=es.Sentiment(score=0.4, magnitude=0.4))
        request.original_detect_intent_request = es.OriginalDetectIntentRequest(
            source="facebook", version="2", payload={"data": {
                "sender": {"id": f"psid-{session}"}, "recipient": {"id": "PAGE_1"},
                "message": {"mid": f"m_{response_id}", "text": "that's all, thanks"},
                "timestamp": 1764061200000}, "source": "facebook"})
    return request


def cx_request(variant: Variant, session: str, response_id: str,
               rb: dict[str, Any]) -> cx.WebhookRequest:
    value = cx.WebhookRequest.IntentInfo.IntentParameterValue
    intent_parameters = {name: value(original_value=str(item), resolved_value=item)
                         for name, item in rb.items() if variant.where == "intent"}
    request = cx.WebhookRequest(
        detect_intent_response_id=response_id, text="that's all, thanks", language_code="en",
        fulfillment_info=cx.WebhookRequest.FulfillmentInfo(tag="order-done"),
        intent_info=cx.WebhookRequest.IntentInfo(
            last_matched_intent=f"{CX_AGENT}/intents/0ba1", display_name="order.done",
            confidence=0.88, parameters=intent_parameters),
        session_info=cx.SessionInfo(session=f"{CX_AGENT}/sessions/{session}",
                                    parameters=rb if variant.where == "session" else {}))
    if variant.rich:
        request.page_info = cx.PageInfo(
            current_page=f"{CX_AGENT}/flows/00000000-0000-0000-0000-000000000000/pages/End",
            display_name="End", form_info=cx.PageInfo.FormInfo(parameter_info=[
                cx.PageInfo.FormInfo.ParameterInfo(
                    display_name="order", required=True, just_collected=True, value=42,
                    state=cx.PageInfo.FormInfo.ParameterInfo.ParameterState.FILLED)]))
        request.session_info.parameters["order"] = 42
        request.messages = [
            cx.ResponseMessage(text=cx.ResponseMessage.Text(text=["Glad to help!"])),
            cx.ResponseMessage(payload={"richContent": [[{"type": "chips"}]]})]
        request.payload = {"channel": "facebook", "external_id": f"psid-{session}",
                           "page": {"url": "https://shop.example/help"}}
        request.sentiment_analysis_result = cx.WebhookRequest.SentimentAnalysisResult(
            score=0.4, magnitude=0.4)
        request.language_info = cx.LanguageInfo(input_language_code="en",
                                                resolved_language_code="en", confidence_score=1)
    return request


def request_of(variant: Variant, session: str, turn: int, rb: dict[str, Any]) -> Any:
    build = es_request if variant.version == "es" else cx_request
    return build(variant, session, f"{session}-turn-{turn}", rb)


def cleared(request: Any, where: str, rb: dict[str, Any]) -> Any:
    """The documented answer: the RB_* parameters acted on, set to null where they were
    sent (an ES context is returned whole, its lifespan kept; CX session parameters)."""
    nulls = dict.fromkeys(rb)
    if rb and where == "context":
        context = request.query_result.output_contexts[0]
        return pb(es.WebhookResponse(output_contexts=[es.Context(
            name=context.name, lifespan_count=context.lifespan_count,
            parameters={**context.parameters, **nulls})]))
    if rb and where == "session":
        return pb(cx.WebhookResponse(session_info=cx.SessionInfo(parameters=nulls)))
    return pb(es.WebhookResponse() if isinstance(request, es.WebhookRequest)
              else cx.WebhookResponse())


def contact_of(client, channel: str, external_id: str) -> dict[str, Any]:
    [contact] = client.get(f"/api/contacts?channel={channel}&external_id={external_id}",
                           headers=API).json
    return contact


def conversations_of(client, contact: dict[str, Any]) -> list[dict[str, Any]]:
    return client.get(f"/api/contacts/{contact['id']}/conversations", headers=API).json


OPEN = {"RB_MARKDONE": False, "RB_ADDTAGS": "vip, returning"}
HAND_OVER = {"RB_REMOVETAGS": "returning", "RB_BOTSTATUS": False, "RB_NOTIFY": "billing question"}
CLOSE = {"RB_MARKDONE": True}


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda variant: variant.name)
def test_library_built_requests_open_hand_over_and_close(client, variant):
    """Three turns of one session: open and tag, untag and hand over, close."""
    session = f"s-{variant.name}"
    person = variant.person(session)
    for turn, rb in enumerate((OPEN, HAND_OVER, CLOSE)):
        request = request_of(variant, session, turn, rb)
        assert post(client, variant.version, printed(request, defaults=variant.defaults)) \
            == cleared(request, variant.where, rb)
        contact = contact_of(client, *person)
        [conversation] = conversations_of(client, contact)
        if rb is OPEN:
            assert conversation["status"] == "open"
            assert contact["tags"] == ["returning", "vip"]
        if rb is HAND_OVER:
            assert (conversation["status"], conversation["bot_active"]) == ("open", False)
            assert contact["tags"] == ["vip"]
    assert (conversation["status"], conversation["close_source"]) == ("closed", "dialogflow")


# -- property: any request the library can build ---------------------------------------------

_sessions = itertools.count()
# RB_MARKDONE as sent (None: not sent) -> the status of the conversation opened before.
MARKDONE_VALUES = {True: "closed", "true": "closed", False: "open", "false": "open", None: "open"}
json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)
# An agent's own parameters: never RB_*, nor a key that names the person.
PERSON_KEYS = ("contact_id", "channel", "external_id", "source")
parameters = st.dictionaries(
    st.text(min_size=1, max_size=10).filter(
        lambda key: not key.startswith("RB_") and key not in PERSON_KEYS),
    json_values, max_size=4)
words = st.text(max_size=30)


@st.composite
def es_requests(draw: st.DrawFn, session: str, rb: dict[str, Any]) -> tuple[Any, str]:
    """An ES request with drawn contents; ``rb`` in its query parameters or in one context."""
    path = f"{ES_AGENT}/sessions/{session}"
    context_parameters = draw(st.lists(parameters, max_size=3))
    where = draw(st.sampled_from(["query", "context"])) if context_parameters else "query"
    if where == "context":
        context_parameters[0] = {**context_parameters[0], **rb}
    contexts = [es.Context(name=f"{path}/contexts/c{index}", parameters=values,
                           lifespan_count=draw(st.integers(0, 50)))
                for index, values in enumerate(context_parameters)]
    intent_parameters = [es.Intent.Parameter(name=draw(words), display_name=draw(words),
                                             value=draw(words), mandatory=draw(st.booleans()),
                                             prompts=draw(st.lists(words, max_size=2)))
                         for _ in range(draw(st.integers(0, 2)))]
    request = es.WebhookRequest(
        session=path, response_id=f"{session}-turn-1", query_result=es.QueryResult(
            query_text=draw(words), language_code=draw(st.sampled_from(["", "en", "pt-br"])),
            parameters={**draw(parameters), **(rb if where == "query" else {})},
            all_required_params_present=draw(st.booleans()), fulfillment_text=draw(words),
            fulfillment_messages=[
                es.Intent.Message(text=es.Intent.Message.Text(text=[draw(words)]))],
            output_contexts=contexts, intent_detection_confidence=draw(st.floats(0, 1)),
            intent=es.Intent(name=f"{ES_AGENT}/intents/{draw(st.uuids())}",
                             display_name=draw(words), parameters=intent_parameters,
                             is_fallback=draw(st.booleans())),
            webhook_payload=draw(parameters), diagnostic_info=draw(parameters)),
        original_detect_intent_request=es.OriginalDetectIntentRequest(
            source=draw(st.sampled_from(["", "DIALOGFLOW_CONSOLE", "GOOGLE_TELEPHONY"])),
            payload=draw(parameters)))
    return request, where


@st.composite
def cx_requests(draw: st.DrawFn, session: str, rb: dict[str, Any]) -> tuple[Any, str]:
    """A CX request with drawn contents; ``rb`` in its session or its intent parameters."""
    where = draw(st.sampled_from(["session", "intent"]))
    value = cx.WebhookRequest.IntentInfo.IntentParameterValue
    intent_parameters = {**{name: value(original_value=draw(words), resolved_value=item)
                            for name, item in draw(parameters).items()},
                         **{name: value(original_value=str(item), resolved_value=item)
                            for name, item in rb.items() if where == "intent"}}
    query = draw(st.sampled_from(["text", "transcript", "trigger_event"]))
    request = cx.WebhookRequest(
        detect_intent_response_id=f"{session}-turn-1", language_code="en", **{query: draw(words)},
        fulfillment_info=cx.WebhookRequest.FulfillmentInfo(tag=draw(words)),
        intent_info=cx.WebhookRequest.IntentInfo(
            last_matched_intent=f"{CX_AGENT}/intents/{draw(st.uuids())}", display_name=draw(words),
            confidence=draw(st.floats(0, 1)), parameters=intent_parameters),
        page_info=cx.PageInfo(current_page=f"{CX_AGENT}/flows/f/pages/{draw(st.uuids())}",
                              display_name=draw(words)),
        session_info=cx.SessionInfo(session=f"{CX_AGENT}/sessions/{session}",
                                    parameters={**draw(parameters),
                                                **(rb if where == "session" else {})}),
        messages=[cx.ResponseMessage(text=cx.ResponseMessage.Text(text=[draw(words)]))],
        payload=draw(parameters))
    return request, where


@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
@pytest.mark.parametrize("version", ["es", "cx"])
def test_any_library_built_request_is_read_and_answered_as_its_webhook_response(client, version,
                                                                                data):
    """Whatever a request holds and however it is printed: a 200 whose answer parses strictly
    as the library's WebhookResponse, RB_MARKDONE acted on as documented, and the RB_*
    parameter nulled exactly where it was sent (an ES context, CX session parameters)."""
    session = f"prop-{version}-{next(_sessions)}"
    opener = Variant(version, "query" if version == "es" else "session", rich=False, defaults=False)
    post(client, version, printed(request_of(opener, session, 0, {"RB_MARKDONE": False}),
                                  defaults=False))
    markdone = data.draw(st.sampled_from(list(MARKDONE_VALUES)), label="RB_MARKDONE")
    rb = {} if markdone is None else {"RB_MARKDONE": markdone}
    strategy = es_requests if version == "es" else cx_requests
    request, where = data.draw(strategy(session, rb), label="request")
    defaults = data.draw(st.booleans(), label="defaults")
    assert post(client, version, printed(request, defaults=defaults)) == cleared(request, where, rb)
    [conversation] = conversations_of(client, contact_of(client, "dialogflow", session))
    assert conversation["status"] == MARKDONE_VALUES[markdone]
