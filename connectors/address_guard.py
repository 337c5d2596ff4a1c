"""Where a URL written in a rule may connect: public addresses, and what the operator allows.

The check happens as the connection is made: the host is resolved once, every address it
resolves to must pass, and the socket connects to one of those very addresses, so a name
that resolves elsewhere a moment later (DNS rebinding) gains nothing, and spellings such
as ``2130706433`` or ``0x7f.1`` are judged by the address they resolve to. An IPv6 address
that stands for an IPv4 one (IPv4-mapped, 6to4, NAT64) is judged as that IPv4 address.
``RULES_ENGINE_OUTBOUND_ALLOW`` lists the exceptions: host names, addresses and CIDR
ranges, comma-separated.
"""
from __future__ import annotations

import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)

ALLOW_VARIABLE = "RULES_ENGINE_OUTBOUND_ALLOW"

IPAddress = IPv4Address | IPv6Address
_SHARED = ip_network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)
_NAT64 = ip_network("64:ff9b::/96")
_HOST_NAME = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)(\.(?!-)[a-z0-9_-]{1,63}(?<!-))*\.?")

# What makes an address unfit, in the order the reason names it; the first that applies.
_NOT_PUBLIC: tuple[tuple[str, Callable[[IPAddress], bool]], ...] = (
    ("unspecified", lambda a: a.is_unspecified),
    ("loopback", lambda a: a.is_loopback),
    ("link-local", lambda a: a.is_link_local),
    ("multicast", lambda a: a.is_multicast),
    ("carrier-grade NAT", lambda a: a in _SHARED),
    ("private", lambda a: a.is_private),
    ("reserved", lambda a: a.is_reserved),
    ("site-local", lambda a: isinstance(a, IPv6Address) and a.is_site_local),
    ("non-public", lambda a: not a.is_global),
)


class AddressRefused(Exception):
    """A rule's URL leads to an address it may not reach; trying again cannot help."""


def _embedded_ipv4(address: IPAddress) -> IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (IPv4-mapped, 6to4, NAT64), if any."""
    if isinstance(address, IPv4Address):
        return None
    if address in _NAT64:
        return IPv4Address(int(address) & 0xFFFF_FFFF)
    return address.ipv4_mapped or address.sixtofour


def _literal(host: str) -> IPAddress | None:
    """The address a host written as an address stands for; None for a name."""
    try:
        return ip_address(host)
    except ValueError:
        return None


def not_public(address: IPAddress) -> str | None:
    """What kind of non-public address this is (``loopback``, ``private``...); None if public."""
    judged = _embedded_ipv4(address) or address
    return next((kind for kind, applies in _NOT_PUBLIC if applies(judged)), None)


@dataclass(frozen=True, slots=True)
class AddressGuard:
    """Connects a rule's URL to public addresses only, or to those the operator allows."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPv4Network | IPv6Network, ...] = ()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> AddressGuard:
        """The guard with ``RULES_ENGINE_OUTBOUND_ALLOW``'s exceptions; ValueError names an
        entry that is neither a host name, an address nor a CIDR range."""
        hosts: set[str] = set()
        networks: list[IPv4Network | IPv6Network] = []
        for entry in filter(None, (item.strip() for item in environ.get(ALLOW_VARIABLE, "").split(","))):
            try:
                networks.append(ip_network(entry.strip("[]")))
            except ValueError:
                if not _HOST_NAME.fullmatch(entry.lower()):
                    raise ValueError(f"{ALLOW_VARIABLE}: '{entry}' is not a host name, an "
                                     "address or a CIDR range (e.g. 10.0.0.0/8)") from None
                hosts.add(entry.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def refusal(self, host: str, address: IPAddress) -> str | None:
        """Why ``host``, resolved to ``address``, may not be reached; None when it may."""
        if host.lower().rstrip(".") in self.hosts:
            return None
        forms = [address, *filter(None, [_embedded_ipv4(address)])]
        if any(form in network for form in forms for network in self.networks):
            return None
        kind = not_public(address)
        if kind is None:
            return None
        named = host if _literal(host) == address else f"{host} resolves to {address}"
        return f"{named} ({kind}): rules reach public addresses only ({ALLOW_VARIABLE} lists exceptions)"

    def connect(self, host: str, port: int, timeout: float | None) -> socket.socket:
        """A socket connected to ``host``, once every address it resolves to has passed;
        AddressRefused when one has not."""
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        for *_, sockaddr in found:
            refusal = self.refusal(host, ip_address(sockaddr[0]))
            if refusal:
                raise AddressRefused(refusal)
        error = OSError(f"{host} resolves to no address")
        for family, kind, protocol, _, sockaddr in found:
            connection = socket.socket(family, kind, protocol)
            try:
                connection.settimeout(timeout)
                connection.connect(sockaddr)
                return connection
            except OSError as failed:
                connection.close()
                error = failed
        raise error
