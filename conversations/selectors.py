"""Reads. Every function that takes an id from a client also takes the user it must belong to."""

import uuid
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db.models import QuerySet

from conversations.models import Conversation, Message
from conversations.upstream import RequestStyle, TurnOptions, build_payload


def conversation_get_for_user(
    *, conversation_id: uuid.UUID | str, user: AbstractBaseUser
) -> Conversation | None:
    """The conversation if it exists and belongs to the user, otherwise None (never a hint)."""
    if not user.is_authenticated:
        return None
    try:
        return Conversation.objects.get(id=conversation_id, owner=user)
    except (Conversation.DoesNotExist, ValueError, TypeError):
        return None


def conversation_list_for_user(*, user: AbstractBaseUser) -> QuerySet[Conversation]:
    return Conversation.objects.filter(owner=user).order_by("-updated_at")


def conversation_empty_for_user(*, user: AbstractBaseUser) -> Conversation | None:
    """The user's newest conversation without messages, reused so '/' doesn't pile up blanks."""
    return (
        Conversation.objects.filter(owner=user, messages__isnull=True)
        .order_by("-created_at")
        .first()
    )


def thread_path(*, conversation: Conversation) -> list[Message]:
    """Messages from the root to the active leaf, oldest first."""
    if conversation.active_leaf is None:
        return []
    return message_path(message=conversation.active_leaf)


def upstream_context(*, thread: Sequence[Message]) -> list[dict[str, str]]:
    """The conversation as the model should see it: replies that failed before any text are
    left out, so a retried turn doesn't confuse the model with an empty assistant message."""
    return [
        {"role": message.role, "content": message.content}
        for message in thread
        if message.content and message.status != Message.Status.STREAMING
    ]


def streaming_reply_get(*, conversation_id: uuid.UUID) -> Message | None:
    return Message.objects.filter(
        conversation_id=conversation_id,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
    ).first()


def message_get_for_user(*, message_id: uuid.UUID | str, user: AbstractBaseUser) -> Message | None:
    if not user.is_authenticated:
        return None
    try:
        return Message.objects.select_related("conversation").get(
            id=message_id, conversation__owner=user
        )
    except (Message.DoesNotExist, ValueError, TypeError):
        return None


def message_path(*, message: Message) -> list[Message]:
    """Messages from the root to `message`, oldest first: the context of a turn."""
    parents = dict(
        Message.objects.filter(conversation_id=message.conversation_id).values_list(
            "id", "parent_id"
        )
    )
    path_ids: list[uuid.UUID] = []
    node: uuid.UUID | None = message.id
    while node is not None and node in parents:
        path_ids.append(node)
        node = parents[node]
    path_ids.reverse()
    messages = Message.objects.in_bulk(path_ids)
    return [messages[message_id] for message_id in path_ids]


def reply_request(*, reply_id: uuid.UUID) -> tuple[dict[str, Any], uuid.UUID]:
    """The upstream payload for a saved reply, and its conversation's id.

    The parameters are the ones saved on the reply when the turn started, so what is stored is
    exactly what was sent.
    """
    reply = Message.objects.select_related("conversation").get(id=reply_id)
    conversation = reply.conversation
    params = reply.request_params
    options = TurnOptions(
        model=reply.model or settings.CHAT_MODEL,
        max_tokens=params["max_tokens"],
        temperature=params.get("temperature"),
        top_p=params.get("top_p"),
        reasoning_effort=params.get("reasoning_effort"),
        stop=tuple(params.get("stop", ())),
    )
    context = upstream_context(thread=message_path(message=reply)[:-1])
    payload = build_payload(
        options=options,
        messages=context,
        system_prompt=conversation.system_prompt,
        style=RequestStyle(settings.CHAT_REQUEST_STYLE),
    )
    return payload, conversation.id
