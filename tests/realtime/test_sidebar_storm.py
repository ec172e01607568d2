"""A storm of renames while a reply finishes: every socket coalesces its sidebar renders (at
most one in flight, the latest state wins), so the end of the reply is never held back or
dropped behind them, and the reply is saved whole."""

import asyncio
import json
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.test import AsyncClient
from django.urls import reverse

from chatsite.layers import FastInMemoryChannelLayer
from conversations.chat.routing import websocket_urlpatterns
from conversations.chat.services import conversation_create
from conversations.models import Conversation, Message
from tests.support.factories import exchange
from tests.support.upstream_server import FakeUpstream, Gate, Hold, Stream, gateway_chunks
from tests.support.ws import SEND

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

TIMEOUT = 60
RENAMES = 200
FINAL = 'data-role="assistant" data-status="complete"'


def _socket(user: Any, conversation: Conversation) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/c/{conversation.id}/")
    comm.scope["user"] = user
    return comm


async def _read_until(comm: WebsocketCommunicator, needle: str, into: list[str]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while True:
            frame = await comm.receive_from(timeout=TIMEOUT)
            into.append(frame)
            if needle in frame:
                return


async def test_a_rename_storm_while_a_reply_finishes_keeps_its_final_frame(
    upstream: FakeUpstream, user: Any
) -> None:
    pieces = ["The reply ", "ends in the middle of ", "a rename storm."]
    chunks = gateway_chunks(pieces)
    gate = Gate()
    upstream.enqueue(Stream([chunks[0], Hold(gate), *chunks[1:]]))
    conversation = await database_sync_to_async(conversation_create)(owner=user)
    other = await database_sync_to_async(conversation_create)(owner=user)
    # Listed in the sidebar (an empty conversation is not).
    await database_sync_to_async(exchange)(other, "Earlier", "Answer")
    # One tab on the streaming conversation, one on the conversation being renamed.
    comm, elsewhere = _socket(user, conversation), _socket(user, other)
    assert (await comm.connect(timeout=TIMEOUT))[0]
    assert (await elsewhere.connect(timeout=TIMEOUT))[0]
    client = AsyncClient()
    await client.aforce_login(user)
    url = reverse("conversation_rename", args=[other.id])
    frames: list[str] = []
    other_frames: list[str] = []

    await comm.send_to(text_data=json.dumps(SEND))
    await _read_until(comm, pieces[0], frames)

    async def rename(number: int) -> None:
        response = await client.post(
            url, {"title": f"Title {number}"}, headers={"HX-Request": "true"}
        )
        assert response.status_code == 200

    # Every rename at once: each one tells both sockets that the sidebar changed.
    storm = [asyncio.create_task(rename(number)) for number in range(RENAMES)]
    gate.release()
    await asyncio.gather(*storm)
    await _read_until(comm, FINAL, frames)
    # The last state wins: both tabs end on the last title the storm wrote.
    last = await database_sync_to_async(lambda: Conversation.objects.get(id=other.id).title)()
    await _read_until(comm, f"{last}<", frames)
    await _read_until(elsewhere, f"{last}<", other_frames)

    reply = await Message.objects.aget(conversation=conversation, role=Message.Role.ASSISTANT)
    assert (reply.status, reply.content) == (Message.Status.COMPLETE, "".join(pieces))
    # Coalesced: far fewer sidebar renders than changes.
    renders = sum(1 for frame in frames if 'id="conversation-list"' in frame)
    assert 1 <= renders < RENAMES / 4, renders
    await comm.disconnect(timeout=TIMEOUT)
    await elsewhere.disconnect(timeout=TIMEOUT)


async def test_a_full_socket_queue_drops_a_replaceable_frame_never_the_end_of_a_reply() -> None:
    layer = FastInMemoryChannelLayer(capacity=3)
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "reply.delta", "offset": 0})
    await layer.send(channel, {"type": "sidebar.changed"})
    await layer.send(channel, {"type": "turn.started"})
    await layer.send(channel, {"type": "reply.finished"})  # full: the oldest delta goes
    await layer.send(channel, {"type": "sidebar.changed"})  # full: the older sidebar goes

    received = [(await layer.receive(channel))["type"] for _ in range(3)]
    assert received == ["turn.started", "reply.finished", "sidebar.changed"]
