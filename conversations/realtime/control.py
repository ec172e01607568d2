"""A reply's ear for stop and snapshot requests, sent by any process's sockets to the
conversation's control group and heard by whichever process generates the reply."""

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable

from channels.layers import BaseChannelLayer

from conversations.realtime import events

logger = logging.getLogger(__name__)

RETRY_SECONDS = 1.0
# How long a reply's start waits for Redis to take its control channel (the layer's own bound
# for a waited send).
JOIN_SECONDS = 5.0
DONE_TIMEOUT = 10.0


class ControlListener:
    def __init__(
        self,
        *,
        layer: BaseChannelLayer,
        reply_id: uuid.UUID,
        conversation_id: uuid.UUID,
        on_stop: Callable[[], None],
        on_snapshot: Callable[[str], Awaitable[None]],
    ) -> None:
        self._layer = layer
        self._reply_id = reply_id
        self._group = events.control_group(conversation_id)
        self._on_stop = on_stop
        self._on_snapshot = on_snapshot
        self._channel = ""
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self._channel = await self._layer.new_channel()
        try:
            # Bounded: this process's membership is set before Redis is asked, and a stalled
            # Redis must not hold the reply's first text for its socket timeout (twice over).
            async with asyncio.timeout(JOIN_SECONDS):
                await self._layer.group_add(self._group, self._channel)
        except Exception:
            # Only stop and snapshot requests from other processes' sockets are lost.
            logger.exception("reply %s cannot hear control requests", self._reply_id)
        self._task = asyncio.create_task(self._listen())

    async def close(self) -> None:
        if self._task is None:
            return
        # The listener is told to end rather than cancelled: cancelling a Redis layer's receive
        # midway can leave the layer's receive lock held, stalling every socket of the process.
        try:
            await events.listener_done_send(self._layer, channel=self._channel)
            async with asyncio.timeout(DONE_TIMEOUT):
                await asyncio.gather(self._task, return_exceptions=True)
        except Exception:
            self._task.cancel()
        with contextlib.suppress(Exception):
            await self._layer.group_discard(self._group, self._channel)

    async def _listen(self) -> None:
        while True:
            try:
                message = await self._layer.receive(self._channel)
            except Exception:
                # Requests are lost while the layer is down; the reply goes on.
                logger.exception(
                    "control channel of reply %s failed; listening again", self._reply_id
                )
                await asyncio.sleep(RETRY_SECONDS)
                continue
            if message["type"] == events.LISTENER_DONE["type"]:
                return
            if message.get("message_id") not in (None, str(self._reply_id)):
                continue
            if message["type"] == "generation.stop":
                self._on_stop()
            elif message["type"] == "generation.snapshot":
                await self._on_snapshot(message["reply_channel"])
