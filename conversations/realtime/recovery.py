"""Nothing left spinning: crashed processes, restarts and shutdowns.

Every streaming reply records the process generating it (`worker_id`) and a heartbeat that
process refreshes while it lives. Each server process, at start-up and then periodically,
marks `interrupted` the replies whose process is gone: a dead pid on this host, or a heartbeat
older than CHAT_HEARTBEAT_STALE_AFTER. With several processes only the dead one's replies are
touched. On SIGTERM, in-flight replies get CHAT_SHUTDOWN_GRACE seconds to finish, then are
cancelled, which saves their text as `interrupted` (see Generation._run).
"""

import asyncio
import contextlib
import datetime
import logging
import os
import socket
import sys
import uuid
from collections.abc import Container
from typing import Any, Final

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from conversations.chat.orm import orm_bounded
from conversations.chat.rendering import markdown_to_html
from conversations.models import Message
from conversations.realtime import events, runtime, spool

logger = logging.getLogger(__name__)

# A new process imports this afresh: the nonce tells a restarted pid 1 (containers) from its
# ghost, while a forked child differs from its parent by pid.
_BOOT_NONCE: Final = uuid.uuid4().hex[:8]


def worker_id() -> str:
    """hostname:pid:nonce of this process."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{_BOOT_NONCE}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _worker_dead(owner: str) -> bool:
    """True only when we can tell for sure, from this host, that the owner process is gone."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname()[:80] or not pid_text.isdigit():
        return False
    if owner == worker_id():
        return False
    pid = int(pid_text)
    return pid == os.getpid() or not _pid_alive(pid)


# Writes.


def reply_claim(*, message_id: uuid.UUID, worker: str) -> None:
    Message.objects.filter(id=message_id, status=Message.Status.STREAMING).update(
        worker_id=worker, heartbeat_at=timezone.now()
    )


def replies_heartbeat(*, message_ids: list[uuid.UUID]) -> None:
    """One write per interval for all of this process's replies, not one per reply or token."""
    if message_ids:
        Message.objects.filter(id__in=message_ids, status=Message.Status.STREAMING).update(
            heartbeat_at=timezone.now()
        )


def replies_orphaned_interrupt(
    *, now: datetime.datetime | None = None, spare: Container[uuid.UUID] = frozenset()
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """Mark `interrupted` the streaming replies whose process is dead; returns
    (conversation id, message id) of each, so their viewers can be told.

    `spare` holds the replies this process is generating. It is read as each reply is looked
    at, not when the sweep is asked for: under load the sweep waits its turn on the ORM thread
    for longer than a heartbeat stays fresh, and replies that started meanwhile are alive."""
    now = now or timezone.now()
    stale_before = now - datetime.timedelta(seconds=settings.CHAT_HEARTBEAT_STALE_AFTER)
    candidates = Message.objects.filter(status=Message.Status.STREAMING).values_list(
        "id", "conversation_id", "worker_id", "heartbeat_at", "updated_at"
    )
    interrupted = []
    for message_id, conversation_id, owner, heartbeat_at, updated_at in candidates:
        if message_id in spare:
            continue
        last_sign_of_life = heartbeat_at or updated_at
        if not (_worker_dead(owner) if owner else False) and last_sign_of_life >= stale_before:
            continue
        with transaction.atomic():
            message = (
                Message.objects.select_for_update()
                .filter(id=message_id, status=Message.Status.STREAMING, worker_id=owner)
                .first()
            )
            if message is None:
                continue
            message.status = Message.Status.INTERRUPTED
            message.content_html = markdown_to_html(message.content)
            message.save(update_fields=["status", "content_html", "updated_at"])
        logger.warning(
            "reply %s was left streaming by process %s; marked interrupted",
            message_id,
            owner or "(unknown)",
        )
        interrupted.append((conversation_id, message_id))
    return interrupted


# The process's own housekeeping.


async def sweep_once(*, live: runtime.Runtime | None = None) -> int:
    """Save the spooled replies, then mark dead processes' replies `interrupted` and tell
    their viewers; returns how many were interrupted."""
    live = live or runtime.current()
    # Bounded like the saves: the shared ORM thread must not stay stuck on a dead connection.
    await orm_bounded(spool.spool_replay, worker=worker_id())
    interrupted = await orm_bounded(replies_orphaned_interrupt, spare=live.generations)
    layer = events.channel_layer()
    for conversation_id, message_id in interrupted:
        await events.reply_finished_send(
            layer, conversation_id=conversation_id, message_id=str(message_id)
        )
    return len(interrupted)


async def housekeeping_forever(*, live: runtime.Runtime | None = None) -> None:
    """Heartbeat this process's replies and sweep up dead processes' ones, until cancelled."""
    live = live or runtime.current()
    while True:
        try:
            await orm_bounded(replies_heartbeat, message_ids=list(live.generations))
            await sweep_once(live=live)
        except Exception:
            # A database blip must not end housekeeping for the life of the process.
            logger.exception("reply housekeeping failed; trying again")
        await asyncio.sleep(settings.CHAT_HEARTBEAT_INTERVAL)


async def generations_shutdown(*, grace: float, live: runtime.Runtime | None = None) -> None:
    """Let in-flight replies finish for `grace` seconds, then save the rest as interrupted."""
    tasks = (live or runtime.current()).generation_tasks()
    if not tasks:
        return
    logger.info("shutting down: waiting up to %.1f s for %d replies", grace, len(tasks))
    _, pending = await asyncio.wait(tasks, timeout=grace)
    for task in pending:
        task.cancel()
    if pending:
        # Cancelled replies save their text (shielded), which takes a database round trip.
        await asyncio.wait(pending, timeout=10)
        logger.info("saved %d unfinished replies as interrupted", len(pending))


def install_under_daphne() -> None:
    """Hook housekeeping and graceful shutdown into Daphne's Twisted reactor.

    Daphne has no ASGI lifespan support; its reactor is installed before the application is
    imported, so this runs at import time of chatsite.asgi and does nothing elsewhere.
    """
    if "daphne.server" not in sys.modules or "twisted.internet.reactor" not in sys.modules:
        return
    from twisted.internet import defer, reactor

    state: dict[str, Any] = {}

    def start() -> None:
        state["task"] = asyncio.ensure_future(housekeeping_forever())

    def stop() -> Any:
        task = state.get("task")
        if task is not None:
            task.cancel()

        async def shutdown() -> None:
            with contextlib.suppress(Exception):
                await generations_shutdown(grace=settings.CHAT_SHUTDOWN_GRACE)

        return defer.Deferred.fromFuture(asyncio.ensure_future(shutdown()))

    reactor.callWhenRunning(start)
    # Twisted declares IReactorCore's methods with `self`, which mypy reads as one more argument.
    reactor.addSystemEventTrigger("before", "shutdown", stop)  # type: ignore[arg-type]
