"""The gateway's odd streams, end to end through the socket: each reply ends saved whole or
clearly marked, and the socket stays open."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import pytest
from channels.db import database_sync_to_async

from conversations.chat.services import conversation_create
from conversations.models import Conversation, Message
from conversations.realtime import runtime
from tests.support.sockets import RECEIVE_TIMEOUT, SEND, communicator_for
from tests.support.upstream_server import (
    Event,
    FakeUpstream,
    Stream,
    comments_only,
    surrogate_split,
    wrapped_chunks,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

SMILE = "\U0001f600"
FINAL = (
    'data-role="assistant" data-status="complete"',
    'data-role="assistant" data-status="error"',
)


async def _turn(user: Any, stream: Stream, upstream: FakeUpstream) -> tuple[Message, str]:
    """Send one message over a real consumer; the saved reply and every frame received."""
    upstream.enqueue(stream)
    conversation: Conversation = await database_sync_to_async(conversation_create)(owner=user)
    comm = communicator_for(user, conversation)
    assert (await comm.connect())[0]
    await comm.send_to(text_data=json.dumps(SEND))
    frames: list[str] = []
    async with asyncio.timeout(RECEIVE_TIMEOUT):
        while not frames or not any(status in frames[-1] for status in FINAL):
            frames.append(await comm.receive_from(timeout=RECEIVE_TIMEOUT))
    for task in runtime.current().generation_tasks():
        await task
    reply = await Message.objects.aget(conversation=conversation, role=Message.Role.ASSISTANT)
    # The socket is still open: it answers the next frame.
    await comm.send_to(text_data="not json")
    assert await comm.receive_from(timeout=RECEIVE_TIMEOUT)
    await comm.disconnect()
    return reply, "".join(frames)


async def test_wrapped_stream_is_saved_whole_with_counts_from_state(
    upstream: FakeUpstream, user: Any
) -> None:
    reply, _ = await _turn(user, Stream(wrapped_chunks(["Old ", "shape"])), upstream)

    assert reply.status == Message.Status.COMPLETE
    assert reply.content == "Old shape"
    assert (reply.prompt_tokens, reply.completion_tokens) == (16, 3)


async def test_unreadable_stream_ends_as_an_error_not_an_empty_reply(
    upstream: FakeUpstream, user: Any
) -> None:
    unknown = [Event(json.dumps({"type": "content_block_delta", "delta": {"text": "Hi"}}))]

    reply, frames = await _turn(user, Stream(unknown), upstream)

    assert reply.status == Message.Status.ERROR
    assert reply.error == "The gateway's reply could not be read."
    assert 'data-status="error"' in frames


async def test_odd_values_are_saved_as_shown(upstream: FakeUpstream, user: Any) -> None:
    steps = surrogate_split(
        "smile ",
        SMILE,
        " a\x00b end",
        usage={"prompt_tokens": -1, "completion_tokens": 5_000_000_000},
        usd_spent=12345678.5,
    )

    reply, _ = await _turn(user, Stream(steps), upstream)

    assert reply.status == Message.Status.COMPLETE
    assert reply.content == f"smile {SMILE} ab end"
    # The gateway's numbers were unusable: none is kept; tokens and cost are our own
    # estimate (from the model's prices), each marked as such.
    assert reply.usage_estimated and reply.cost_estimated
    assert 0 < reply.prompt_tokens < 1000 and 0 < reply.completion_tokens < 1000
    assert reply.cost_usd is not None and Decimal(0) < reply.cost_usd < Decimal("0.01")


async def test_keep_alive_comments_alone_end_the_reply_after_the_timeout(
    upstream: FakeUpstream, user: Any, settings: Any
) -> None:
    settings.CHAT_UPSTREAM_TIMEOUT = 0.5
    # The runtime builds its client from the settings of the moment: start from a new one.
    runtime.forget_all()

    reply, _ = await _turn(user, Stream(comments_only(60, gap=0.1)), upstream)

    assert reply.status == Message.Status.ERROR
    assert "longer than 0.5 s" in reply.error
