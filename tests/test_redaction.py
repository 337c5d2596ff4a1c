"""What counts as a secret in an outbound call, and the call as the API and traces show it."""
from __future__ import annotations

import pytest

from rules_engine.domain.redaction import is_secret_name, redact_url


@pytest.mark.parametrize("name", [
    "Authorization", "proxy-authorization", "COOKIE", "X-Api-Key", "apikey", "access_token",
    "client_secret", "password", "X-Signature", "sig", "X-Session", "X-Auth", "X-Auth-Token"])
def test_names_that_say_secret(name):
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["X-Source", "Accept", "Content-Type", "page", "monkey",
                                  "keyboard", "X-Request-Id"])
def test_names_that_do_not(name):
    assert not is_secret_name(name)


@pytest.mark.parametrize("url, shown", [
    ("https://crm.example.com/t?a=1&b=two", "https://crm.example.com/t?a=1&b=two"),
    ("https://me:pw@crm.example.com/t", "https://[redacted]@crm.example.com/t"),
    ("https://crm.example.com/t?q={{ contact.id }}&token={{ contact.fields.t }}#top",
     "https://crm.example.com/t?q={{ contact.id }}&token=[redacted]#top"),
    ("https://crm.example.com/t?api%5Fkey=x&token", "https://crm.example.com/t?api%5Fkey=[redacted]&token"),
    ("http://[not-an-address/", "[redacted]"),
])
def test_a_url_as_shown(url, shown):
    assert redact_url(url) == shown
