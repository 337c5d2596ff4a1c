"""A placeholder's value in a rule's URL is percent-encoded where it falls: whatever a
contact writes, the URL keeps the scheme, host, path segments, query and fragment the rule
wrote."""
from __future__ import annotations

import http.client
from urllib.parse import parse_qsl, unquote, urlsplit

from hypothesis import given, settings
from hypothesis import strategies as st

from rules_engine.domain.model import EventType
from rules_engine.language.context import roots_for
from rules_engine.language.url_template import compile_url

from ..conftest import T0

ROOTS = roots_for(EventType.MESSAGE_RECEIVED)
PATH = "https://crm.example.com:8443/contacts/{{ message.text }}/notes"
QUERY = "https://crm.example.com/search?q={{ message.text }}&limit=5"
FRAGMENT = "http://crm.example.com/view#{{ message.text }}"
SEVERAL = "https://crm.example.com/a/{{ message.text }}{{ message.text }}/b?{{ message.text }}=1"

# Any text a contact could send, lone surrogates (valid in JSON) included.
TEXTS = st.text(st.characters(exclude_categories=()), max_size=60)


def render(url: str, text: str) -> str:
    return compile_url(url, ROOTS).render({"message": {"text": text}}, now=T0)


def expected_text(text: str) -> str:
    """The text as the receiver decodes it (a lone surrogate cannot be UTF-8: '?')."""
    return text.encode("utf-8", "replace").decode("utf-8")


@settings(max_examples=500, deadline=None, derandomize=True)
@given(TEXTS)
def test_a_value_never_changes_the_urls_structure(text):
    for template in (PATH, QUERY, FRAGMENT, SEVERAL):
        url = render(template, text)
        parts, written = urlsplit(url), urlsplit(template)
        assert (parts.scheme, parts.netloc) == (written.scheme, written.netloc)
        assert parts.path.count("/") == written.path.count("/")
        assert all(segment not in (".", "..") for segment in parts.path.split("/"))
        assert url.isascii() and not http.client._contains_disallowed_url_pchar_re.search(url)
    value = expected_text(text)
    assert unquote(urlsplit(render(PATH, text)).path) == f"/contacts/{value}/notes"
    assert parse_qsl(urlsplit(render(QUERY, text)).query, keep_blank_values=True) == [
        ("q", value), ("limit", "5")]
    assert unquote(urlsplit(render(FRAGMENT, text)).fragment) == value


def test_the_reviews_examples():
    assert render(PATH, "../../admin/delete?all=1#") == (
        "https://crm.example.com:8443/contacts/..%2F..%2Fadmin%2Fdelete%3Fall%3D1%23/notes")
    assert render(PATH, "..") == "https://crm.example.com:8443/contacts/%2E%2E/notes"
    assert render(PATH, "a b\r\nHost: evil") == (
        "https://crm.example.com:8443/contacts/a%20b%0D%0AHost%3A%20evil/notes")
    assert render(QUERY, "x&admin=1") == "https://crm.example.com/search?q=x%26admin%3D1&limit=5"
    assert render(FRAGMENT, "..") == "http://crm.example.com/view#.."  # harmless outside a path


def test_the_rules_own_text_keeps_its_reserved_characters_and_is_made_sendable():
    url = "https://bücher.example/ä ö/{{ message.text }}?a=1&b=%20#top"
    assert render(url, "v1.2") == "https://bücher.example/%C3%A4%20%C3%B6/v1.2?a=1&b=%20#top"
