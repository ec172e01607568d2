"""ORM work beside other ORM work on PostgreSQL: turn starts do not queue behind the shared ORM
thread, calls of one key keep their order, and SQLite keeps its one writer."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.db import connection

from conversations.chat import orm
from conversations.chat.services import conversation_create
from tests.support.factories import exchange
from tests.support.sockets import (
    SEND,
    communicator_for,
    receive_until,
    wait_generations,
)
from tests.support.upstream_server import FakeUpstream, Stream, gateway_chunks

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

needs_server_database = pytest.mark.skipif(
    connection.vendor == "sqlite", reason="SQLite keeps one writer: ORM calls share one thread"
)


async def test_sqlite_keeps_one_writer_and_a_server_database_gets_the_thread_pool() -> None:
    assert orm.concurrent_orm_enabled() is (connection.vendor != "sqlite")


@needs_server_database
async def test_a_turn_starts_while_the_shared_orm_thread_is_busy(
    upstream: FakeUpstream, user: Any
) -> None:
    # In a burst, turn starts queued one after another on the shared ORM thread; the first
    # token waited for everyone else's turn start.
    upstream.enqueue(Stream(gateway_chunks(["Hello", " there"])))
    conversation = await database_sync_to_async(conversation_create)(owner=user)
    await database_sync_to_async(exchange)(conversation, "Hi", "Hello!")
    comm = communicator_for(user, conversation)
    assert (await comm.connect())[0]
    # Connecting shows the last reply (a database read): let it finish before blocking.
    await receive_until(comm, 'data-status="complete"')
    orm_free = threading.Event()
    orm_busy = asyncio.ensure_future(sync_to_async(orm_free.wait)())
    try:
        await comm.send_to(text_data=json.dumps(SEND))

        frames = await receive_until(comm, 'data-status="streaming"')

        assert not orm_busy.done()
        assert 'data-role="assistant"' in frames
    finally:
        orm_free.set()
        await orm_busy
    # The reply's saves must be over before the test database is flushed: a save racing the
    # flush's TRUNCATE deadlocks it.
    await receive_until(comm, 'data-status="complete"')
    await wait_generations()
    await comm.disconnect()


async def test_calls_of_one_key_run_in_the_order_they_were_submitted() -> None:
    calls = orm.OrderedOrmCalls()
    first_may_finish = threading.Event()
    order: list[str] = []

    def slow_first() -> None:
        first_may_finish.wait(timeout=10)
        order.append("first")

    def second() -> None:
        order.append("second")

    first = asyncio.ensure_future(calls.run("reply-1", slow_first))
    later = asyncio.ensure_future(calls.run("reply-1", second))
    first_may_finish.set()
    await asyncio.gather(first, later)

    assert order == ["first", "second"]
    assert calls.pending_keys() == 0


async def test_a_failed_call_does_not_stop_the_next_one_of_its_key() -> None:
    calls = orm.OrderedOrmCalls()

    def fails() -> None:
        raise ValueError("boom")

    failing = asyncio.ensure_future(calls.run("k", fails))
    following = asyncio.ensure_future(calls.run("k", lambda: "ran"))

    with pytest.raises(ValueError, match="boom"):
        await failing
    assert await following == "ran"


@needs_server_database
async def test_calls_of_different_keys_run_side_by_side() -> None:
    calls = orm.OrderedOrmCalls()
    both_started = threading.Barrier(2, timeout=10)

    def meet() -> str:
        # Only returns if the other key's call is running at the same time.
        both_started.wait()
        return "met"

    results = await asyncio.gather(calls.run("a", meet), calls.run("b", meet))

    assert results == ["met", "met"]
