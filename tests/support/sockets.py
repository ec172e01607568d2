"""Talking to the chat consumer in-process (Channels' WebsocketCommunicator), for tests that
need no Daphne: one socket, its frames, and the reply tasks behind it."""

import asyncio
from typing import Any

from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator

from conversations.chat.routing import websocket_urlpatterns
from conversations.models import Conversation, Message
from conversations.realtime import runtime
from tests.support.factories import CONTROLS

# Generous: CI machines are small and noisy; a passing test never waits this long.
RECEIVE_TIMEOUT = 30
# On the Redis leg of a busy machine a connect can take seconds.
SOCKET_TIMEOUT = 10

# A composer send as the page's form makes it.
SEND = {"action": "send", "message": "Hello there", **CONTROLS}

COMPLETE = 'data-role="assistant" data-status="complete"'


class ChatCommunicator(WebsocketCommunicator):
    """Channels' communicator with waits fit for a loaded CI machine: its own default of one
    second for connect and receive made tests fail when the machine was busy, not the app."""

    async def connect(self, timeout: float = SOCKET_TIMEOUT) -> Any:  # noqa: ASYNC109 (its API)
        return await super().connect(timeout=timeout)

    async def receive_from(self, timeout: float = RECEIVE_TIMEOUT) -> Any:  # noqa: ASYNC109
        return await super().receive_from(timeout=timeout)

    async def receive_json_from(self, timeout: float = RECEIVE_TIMEOUT) -> Any:  # noqa: ASYNC109
        return await super().receive_json_from(timeout=timeout)


def communicator_for(user: Any, conversation: Conversation, query: str = "") -> ChatCommunicator:
    path = f"/ws/c/{conversation.id}/" + (f"?{query}" if query else "")
    comm = ChatCommunicator(URLRouter(websocket_urlpatterns), path)
    comm.scope["user"] = user
    return comm


async def receive_until(comm: WebsocketCommunicator, needle: str) -> str:
    """All frames up to and including the first that contains `needle`."""
    received = []
    async with asyncio.timeout(RECEIVE_TIMEOUT):
        while True:
            frame = await comm.receive_from(timeout=RECEIVE_TIMEOUT)
            received.append(frame)
            if needle in frame:
                return "".join(received)


async def drain_final_state(comm: WebsocketCommunicator) -> str:
    """On connect, a socket is sent the final state of the conversation's last reply."""
    return await comm.receive_from(timeout=SOCKET_TIMEOUT)


async def wait_generations() -> None:
    """Until every reply task of this event loop has ended."""
    for task in [g.task for g in runtime.current().generations.values() if g.task]:
        await task


async def reply_of(conversation: Conversation) -> Message:
    return await Message.objects.aget(conversation=conversation, role=Message.Role.ASSISTANT)


async def finished(conversation: Conversation) -> Message:
    """The conversation's reply once its task has saved the final state."""
    await wait_generations()
    return await reply_of(conversation)
