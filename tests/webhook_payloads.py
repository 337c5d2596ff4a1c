"""Request bodies in the channels' documented formats, and their signatures."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

SECRETS = {
    "api_token": "api-token-for-tests-0123456789abcdef",  # ours: at least 32 characters
    "webhook_secret": "events-secret-for-tests-0123456789",
    "facebook_app_secret": "fb-app-secret-for-tests",
    "facebook_verify_token": "fb-verify-token-for-tests",
    "viber_auth_token": "viber-auth-token-for-tests",
    "dialogflow_username": "dialogflow",
    "dialogflow_password": "df-password-for-tests",
    "dialogflow_token": "df-token-for-tests",
    "whatsapp_app_secret": "wa-app-secret-for-tests",
    "whatsapp_verify_token": "wa-verify-token-for-tests",
    "telegram_secret_token": "tg-secret-token-for-tests",
}


def signed_headers(route: str, body: bytes) -> dict[str, str]:
    """The headers each platform authenticates ``body`` with, as it really sends them."""
    if route == "/webhooks/facebook":
        return {"X-Hub-Signature-256": "sha256=" + hmac_hex(SECRETS["facebook_app_secret"], body)}
    if route == "/webhooks/whatsapp":
        return {"X-Hub-Signature-256": "sha256=" + hmac_hex(SECRETS["whatsapp_app_secret"], body)}
    if route == "/webhooks/viber":
        return {"X-Viber-Content-Signature": hmac_hex(SECRETS["viber_auth_token"], body)}
    if route == "/webhooks/telegram":
        return {"X-Telegram-Bot-Api-Secret-Token": SECRETS["telegram_secret_token"]}
    if route.startswith("/webhooks/dialogflow"):
        return {"Authorization": basic_auth(SECRETS["dialogflow_username"],
                                            SECRETS["dialogflow_password"])}
    if route == "/webhooks/events":
        return {"X-Signature-256": "sha256=" + hmac_hex(SECRETS["webhook_secret"], body)}
    raise ValueError(f"no signing scheme for {route}")


def hmac_hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def encode(data: Any) -> bytes:
    return json.dumps(data).encode()


def messenger(*items: dict[str, Any], page: str = "PAGE_1") -> dict[str, Any]:
    """A Messenger Platform webhook body with one entry holding ``items``."""
    return {"object": "page",
            "entry": [{"id": page, "time": 1_764_061_200_000, "messaging": list(items)}]}


def fb_message(psid: str, mid: str, text: str, timestamp: int = 1_764_061_200_000) -> dict[str, Any]:
    return {"sender": {"id": psid}, "recipient": {"id": "PAGE_1"}, "timestamp": timestamp,
            "message": {"mid": mid, "text": text}}


def fb_get_started(psid: str, mid: str, timestamp: int = 1_764_061_200_000) -> dict[str, Any]:
    return {"sender": {"id": psid}, "recipient": {"id": "PAGE_1"}, "timestamp": timestamp,
            "postback": {"mid": mid, "title": "Get Started", "payload": "GET_STARTED"}}


def viber_conversation_started(user_id: str, token: int) -> dict[str, Any]:
    return {"event": "conversation_started", "timestamp": 1_764_061_200_000,
            "chat_hostname": "SN-376_", "message_token": token, "type": "open",
            "context": "from-website", "user": {"id": user_id, "name": "Ahmad",
                                                "language": "en", "country": "GB",
                                                "api_version": 10},
            "subscribed": False}


def viber_message(user_id: str, token: int, text: str) -> dict[str, Any]:
    return {"event": "message", "timestamp": 1_764_061_260_000, "chat_hostname": "SN-376_",
            "message_token": token,
            "sender": {"id": user_id, "name": "Ahmad", "language": "en", "country": "GB",
                       "api_version": 10},
            "message": {"type": "text", "text": text}, "silent": False}


def dialogflow_es(response_id: str, session: str, *, parameters: dict[str, Any] | None = None,
                  contexts: list[dict[str, Any]] | None = None, intent: str = "smalltalk",
                  payload: dict[str, Any] | None = None, source: str = "") -> dict[str, Any]:
    """A Dialogflow ES v2 WebhookRequest."""
    body: dict[str, Any] = {
        "responseId": response_id,
        "session": f"projects/demo-agent/agent/sessions/{session}",
        "queryResult": {
            "queryText": "that's all, thanks",
            "parameters": parameters or {},
            "allRequiredParamsPresent": True,
            "fulfillmentText": "Glad to help!",
            "outputContexts": contexts or [],
            "intent": {"name": "projects/demo-agent/agent/intents/3b9c", "displayName": intent},
            "intentDetectionConfidence": 0.92,
            "languageCode": "en",
        },
        "originalDetectIntentRequest": {"source": source, "payload": payload or {}},
    }
    return body


def es_context(session: str, name: str, parameters: dict[str, Any], lifespan: int = 5) -> dict[str, Any]:
    return {"name": f"projects/demo-agent/agent/sessions/{session}/contexts/{name}",
            "lifespanCount": lifespan, "parameters": parameters}


def dialogflow_cx(response_id: str, session: str, parameters: dict[str, Any], *,
                  payload: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Dialogflow CX v3 WebhookRequest."""
    return {
        "detectIntentResponseId": response_id,
        "intentInfo": {"lastMatchedIntent": "projects/p/locations/global/agents/a/intents/i1",
                       "displayName": "order.done", "confidence": 0.88,
                       "parameters": {"order": {"originalValue": "42", "resolvedValue": 42}}},
        "pageInfo": {"currentPage": "projects/p/locations/global/agents/a/flows/f/pages/p",
                     "displayName": "End"},
        "sessionInfo": {"session": f"projects/p/locations/global/agents/a/sessions/{session}",
                        "parameters": parameters},
        "fulfillmentInfo": {"tag": "close"},
        "text": "that's all",
        "languageCode": "en",
        "payload": payload or {},
    }


def basic_auth(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
