"""Workspace events every open page of a user hears: the sidebar changed, the branch moved.

A chat socket joins its user's group as well as its conversation's viewers group, so a
conversation created, renamed or deleted in one tab shows up in the sidebar of all of them.
"""

import uuid

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from conversations.generation import reply_stop, viewers_group


def user_group(user_id: int | str) -> str:
    return f"chat-user.{user_id}"


async def sidebar_changed(*, user_id: int | str) -> None:
    await get_channel_layer().group_send(user_group(user_id), {"type": "sidebar.changed"})


def sidebar_changed_sync(*, user_id: int | str) -> None:
    async_to_sync(sidebar_changed)(user_id=user_id)


async def thread_changed(*, conversation_id: uuid.UUID) -> None:
    """Every tab of the conversation re-renders its transcript: the branch on screen moved."""
    await get_channel_layer().group_send(viewers_group(conversation_id), {"type": "thread.changed"})


def reply_stop_sync(*, conversation_id: uuid.UUID) -> None:
    async_to_sync(reply_stop)(conversation_id=conversation_id)
