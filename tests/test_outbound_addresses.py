"""A URL written in a rule reaches public addresses only, unless the operator allows more
(``RULES_ENGINE_OUTBOUND_ALLOW``); the check is made as the connection is made. The
operator's own URLs (channel send APIs) are not checked."""
from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
from functools import partial

import pytest

from connectors.outbox import OutboxWorker

from .conftest import T0, message
from .receiver import receiving, said
from .test_outbox import REPLYING, calling, clock_from, environ_for, rows

ALLOW = "RULES_ENGINE_OUTBOUND_ALLOW"


def deliver(store, environ: dict[str, str]) -> dict:
    """One pass of a worker with this environment; the one row as the API shows it."""
    OutboxWorker(store, worker_id="w", environ=environ, timeout=1, lease_seconds=5).run_once()
    [row] = rows(store)
    return row


@pytest.mark.parametrize("url, reason", [
    ("http://localhost:PORT/tickets", "localhost resolves to 127.0.0.1 (loopback)"),
    ("http://127.0.0.1:PORT/tickets", "127.0.0.1 (loopback)"),
    ("http://2130706433:PORT/tickets", "2130706433 resolves to 127.0.0.1 (loopback)"),
    ("http://0x7f.1:PORT/tickets", "0x7f.1 resolves to 127.0.0.1 (loopback)"),
    ("http://0177.0.0.1:PORT/tickets", "0177.0.0.1 resolves to 127.0.0.1 (loopback)"),
    ("http://[::1]:PORT/tickets", "::1 (loopback)"),
    ("http://[::ffff:127.0.0.1]:PORT/tickets", "::ffff:127.0.0.1 (loopback)"),
    ("http://0.0.0.0:PORT/tickets", "0.0.0.0 (unspecified)"),
    ("http://[::]:PORT/tickets", ":: (unspecified)"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 (link-local)"),
    ("http://[fe80::1]/", "fe80::1 (link-local)"),
    ("http://10.1.2.3/", "10.1.2.3 (private)"),
    ("http://172.16.0.1/", "172.16.0.1 (private)"),
    ("http://192.168.0.1/", "192.168.0.1 (private)"),
    ("http://100.64.0.1/", "100.64.0.1 (carrier-grade NAT)"),
    ("http://224.0.0.1/", "224.0.0.1 (multicast)"),
    ("http://[fc00::1]/", "fc00::1 (private)"),
    ("http://[64:ff9b::a9fe:a9fe]/", "64:ff9b::a9fe:a9fe (link-local)"),  # NAT64 of 169.254.169.254
    ("http://[2002:a9fe:a9fe::1]/", "2002:a9fe:a9fe::1 (link-local)"),  # 6to4 of 169.254.169.254
    ("http://[::127.0.0.1]/", "::127.0.0.1 (reserved)"),  # the deprecated IPv4-compatible form
])
def test_a_rules_url_may_not_reach_a_non_public_address(make_engine, store, url, reason):
    with receiving() as receiver:
        port = receiver.url.rsplit(":", 1)[1]
        make_engine(calling(url.replace("PORT", port))).process(message("c-1", "hi"))
        row = deliver(store, {})
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert said(row) == (f"refused: {reason}: rules reach public addresses only "
                                 f"({ALLOW} lists exceptions)")
    assert receiver.deliveries == []


@pytest.mark.parametrize("host, allow", [
    ("127.0.0.1", "127.0.0.1"),
    ("localhost", "localhost"),
    ("LOCALHOST", "example.org, localhost."),
    ("2130706433", "127.0.0.0/8"),
    ("0x7f.1", " 10.0.0.0/8 , 127.0.0.1 "),
])
def test_the_operator_may_allow_hosts_addresses_and_ranges(make_engine, store, host, allow):
    with receiving() as receiver:
        port = receiver.url.rsplit(":", 1)[1]
        make_engine(calling(f"http://{host}:{port}/tickets")).process(message("c-1", "hi"))
        row = deliver(store, {ALLOW: allow})
    assert row["status"] == "sent" and len(receiver.deliveries) == 1


def test_allowing_a_host_name_does_not_allow_its_address(make_engine, store):
    with receiving() as receiver:
        make_engine(calling(f"{receiver.url}/tickets")).process(message("c-1", "hi"))
        row = deliver(store, {ALLOW: "localhost"})
    assert row["status"] == "failed" and receiver.deliveries == []


@pytest.fixture
def resolver(monkeypatch):
    """Names resolved as the test says (every other name as usual); counts the lookups."""
    names: dict[str, list[list[str]]] = {}  # name -> the answer of each lookup in turn
    lookups: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in names:
            return real(host, port, *args, **kwargs)
        lookups.append(host)
        answers = names[host]
        addresses = answers.pop(0) if len(answers) > 1 else answers[0]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))
                for address in addresses]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return names, lookups


def test_every_address_a_name_resolves_to_is_checked(make_engine, store, resolver):
    names, _ = resolver
    names["crm.example.test"] = [["93.184.216.34", "127.0.0.1"]]
    with receiving() as receiver:
        port = receiver.url.rsplit(":", 1)[1]
        make_engine(calling(f"http://crm.example.test:{port}/tickets")).process(message("c-1", "hi"))
        row = deliver(store, {})
    assert row["status"] == "failed" and receiver.deliveries == []
    assert said(row).startswith("refused: crm.example.test resolves to 127.0.0.1 (loopback)")


def test_the_connection_goes_to_the_checked_address(make_engine, store, resolver):
    """DNS rebinding: a name that answers a public address first and a private one next
    gains nothing, as the name is resolved once and the connection made to that answer."""
    names, lookups = resolver
    names["rebind.example.test"] = [["93.184.216.34"], ["127.0.0.1"]]
    with receiving() as receiver:
        port = receiver.url.rsplit(":", 1)[1]
        make_engine(calling(f"http://rebind.example.test:{port}/tickets")).process(
            message("c-1", "hi"))
        row = deliver(store, {})
    assert receiver.deliveries == [] and lookups == ["rebind.example.test"]
    assert row["status"] == "pending"  # 93.184.216.34 did not answer: retried later


def test_an_allowed_name_is_called_by_its_name(make_engine, store, resolver):
    names, lookups = resolver
    names["crm.internal"] = [["127.0.0.1"]]
    with receiving() as receiver:
        port = receiver.url.rsplit(":", 1)[1]
        make_engine(calling(f"http://crm.internal:{port}/tickets")).process(message("c-1", "hi"))
        row = deliver(store, {ALLOW: "crm.internal"})
    assert row["status"] == "sent" and lookups == ["crm.internal"]
    assert receiver.deliveries[0].headers["Host"] == f"crm.internal:{port}"


def test_the_operators_own_urls_are_not_checked(make_engine, store):
    """The channels' send APIs and RULES_ENGINE_SEND_URL are the operator's: loopback is fine."""
    with receiving() as receiver:
        engine = make_engine(REPLYING)
        for recipient, channel in [("psid-1", "facebook"), ("vb-1", "viber"),
                                   ("16505551234", "whatsapp"), ("5342492667", "telegram"),
                                   ("web-1", "webchat")]:
            engine.process(message(recipient, "hi", channel=channel))
        environ = {key: value for key, value in environ_for(receiver.url).items() if key != ALLOW}
        OutboxWorker(store, worker_id="w", environ=environ, clock=clock_from(T0)).run_once()
    assert [row["status"] for row in rows(store)] == ["sent"] * 5


def test_an_environment_proxy_carries_the_operators_calls_only(make_engine, store, monkeypatch):
    """A proxy would resolve a rule's host itself, past the check: rules' calls go direct."""
    for variable in ("no_proxy", "NO_PROXY", "HTTP_PROXY"):
        monkeypatch.delenv(variable, raising=False)
    with receiving() as proxy, receiving() as crm:
        monkeypatch.setenv("http_proxy", proxy.url)
        engine = make_engine(f"""
rules:
  - id: reply-and-tell-the-crm
    trigger: {{event: message.received}}
    actions:
      - send_message: {{text: "Hello"}}
      - http_request: {{url: "{crm.url}/tickets"}}
""")
        engine.process(message("psid-1", "hi"))
        OutboxWorker(store, worker_id="w", environ=environ_for(crm.url),
                     clock=clock_from(T0)).run_once()
    assert [d.path for d in proxy.deliveries] == [
        f"{crm.url}/graph/me/messages?access_token=page-token"]
    assert [d.path for d in crm.deliveries] == ["/tickets"]


@pytest.mark.parametrize("entry", ["*.example.com", "10.0.0.1/8", "http://crm.example.com"])
def test_a_bad_allow_entry_stops_the_worker_from_starting(store, database_url, entry):
    with pytest.raises(ValueError, match=f"'{entry}' is not a host name"):
        OutboxWorker(store, worker_id="w", environ={ALLOW: f"localhost, {entry}"})
    done = subprocess.run([sys.executable, "-m", "rules_engine.cli", "--database-url",
                           database_url, "worker", "--once", "--rules", "no-such-directory"],
                          env={**os.environ, ALLOW: entry}, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and f"{ALLOW}: '{entry}' is not a host name" in done.stderr


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[str, str]:
    """A self-signed certificate for localhost and 127.0.0.1: (certificate file, key file)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


def serving_tls(certificate) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


def test_https_goes_through_the_guard_with_the_certificate_checked(make_engine, store,
                                                                   certificate, monkeypatch):
    """Over TLS too, the address is checked first; the certificate is then checked against
    the URL's host name (this one is trusted only once the test says so)."""
    from connectors import delivery

    with receiving(tls=serving_tls(certificate)) as receiver:
        port = receiver.url.rsplit(":", 1)[1]
        engine = make_engine(calling(f"https://localhost:{port}/tickets"))
        engine.process(message("c-1", "refused"))
        refused = deliver(store, {})
        engine.process(message("c-2", "untrusted"))
        OutboxWorker(store, worker_id="w", environ={ALLOW: "localhost"}).run_once()
        trusting = partial(ssl.create_default_context, cafile=certificate[0])
        monkeypatch.setattr(delivery.ssl, "create_default_context", trusting)
        engine.process(message("c-3", "trusted"))
        OutboxWorker(store, worker_id="w", environ={ALLOW: "localhost"}).run_once()
    trusted, untrusted, _ = rows(store)
    assert said(refused).startswith("refused: localhost resolves to 127.0.0.1 (loopback)")
    assert untrusted["status"] == "failed" and said(untrusted).startswith(
        f"the TLS certificate of https://localhost:{port} is not valid: self")
    assert trusted["status"] == "sent" and len(receiver.deliveries) == 1
