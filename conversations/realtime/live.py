"""Workspace events every open page of a user hears: the sidebar changed, the branch moved.

A chat socket joins its user's group as well as its conversation's viewers group, so a
conversation created, renamed or deleted in one tab shows up in the sidebar of all of them.
"""

import asyncio
import uuid

from asgiref.sync import async_to_sync

from conversations.realtime import events, runtime
from conversations.realtime.events import user_group
from conversations.realtime.generation import reply_stop

__all__ = ["user_group"]


async def sidebar_changed(*, user_id: int | str) -> None:
    await events.sidebar_changed_send(events.channel_layer(), user_id=user_id)


def sidebar_changed_after(*, user_id: int | str, event: asyncio.Event) -> None:
    """`sidebar_changed` once `event` is set: a sidebar re-render queued on a socket ahead of a
    reply's first text would hold that text back, and the reply matters more."""

    async def announce() -> None:
        await event.wait()
        await sidebar_changed(user_id=user_id)

    runtime.current().spawn(announce(), name=f"sidebar-{user_id}")


def sidebar_changed_sync(*, user_id: int | str) -> None:
    async_to_sync(sidebar_changed)(user_id=user_id)


async def thread_changed(*, conversation_id: uuid.UUID) -> None:
    """Every tab of the conversation re-renders its transcript: the branch on screen moved."""
    await events.thread_changed_send(events.channel_layer(), conversation_id=conversation_id)


def reply_stop_sync(*, conversation_id: uuid.UUID) -> None:
    async_to_sync(reply_stop)(conversation_id=conversation_id)
