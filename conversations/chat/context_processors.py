from typing import Any

from django.conf import settings
from django.http import HttpRequest


def chat(request: HttpRequest) -> dict[str, Any]:
    return {
        "demo_mode": not settings.AIMLAPI_API_KEY,
        "chat_model": settings.CHAT_MODEL,
        "signup_allowed": settings.CHAT_ALLOW_SIGNUP,
        "max_message_chars": settings.CHAT_MAX_MESSAGE_CHARS,
    }
