"""Client addresses you can trust behind a reverse proxy.

Proxy headers are honoured only when the peer is one of CHAT_TRUSTED_PROXIES (addresses or
networks). The client is then the right-most address of `X-Forwarded-For` that is not itself a
trusted proxy: everything to its left was written by the client and proves nothing. The scheme
comes from `X-Forwarded-Proto` under the same rule. An ASGI middleware, so HTTP views (and so
the sign-in throttle's REMOTE_ADDR) and websockets see the same address; run Daphne *without*
`--proxy-headers`, which trusts the left-most entry from anyone.
"""

import ipaddress
from collections.abc import Iterable
from typing import Any

from django.conf import settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Bounds on what a header may cost to parse, whoever sent it.
MAX_FORWARDED_ENTRIES = 32
MAX_HEADER_BYTES = 4096


def trusted_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """CHAT_TRUSTED_PROXIES as networks; a bare address is a network of one."""
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _is_trusted(address: str, networks: tuple[Network, ...]) -> bool:
    parsed = _address(address)
    return parsed is not None and any(parsed in network for network in networks)


def client_address(*, peer: str, forwarded_for: str | None, networks: tuple[Network, ...]) -> str:
    """The address to believe: the peer's own unless it is a trusted proxy, else the
    right-most untrusted entry of X-Forwarded-For (the left-most if every entry is trusted)."""
    if not forwarded_for or not _is_trusted(peer, networks):
        return peer
    entries = [e.strip() for e in forwarded_for.split(",") if e.strip()][-MAX_FORWARDED_ENTRIES:]
    for entry in reversed(entries):
        address = _address(entry)
        if address is None:
            # Not an address where a trusted proxy should have written one: believe the peer.
            return peer
        if not any(address in network for network in networks):
            return str(address)
    # Every hop is one of ours: the left-most is as far back as the chain goes.
    first = _address(entries[0]) if entries else None
    return str(first) if first is not None else peer


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    values = [value for key, value in scope.get("headers", []) if key.lower() == name]
    if not values:
        return None
    # Several headers of one name are one comma-separated list (RFC 9110).
    joined = b",".join(values)[:MAX_HEADER_BYTES]
    return joined.decode("latin-1")


class TrustedProxyMiddleware:
    """Rewrite the ASGI scope's client and scheme from proxy headers sent by trusted peers."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] in ("http", "websocket"):
            scope = self._rewrite(scope)
        return await self.app(scope, receive, send)

    def _rewrite(self, scope: dict[str, Any]) -> dict[str, Any]:
        networks = trusted_networks(settings.CHAT_TRUSTED_PROXIES)
        client = scope.get("client") or ("", 0)
        peer = str(client[0])
        if not _is_trusted(peer, networks):
            return scope
        scope = dict(scope)
        address = client_address(
            peer=peer, forwarded_for=_header(scope, b"x-forwarded-for"), networks=networks
        )
        if address != peer:
            scope["client"] = (address, 0)
        proto = (_header(scope, b"x-forwarded-proto") or "").split(",")[-1].strip().lower()
        if proto in ("http", "https"):
            secure = proto == "https"
            if scope["type"] == "websocket":
                scope["scheme"] = "wss" if secure else "ws"
            else:
                scope["scheme"] = proto
        return scope
