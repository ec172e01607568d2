"""ASGI entry point: HTTP goes to Django, websockets to the chat consumer."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
# Django must be set up before anything imports models.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from chatsite.origins import ExactOriginValidator  # noqa: E402
from chatsite.proxy import TrustedProxyMiddleware  # noqa: E402
from chatsite.sockets import SocketGuard  # noqa: E402
from conversations.chat.routing import websocket_urlpatterns  # noqa: E402
from conversations.realtime.recovery import install_under_daphne  # noqa: E402

# Proxy headers first (only from CHAT_TRUSTED_PROXIES), so the origin check and the sign-in
# throttle see the real scheme and client address.
application = TrustedProxyMiddleware(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            "websocket": ExactOriginValidator(
                # The routes are ASGI applications; see conversations/chat/routing.py.
                AuthMiddlewareStack(SocketGuard(URLRouter(websocket_urlpatterns)))  # type: ignore[arg-type]
            ),
        }
    )
)

# Start-up sweep of replies orphaned by a dead process, heartbeats, and graceful SIGTERM.
install_under_daphne()
