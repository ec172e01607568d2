from django.urls import path

from conversations.chat.consumers import ChatConsumer

# django-stubs types path() for views only; Channels routes ASGI applications through it too.
websocket_urlpatterns = [
    path("ws/c/<uuid:conversation_id>/", ChatConsumer.as_asgi()),  # type: ignore[arg-type]
]
