"""Every message that crosses the channel layer: its group, its shape, and one way to send it.

Two groups per conversation: the viewers (every socket showing it) and the control group
(whichever process generates its reply listens there for `stop` and `snapshot` requests); one
group per user for workspace events. A consumer handles an event in the method named after its
type (`reply.delta` → `reply_delta`).
"""

import uuid
from typing import Literal, TypedDict

from channels.layers import BaseChannelLayer, get_channel_layer
from django.core.exceptions import ImproperlyConfigured


def channel_layer() -> BaseChannelLayer:
    """The project's channel layer (settings always configure one)."""
    layer = get_channel_layer()
    if layer is None:
        raise ImproperlyConfigured("CHANNEL_LAYERS has no default layer.")
    return layer


def viewers_group(conversation_id: uuid.UUID) -> str:
    return f"chat.{conversation_id.hex}"


def control_group(conversation_id: uuid.UUID) -> str:
    return f"chat-control.{conversation_id.hex}"


def user_group(user_id: int | str) -> str:
    return f"chat-user.{user_id}"


# To the viewers group.


class TurnStarted(TypedDict):
    type: Literal["turn.started"]
    message_ids: list[str]
    # Rendered once for every viewer (all of them the owner).
    frame: str
    # Replies that stream from offset 0 after this frame.
    streaming_ids: list[str]


class TurnRetried(TypedDict):
    type: Literal["turn.retried"]
    replaced_id: str
    message_id: str


class ReplyDelta(TypedDict):
    """Text that starts at `offset` (and reasoning at `reasoning_offset`): a socket that has
    shown less than the offset missed a delta and asks for a snapshot."""

    type: Literal["reply.delta"]
    message_id: str
    offset: int
    text: str
    reasoning_offset: int
    reasoning: str


class ReplySnapshot(TypedDict):
    type: Literal["reply.snapshot"]
    message_id: str
    text: str
    reasoning: str
    # The reply's notice in words (a shape switched, a parameter not sent), or "".
    notice: str


class ReplyRender(TypedDict):
    """The Markdown of the first `length` characters, plus `tail` flushed since, escaped."""

    type: Literal["reply.render"]
    message_id: str
    length: int
    html: str
    tail: str


class ReplyNotice(TypedDict):
    type: Literal["reply.notice"]
    message_id: str
    text: str


class ReplyFinished(TypedDict):
    """The reply ended and is saved. `frame` is the rendered final message when the sender
    had it; empty when each socket must render it from the database."""

    type: Literal["reply.finished"]
    message_id: str
    frame: str


class ThreadChanged(TypedDict):
    type: Literal["thread.changed"]


# To the user group.


class SidebarChanged(TypedDict):
    type: Literal["sidebar.changed"]


class QuotaChanged(TypedDict):
    type: Literal["quota.changed"]
    # Rendered once for every page of the user.
    frame: str


# To the control group, or a generation's own channel.


class GenerationStop(TypedDict):
    type: Literal["generation.stop"]


class GenerationSnapshot(TypedDict):
    type: Literal["generation.snapshot"]
    reply_channel: str


class ListenerDone(TypedDict):
    type: Literal["generation.listener_done"]


LISTENER_DONE: ListenerDone = {"type": "generation.listener_done"}


async def turn_started_send(
    layer: BaseChannelLayer,
    *,
    conversation_id: uuid.UUID,
    message_ids: list[str],
    frame: str,
    streaming_ids: list[str],
) -> None:
    event: TurnStarted = {
        "type": "turn.started",
        "message_ids": message_ids,
        "frame": frame,
        "streaming_ids": streaming_ids,
    }
    await layer.group_send(viewers_group(conversation_id), dict(event))


async def turn_retried_send(
    layer: BaseChannelLayer, *, conversation_id: uuid.UUID, replaced_id: str, message_id: str
) -> None:
    event: TurnRetried = {
        "type": "turn.retried",
        "replaced_id": replaced_id,
        "message_id": message_id,
    }
    await layer.group_send(viewers_group(conversation_id), dict(event))


async def reply_delta_send(
    layer: BaseChannelLayer,
    *,
    conversation_id: uuid.UUID,
    message_id: str,
    offset: int,
    text: str,
    reasoning_offset: int,
    reasoning: str,
) -> None:
    event: ReplyDelta = {
        "type": "reply.delta",
        "message_id": message_id,
        "offset": offset,
        "text": text,
        "reasoning_offset": reasoning_offset,
        "reasoning": reasoning,
    }
    await layer.group_send(viewers_group(conversation_id), dict(event))


async def reply_snapshot_send(
    layer: BaseChannelLayer,
    *,
    channel: str,
    message_id: str,
    text: str,
    reasoning: str,
    notice: str,
) -> None:
    event: ReplySnapshot = {
        "type": "reply.snapshot",
        "message_id": message_id,
        "text": text,
        "reasoning": reasoning,
        "notice": notice,
    }
    await layer.send(channel, dict(event))


async def reply_render_send(
    layer: BaseChannelLayer,
    *,
    conversation_id: uuid.UUID,
    message_id: str,
    length: int,
    html: str,
    tail: str,
) -> None:
    event: ReplyRender = {
        "type": "reply.render",
        "message_id": message_id,
        "length": length,
        "html": html,
        "tail": tail,
    }
    await layer.group_send(viewers_group(conversation_id), dict(event))


async def reply_notice_send(
    layer: BaseChannelLayer, *, conversation_id: uuid.UUID, message_id: str, text: str
) -> None:
    event: ReplyNotice = {"type": "reply.notice", "message_id": message_id, "text": text}
    await layer.group_send(viewers_group(conversation_id), dict(event))


async def reply_finished_send(
    layer: BaseChannelLayer, *, conversation_id: uuid.UUID, message_id: str, frame: str = ""
) -> None:
    event: ReplyFinished = {"type": "reply.finished", "message_id": message_id, "frame": frame}
    await layer.group_send(viewers_group(conversation_id), dict(event))


async def thread_changed_send(layer: BaseChannelLayer, *, conversation_id: uuid.UUID) -> None:
    event: ThreadChanged = {"type": "thread.changed"}
    await layer.group_send(viewers_group(conversation_id), dict(event))


async def sidebar_changed_send(layer: BaseChannelLayer, *, user_id: int | str) -> None:
    event: SidebarChanged = {"type": "sidebar.changed"}
    await layer.group_send(user_group(user_id), dict(event))


async def quota_changed_send(layer: BaseChannelLayer, *, user_id: int | str, frame: str) -> None:
    event: QuotaChanged = {"type": "quota.changed", "frame": frame}
    await layer.group_send(user_group(user_id), dict(event))


async def generation_stop_send(layer: BaseChannelLayer, *, conversation_id: uuid.UUID) -> None:
    event: GenerationStop = {"type": "generation.stop"}
    await layer.group_send(control_group(conversation_id), dict(event))


async def generation_snapshot_send(
    layer: BaseChannelLayer, *, conversation_id: uuid.UUID, reply_channel: str
) -> None:
    event: GenerationSnapshot = {"type": "generation.snapshot", "reply_channel": reply_channel}
    await layer.group_send(control_group(conversation_id), dict(event))


async def listener_done_send(layer: BaseChannelLayer, *, channel: str) -> None:
    await layer.send(channel, dict(LISTENER_DONE))
