"""The client's address behind a reverse proxy.

`X-Forwarded-For` is believed only when the connection itself comes from one of
`server.trusted_proxies` (addresses or CIDR networks; none by default, so the header is ignored
and a client cannot claim another address). Then the header is read from the right, skipping
the addresses of trusted proxies, and the first address that is not one is the client. A
malformed entry stops the walk: the last address that could be verified is used.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = ["Network", "parse_networks", "client_ip"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(values: Iterable[str]) -> tuple[tuple[Network, ...], list[str]]:
    """Networks from `10.0.0.1`, `10.0.0.0/8`, `::1`; also returns the entries that are not."""
    networks: list[Network] = []
    bad: list[str] = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            bad.append(value)
    return tuple(networks), bad


def _address(text: str) -> _Address | None:
    text = text.strip()
    if text.startswith("["):                       # [2001:db8::1]:443
        text = text[1:text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:                     # 203.0.113.7:51234
        text = text.split(":", 1)[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped                    # ::ffff:127.0.0.1 on a dual-stack socket
    return addr


def _trusted(addr: _Address, networks: tuple[Network, ...]) -> bool:
    return any(addr in net for net in networks)


def client_ip(peer: str | None, forwarded_for: str | None,
              networks: tuple[Network, ...]) -> str | None:
    """The client's address: `peer` (the socket's) unless it is a trusted proxy that passed
    an `X-Forwarded-For` header."""
    if not networks or not forwarded_for or peer is None:
        return peer
    addr = _address(peer)
    if addr is None or not _trusted(addr, networks):
        return peer
    client = str(addr)
    for entry in reversed(forwarded_for.split(",")):
        hop = _address(entry)
        if hop is None:
            break
        client = str(hop)
        if not _trusted(hop, networks):
            break
    return client
