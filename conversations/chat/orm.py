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
import functools
from collections.abc import Awaitable, Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from channels.db import DatabaseSyncToAsync, database_sync_to_async
from django.conf import settings
from django.db import connections

__all__ = ["OrderedOrmCalls", "concurrent_orm_enabled", "orm_concurrent"]

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
