"""Writing a reply to the database: checkpoints while it streams, the final save once.

Both wait out a database that is away: checkpoints are retried (newer text replacing older)
until the reply ends; the final save is retried for CHAT_SAVE_RETRY_SECONDS and then goes to
the local spool, so a finished reply is never lost and never waits on anything else.
"""

import asyncio
import logging
import uuid

from django.conf import settings

from conversations.accounts import limits
from conversations.chat import frames, selectors, services
from conversations.chat.orm import orm_bounded
from conversations.models import Message
from conversations.realtime import spool

logger = logging.getLogger(__name__)

RETRY_FIRST = 0.25
RETRY_MAX = 5.0


class Checkpointer:
    """Every reply of this process checkpoints through one writer: the partial replies due
    meanwhile in one transaction and one ORM thread hop, instead of a hop per reply per second
    (at hundreds of streams those hops were the queue every turn start waited in)."""

    def __init__(self) -> None:
        self._pending: dict[uuid.UUID, tuple[str, str]] = {}
        self._batch: asyncio.Future[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        # Replies that ended while their checkpoint was being written: never retried.
        self._ended: set[uuid.UUID] = set()

    def submit(self, reply_id: uuid.UUID, content: str, reasoning: str) -> asyncio.Future[None]:
        """Queue a checkpoint; the future is done once the batch holding it is written (or
        failed: a failed batch is queued again behind it)."""
        self._pending[reply_id] = (content, reasoning)
        if self._batch is None:
            self._batch = asyncio.get_running_loop().create_future()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="checkpoints")
        return self._batch

    def discard(self, reply_id: uuid.UUID) -> None:
        self._pending.pop(reply_id, None)
        if self._writer is not None and not self._writer.done():
            self._ended.add(reply_id)

    async def _write(self) -> None:
        pause = RETRY_FIRST
        while self._pending:
            batch, done = self._pending, self._batch
            self._pending, self._batch = {}, None
            try:
                await orm_bounded(services.replies_checkpoint, replies=batch)
                pause = RETRY_FIRST
            except spool.DATABASE_AWAY as exc:
                logger.warning("could not checkpoint %d replies (%s); retrying", len(batch), exc)
                for reply_id, texts in batch.items():
                    if reply_id not in self._ended:
                        # Text checkpointed since is newer and wins.
                        self._pending.setdefault(reply_id, texts)
                await asyncio.sleep(pause)
                pause = min(pause * 2, RETRY_MAX)
            except Exception:
                logger.exception("could not checkpoint %d replies", len(batch))
            finally:
                if done is not None and not done.done():
                    done.set_result(None)
        self._ended.clear()
        # Everything queued was discarded before its turn came.
        if self._batch is not None and not self._batch.done():
            self._batch.set_result(None)
            self._batch = None


async def reply_save_final(
    *, message_id: uuid.UUID, outcome: services.ReplyOutcome, worker: str
) -> str | None:
    """Save the end of the reply, waiting out a database blip; the finished message's frame,
    or None when the reply went to the spool (or the conversation is gone)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.CHAT_SAVE_RETRY_SECONDS
    pause = RETRY_FIRST
    while True:
        try:
            frame = await orm_bounded(_reply_finish_frame, message_id=message_id, outcome=outcome)
        except spool.DATABASE_AWAY as exc:
            if loop.time() + pause > deadline:
                logger.error("could not save reply %s (%s); spooling it", message_id, exc)
                break
            logger.warning("could not save reply %s (%s); retrying", message_id, exc)
            await asyncio.sleep(pause)
            pause = min(pause * 2, RETRY_MAX)
            continue
        return frame or None
    await asyncio.to_thread(
        spool.reply_spool, worker=worker, message_id=message_id, outcome=outcome
    )
    return None


def _reply_finish_frame(*, message_id: uuid.UUID, outcome: services.ReplyOutcome) -> str:
    """Save the end of the reply and render, once for every viewer (all of them the owner),
    the finished message with its version pager and the owner's remaining quota. Saving twice
    is harmless (the second is a no-op), so a retry after a failed render is safe."""
    services.reply_finish(message_id=message_id, outcome=outcome)
    message = Message.objects.select_related("conversation__owner").filter(id=message_id).first()
    if message is None:
        # The conversation was deleted mid-reply: nothing is left to show.
        return ""
    (message,) = selectors.messages_with_versions(messages=[message])
    usage = limits.quota_usage_for_user(user=message.conversation.owner)
    return frames.message_replaced(message=message) + frames.quota_status(usage=usage)
