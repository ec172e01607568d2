"""ORM work that may run beside other ORM work.

`database_sync_to_async` runs every call on one shared thread, one after another. That is
right for SQLite, which takes one writer at a time, but on PostgreSQL it queues a burst of
turn starts (each a transaction of a few round trips) behind each other, and the queue is the
time to first token. With `CHAT_ORM_THREADS` > 0 on PostgreSQL, `orm_concurrent` runs a call on
a pool of that many threads instead, each with its own connection from the connection pool
(`DATABASE_POOL_MAX`).

Order: two calls run side by side only if nothing orders them already. A caller that awaits
its call before making the next (a consumer handling one frame at a time) keeps its order; two
tabs starting a turn in one conversation are ordered by the conversation's row lock; and work
that must land in the order it was asked for but is not awaited in between (a reply's
checkpoints and its final save) goes through an `OrderedOrmCalls`, which runs the calls of one
key one after another.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from channels.db import DatabaseSyncToAsync, database_sync_to_async
from django.conf import settings
from django.db import OperationalError, connections
from django.db.backends.base.base import BaseDatabaseWrapper

logger = logging.getLogger(__name__)
# libpq's PQTRANS_ACTIVE: a command is in progress on the connection.
ACTIVE = 1
# After its socket is shut, a call blocked on it fails at once; this only bounds the wait for
# that failure (a call still queued for the thread is not waited for).
ABORT_GRACE_SECONDS = 2.0

__all__ = [
    "DatabaseStalled",
    "OrderedOrmCalls",
    "concurrent_orm_enabled",
    "orm_bounded",
    "orm_concurrent",
]

P = ParamSpec("P")
R = TypeVar("R")


def concurrent_orm_enabled() -> bool:
    """Whether ORM calls may run on several threads: PostgreSQL (or any server database) and
    CHAT_ORM_THREADS > 0. SQLite keeps its one writer."""
    vendor = connections["default"].vendor
    return settings.CHAT_ORM_THREADS > 0 and vendor != "sqlite"


@functools.cache
def _orm_executor(threads: int) -> ThreadPoolExecutor:
    # One per process, like the shared ORM thread it stands beside: threads and database
    # connections belong to the process, not to an event loop.
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="orm")


def orm_concurrent(function: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """Like `database_sync_to_async`, on the ORM thread pool when concurrency is enabled.
    Stale connections are closed (returned to the pool) before and after, as there."""
    if not concurrent_orm_enabled():
        return database_sync_to_async(function)
    return DatabaseSyncToAsync(
        function, thread_sensitive=False, executor=_orm_executor(settings.CHAT_ORM_THREADS)
    )


class OrderedOrmCalls:
    """Runs ORM calls concurrently across keys and one after another within a key (e.g. a
    reply's checkpoints, then its final save), in the order they were submitted.

    One per event loop (it holds asyncio futures); a key's entry is dropped when its last call
    ends, so it holds only keys with work in flight.
    """

    def __init__(self) -> None:
        self._last: dict[Hashable, asyncio.Future[Any]] = {}

    def pending_keys(self) -> int:
        return len(self._last)

    async def run(
        self, key: Hashable, function: Callable[P, R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        previous = self._last.get(key)
        mine: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._last[key] = mine
        try:
            if previous is not None:
                # The previous call's failure is its caller's business, not this one's.
                await asyncio.wait([previous])
            return await orm_concurrent(function)(*args, **kwargs)
        finally:
            mine.set_result(None)
            if self._last.get(key) is mine:
                del self._last[key]


class DatabaseStalled(OperationalError):
    """The database did not answer within the bound: counted as away, like a refused
    connection, so callers that wait out a database blip wait this out too."""


class _SharedThreadConnection:
    """The connection wrapper of the shared ORM thread (Django keeps one per thread for the
    thread's life), learnt on the first bounded call: a bounded call that is still queued
    behind a stuck one must be able to free the thread too, whatever is stuck on it."""

    def __init__(self) -> None:
        self.wrapper: BaseDatabaseWrapper | None = None


@functools.cache
def _shared_thread_connection() -> _SharedThreadConnection:
    # One per process, like the shared ORM thread itself.
    return _SharedThreadConnection()


async def orm_bounded(function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """`database_sync_to_async(function)(...)`, answered within CHAT_DB_STALL_SECONDS.

    A database that stops answering without closing the connection (a stalled server, a
    connection a firewall dropped silently) would hold the shared ORM thread until TCP gives
    up, hours later, and every save of the process behind it. Past the bound, if the thread is
    waiting on a query, that connection's socket is shut: the blocked call fails and the thread
    is free. The caller gets `DatabaseStalled` and retries on a fresh connection (or spools).
    statement_timeout cannot do this: the server may never see the query.
    """
    shared = _shared_thread_connection()

    def run() -> R:
        shared.wrapper = connections["default"]
        return function(*args, **kwargs)

    call = asyncio.ensure_future(database_sync_to_async(run)())
    done, _ = await asyncio.wait([call], timeout=settings.CHAT_DB_STALL_SECONDS)
    if call in done:
        return call.result()
    # The call goes on in its thread: its outcome (an error, once its socket is shut) is read
    # here so that it is not reported as never retrieved.
    call.add_done_callback(lambda finished: finished.cancelled() or finished.exception())
    shut = shared.wrapper is not None and _socket_shut_if_waiting(shared.wrapper)
    if shut:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(call), ABORT_GRACE_SECONDS)
    logger.warning(
        "the database did not answer within %s s%s",
        settings.CHAT_DB_STALL_SECONDS,
        "; the connection it hung on was shut" if shut else "",
    )
    raise DatabaseStalled(f"the database did not answer within {settings.CHAT_DB_STALL_SECONDS} s")


def _socket_shut_if_waiting(wrapper: BaseDatabaseWrapper) -> bool:
    """Shut the socket under the connection of `wrapper` if a query is in flight on it (the
    thread is waiting on the database, not busy with its own work). PostgreSQL only: SQLite
    has no socket, and its busy timeout bounds its waits."""
    raw = getattr(wrapper, "connection", None)
    pgconn = getattr(raw, "pgconn", None)
    if pgconn is None:
        return False
    try:
        if pgconn.transaction_status != ACTIVE:
            return False
        fd = pgconn.socket
    except Exception:
        return False  # closed meanwhile
    # A duplicate of the descriptor: shutting it down ends the connection for the blocked
    # reader too, and closing it leaves the original to its owner.
    with contextlib.suppress(OSError), socket.socket(fileno=os.dup(fd)) as duplicate:
        duplicate.shutdown(socket.SHUT_RDWR)
    return True
