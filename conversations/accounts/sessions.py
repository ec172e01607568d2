"""Signing out ends the user's sockets, not only their pages.

Logout, a password change, deactivation and deletion send `session.ended` to the user's group,
which every chat socket of theirs has joined; a socket closes if the event concerns its
session (a logout names one session; the others end every session of the user). Expiry is
caught by chatsite.sockets, which re-checks each socket's session.
"""

from collections.abc import Mapping
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.db.models.signals import post_delete, pre_save

from conversations.realtime.live import user_group

CLOSE_SESSION_ENDED = 4401
SESSION_ENDED_TEXT = "Your session has ended. Sign in again to keep chatting."
EVENT = "session.ended"


def sockets_close_for_user(*, user_id: Any, session_key: str | None = None) -> None:
    """Close the user's sockets (only those of `session_key`, when given), once the change
    that ended the session is committed."""
    event: dict[str, Any] = {"type": EVENT}
    if session_key:
        event["session_key"] = session_key

    def send() -> None:
        layer = get_channel_layer()
        if layer is not None:
            async_to_sync(layer.group_send)(user_group(user_id), event)

    transaction.on_commit(send)


async def socket_session_ended(*, scope: Mapping[str, Any], event: dict[str, Any]) -> bool:
    """Whether a `session.ended` event ends the socket with this scope."""
    named = event.get("session_key")
    if not named:
        return True
    session = scope.get("session")
    return session is not None and session.session_key == named


def _on_logout(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if user is not None and user.pk is not None:
        sockets_close_for_user(user_id=user.pk, session_key=request.session.session_key)


def _on_user_save(
    sender: Any, instance: Any, raw: bool = False, update_fields: Any = None, **kwargs: Any
) -> None:
    if raw or instance.pk is None:
        return
    if update_fields is not None and not {"password", "is_active"} & set(update_fields):
        return  # e.g. last_login at every sign-in
    before = sender.objects.filter(pk=instance.pk).values("password", "is_active").first()
    if before is None:
        return
    if before["password"] != instance.password or (before["is_active"] and not instance.is_active):
        sockets_close_for_user(user_id=instance.pk)


def _on_user_delete(sender: Any, instance: Any, **kwargs: Any) -> None:
    sockets_close_for_user(user_id=instance.pk)


def connect_signals() -> None:
    user_model = get_user_model()
    user_logged_out.connect(_on_logout, dispatch_uid="chat-sockets-logout")
    pre_save.connect(_on_user_save, sender=user_model, dispatch_uid="chat-sockets-user-save")
    post_delete.connect(_on_user_delete, sender=user_model, dispatch_uid="chat-sockets-delete")
