"""A reply's text on its way to the viewers: coalesced deltas, Markdown renders, notices,
snapshots for late joiners, and checkpoints into the database.

Frames leave in order under one lock (a snapshot is taken between two deltas, never inside one),
and a frame the channel layer refuses is lost to the viewers, not to the reply: the next delta
shows them the gap and they ask for a snapshot.
"""

import asyncio
import uuid
from collections.abc import Coroutine
from typing import Any

from channels.layers import BaseChannelLayer
from django.conf import settings

from conversations.realtime import events, runtime
from conversations.realtime.delivery import LayerHealth
from conversations.realtime.pacing import (
    CheckpointClock,
    Delta,
    StreamText,
    flush_pause,
    render_pause,
)
from conversations.realtime.render import StreamingRender


class ReplyRelay:
    def __init__(
        self,
        *,
        reply_id: uuid.UUID,
        conversation_id: uuid.UUID,
        layer: BaseChannelLayer,
        live: runtime.Runtime,
    ) -> None:
        self._reply_id = reply_id
        self._message_id = str(reply_id)
        self._conversation_id = conversation_id
        self._layer = layer
        self._live = live
        # Written by the stream's reader: `pending_*` lists, then `arrived` set.
        self.text = StreamText()
        self.arrived = asyncio.Event()
        self.reachable = LayerHealth(reply_id=reply_id)
        self._render = StreamingRender()
        self._checkpoints = CheckpointClock(interval=settings.CHAT_CHECKPOINT_INTERVAL)
        self._send_lock = asyncio.Lock()
        self._ended = False
        self._pausing = False
        self._flusher: asyncio.Task[None] | None = None
        self._renderer: asyncio.Task[None] | None = None
        # The last notice shown, so a viewer joining mid-reply sees it too.
        self._notice_text = ""
        # Set once the first text has gone to the viewers, or the reply has ended without any.
        self.first_text_sent = asyncio.Event()

    def start(self) -> None:
        self._checkpoints.reset(asyncio.get_running_loop().time())
        self._flusher = asyncio.create_task(self._flush_loop())
        self._renderer = asyncio.create_task(self._render_loop())

    async def end(self) -> None:
        """Stop the loops once what they hold is out: the flusher finishes its flush, and
        what arrived after it is left pending for `tail_send`."""
        self._ended = True
        self.arrived.set()
        if self._renderer is not None:
            self._renderer.cancel()
        if self._flusher is None:
            return
        if self._pausing:
            # Don't make the end of the reply wait out the flush interval.
            self._flusher.cancel()
        await asyncio.wait([self._flusher])

    async def tail_send(self, delta: Delta | None) -> None:
        if delta is not None:
            async with self._send_lock:
                await self.reachable.attempt(self._delta_send(delta))

    async def final_html(self, content: str) -> str:
        """The finished reply's HTML from the streaming render, which renders only the last
        block again."""
        return await self._render.render(content)

    def checkpoints_end(self) -> None:
        self._live.checkpointer.discard(self._reply_id)

    async def notice_send(self, text: str) -> None:
        self._notice_text = text
        await self.reachable.attempt(
            events.reply_notice_send(
                self._layer,
                conversation_id=self._conversation_id,
                message_id=self._message_id,
                text=text,
            )
        )

    async def snapshot_send(self, reply_channel: str) -> None:
        """The text so far, for a viewer joining mid-reply on any process."""
        async with self._send_lock:
            await self.reachable.attempt(
                events.reply_snapshot_send(
                    self._layer,
                    channel=reply_channel,
                    message_id=self._message_id,
                    text=self.text.content_text(),
                    reasoning=self.text.reasoning_text(),
                    notice=self._notice_text,
                )
            )

    # Deltas and checkpoints.

    async def _flush_loop(self) -> None:
        """The first token goes out at once; after that at most one delta per flush interval
        (longer while the layer fails). Text can arrive while a flush is on the wire, so the
        last flush happens only after the stream has ended (`tail_send`)."""
        while not self._ended:
            await self._wait_arrived()
            self.arrived.clear()
            await self._flush()
            self._checkpoint_if_due()
            # While pausing, the end of the stream cuts the pause short (see `end`).
            self._pausing = True
            try:
                pause = flush_pause(streaming=len(self._live.generations))
                await asyncio.sleep(max(pause, self.reachable.backoff()))
            finally:
                self._pausing = False

    async def _wait_arrived(self) -> None:
        """Wait for new text. Text not yet checkpointed is saved when its checkpoint falls due
        even if nothing more arrives, so a stream that stalls and then dies with the process
        loses at most one checkpoint interval."""
        if self.arrived.is_set():
            return
        if self._checkpoints.saved == self.text.lengths():
            await self.arrived.wait()
            return
        due = self._checkpoints.due_in(asyncio.get_running_loop().time())
        try:
            async with asyncio.timeout(max(due, 0.0)):
                await self.arrived.wait()
        except TimeoutError:
            self._checkpoint_if_due()
            await self.arrived.wait()

    async def _flush(self) -> None:
        async with self._send_lock:
            delta = self.text.take_pending()
            if delta is None:
                return
            await self.reachable.attempt(self._delta_send(delta))
            self.first_text_sent.set()

    def _delta_send(self, delta: Delta) -> Coroutine[Any, Any, None]:
        return events.reply_delta_send(
            self._layer,
            conversation_id=self._conversation_id,
            message_id=str(self._reply_id),
            offset=delta.offset,
            text=delta.text,
            reasoning_offset=delta.reasoning_offset,
            reasoning=delta.reasoning,
        )

    def _checkpoint_if_due(self) -> None:
        now = asyncio.get_running_loop().time()
        if not self._checkpoints.is_due(now):
            return
        self._checkpoints.taken(now, self.text.lengths())
        self._live.checkpointer.submit(
            self._reply_id, self.text.content_text(), self.text.reasoning_text()
        )

    # Markdown.

    async def _render_loop(self) -> None:
        """Send the Markdown of the text so far a few times a second at most, so readers never
        look at raw `**` for long. Rendering runs off the loop and beside the flushes; text
        flushed meanwhile rides along as an escaped tail, so a render is never out of date."""
        loop = asyncio.get_running_loop()
        pause = render_pause(last_render=0.0, streaming=len(self._live.generations))
        while True:
            await asyncio.sleep(pause)
            length = self.text.content_length
            if length > settings.CHAT_MESSAGE_WINDOW_CHARS:
                # Pages show a reply this long as plain text in windows: no more Markdown.
                return
            if self._render.is_current(length):
                continue
            started = loop.time()
            html = await self._render.render(self.text.content_text())
            async with self._send_lock:
                text = self.text.content_text()
                self._render.shown(len(text))
                await self.reachable.attempt(
                    events.reply_render_send(
                        self._layer,
                        conversation_id=self._conversation_id,
                        message_id=self._message_id,
                        length=len(text),
                        html=html,
                        tail=text[length:],
                    )
                )
            pause = render_pause(
                last_render=loop.time() - started, streaming=len(self._live.generations)
            )
