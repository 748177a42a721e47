"""Who the client is behind a trusted proxy (the console): ``X-Forwarded-For`` / ``Forwarded``, least privilege.

A forwarded address is believed only from a peer in ``[api] trusted_proxies`` (addresses or CIDR
networks; empty by default: nobody's). The chain is read from the right, as each proxy appends the
address it saw: the first hop that is not itself a trusted proxy is the client. Anything a client
writes in these headers itself is ignored unless it connects through a trusted proxy, and even then
only the hops the trusted proxies vouch for count — so an untrusted client cannot pick the address
it is throttled or audited under.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Final

from aiohttp import web

__all__ = ["TRUSTED_PROXIES_KEY", "TrustedProxies", "client_address"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """The peers whose ``X-Forwarded-For`` / ``Forwarded`` headers are believed."""

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self.networks: tuple[Network, ...] = tuple(parse_network(entry) for entry in entries)

    def trusts(self, address: str | None) -> bool:
        """Whether ``address`` (a peer or hop) is a trusted proxy."""
        ip = _ip(address)
        return ip is not None and any(ip in network for network in self.networks)

    def client(self, peer: str | None, hops: Sequence[str]) -> str:
        """The client's address: ``peer`` unless it is trusted, then the right-most hop not trusted."""
        if peer is None:
            return "?"
        current = peer
        for hop in reversed(hops):
            if not self.trusts(current):
                break
            if _ip(hop) is None:  # garbage in a trusted chain: stop at the last address vouched for
                break
            current = hop
        return current


def parse_network(entry: str) -> Network:
    """An address or CIDR network of ``[api] trusted_proxies``; raises ``ValueError`` saying what is wrong."""
    try:
        return ipaddress.ip_network(entry.strip(), strict=False)
    except ValueError as exc:
        raise ValueError(
            f"api.trusted_proxies: {entry!r} is not an IP address or network (e.g. 10.0.0.5, 10.0.0.0/24)"
        ) from exc


def _ip(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _forwarded_hops(request: web.Request) -> list[str]:
    """The hops of ``Forwarded`` (RFC 7239, parsed by aiohttp) or else ``X-Forwarded-For``, left to right."""
    hops: list[str] = []
    for element in request.forwarded:
        value = element.get("for")
        if value is None:
            continue
        value = value.strip()
        if value.startswith("["):  # [2001:db8::1]:4711
            value = value[1 : value.find("]")] if "]" in value else value
        elif value.count(":") == 1:  # 192.0.2.1:4711
            value = value.partition(":")[0]
        hops.append(value)
    if hops:
        return hops
    return [hop.strip() for line in request.headers.getall("X-Forwarded-For", []) for hop in line.split(",")]


TRUSTED_PROXIES_KEY: Final = web.AppKey("trusted_proxies", TrustedProxies)


def client_address(request: web.Request) -> str:
    """The address of whoever sent ``request``: the peer, or the client a trusted proxy forwarded for."""
    trusted = request.app.get(TRUSTED_PROXIES_KEY)
    if trusted is None or not trusted.networks:
        return request.remote or "?"
    return trusted.client(request.remote, _forwarded_hops(request))
