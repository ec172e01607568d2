"""Websocket origins checked exactly: scheme, host and port.

Channels' AllowedHostsOriginValidator compares host names only, so a page on another port of
the same host could open a socket with the user's cookies. Here the Origin must equal the
site's own origin (the scheme the socket arrived with, the Host it was addressed to, both
after TrustedProxyMiddleware) or one listed in CHAT_ALLOWED_ORIGINS / CSRF_TRUSTED_ORIGINS. A
missing or `null` Origin is refused: browsers always send one, and only a browser carries the
user's cookies.
"""

from typing import Any, cast
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

DEFAULT_PORTS = {"http": 80, "https": 443}
WEBSOCKET_TO_HTTP = {"ws": "http", "wss": "https"}


def normalise_origin(origin: str) -> str | None:
    """scheme://host:port, lower-cased with the default port made explicit; None if it is not
    an http(s) origin."""
    try:
        parts = urlsplit(origin.strip())
        scheme = parts.scheme.lower()
        port = parts.port or DEFAULT_PORTS.get(scheme)
    except ValueError:
        return None
    if scheme not in DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/"):
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def own_origin(scope: dict[str, Any]) -> str | None:
    """The origin the socket was addressed to, if its Host is one of ours."""
    host = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"host"), "")
    domain, _ = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return None
    scheme = WEBSOCKET_TO_HTTP.get(scope.get("scheme", "ws"), "http")
    return normalise_origin(f"{scheme}://{host}")


def origin_allowed(scope: dict[str, Any]) -> bool:
    origin = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"origin"), "")
    candidate = normalise_origin(origin) if origin and origin != "null" else None
    if candidate is None:
        return False
    allowed = {
        normalised
        for entry in (*settings.CHAT_ALLOWED_ORIGINS, *settings.CSRF_TRUSTED_ORIGINS)
        if (normalised := normalise_origin(entry))
    }
    return candidate == own_origin(scope) or candidate in allowed


class ExactOriginValidator:
    """Refuse websocket handshakes from any origin but the site's own (or listed ones)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket" and not origin_allowed(scope):
            denier = WebsocketDenier()
            return await denier(cast(Any, scope), receive, send)
        return await self.app(scope, receive, send)
