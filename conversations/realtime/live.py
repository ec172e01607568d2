"""Workspace events every open page of a user hears: the sidebar changed, the branch moved.

A chat socket joins its user's group as well as its conversation's viewers group, so a
conversation created, renamed or deleted in one tab shows up in the sidebar of all of them.
"""

import asyncio
import uuid

from asgiref.sync import async_to_sync

from conversations.accounts.limits import QuotaUsage
from conversations.chat import frames
from conversations.realtime import events, runtime
from conversations.realtime.events import user_group
from conversations.realtime.generation import reply_stop

__all__ = ["user_group"]


async def sidebar_changed(*, user_id: int | str) -> None:
    await events.sidebar_changed_send(events.channel_layer(), user_id=user_id)


def turn_announced_after(
    *, user_id: int | str, event: asyncio.Event, quota: QuotaUsage, sidebar_moves: bool
) -> None:
    """A turn's news for every page of its user, once `event` (the reply's first text) is set:
    the quota line, rendered from the usage the turn read, and the sidebar when the
    conversation moved up. Either, ahead of the reply's first text, would hold that text back;
    in a burst of Enters, everyone's."""

    async def announce() -> None:
        await event.wait()
        layer = events.channel_layer()
        await events.quota_changed_send(
            layer, user_id=user_id, frame=frames.quota_status(usage=quota)
        )
        if sidebar_moves:
            await events.sidebar_changed_send(layer, user_id=user_id)

    runtime.current().spawn(announce(), name=f"turn-announced-{user_id}")


def sidebar_changed_sync(*, user_id: int | str) -> None:
    async_to_sync(sidebar_changed)(user_id=user_id)


async def thread_changed(*, conversation_id: uuid.UUID) -> None:
    """Every tab of the conversation re-renders its transcript: the branch on screen moved."""
    await events.thread_changed_send(events.channel_layer(), conversation_id=conversation_id)


def reply_stop_sync(*, conversation_id: uuid.UUID) -> None:
    async_to_sync(reply_stop)(conversation_id=conversation_id)
