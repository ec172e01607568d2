"""Redis and PostgreSQL going away under a streaming reply, through a TCP fault proxy.

Runs on the PostgreSQL + Redis leg. The app runs in Daphne processes whose REDIS_URL or
DATABASE_URL points at the proxy; the test itself reaches both directly, so it can watch the
database while the app cannot.
"""

import asyncio
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from conversations.chat.services import conversation_create
from conversations.models import Message
from tests.conftest import DaphneServer, live_database_url
from tests.support.tcp_proxy import TcpFaultProxy
from tests.support.ws import ChatSocket, chat_socket, session_cookie
from tests.upstream_server import FakeUpstream, Gate, Hold, Stream, gateway_chunks

ON_POSTGRES = django_settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
# Generous: a shared 2-core machine, Redis reconnects and retries with backoff.
WITHIN = 60

pytestmark = [
    pytest.mark.scaleout,
    pytest.mark.skipif(not ON_POSTGRES, reason="runs on the PostgreSQL + Redis leg"),
]


def wait_for(condition: Callable[[], object], *, what: str, within: float = WITHIN) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {within} s: {what}")
        # Polling a condition, not waiting out a guess: the step only bounds the polling rate.
        time.sleep(0.05)


def reply_of(conversation_id: uuid.UUID) -> Message | None:
    return Message.objects.filter(
        conversation_id=conversation_id, role=Message.Role.ASSISTANT
    ).first()


@pytest.fixture
def servers(
    _sync_orm_beside_playwright: None, transactional_db: None, upstream: FakeUpstream
) -> Iterator[Callable[..., DaphneServer]]:
    """Start Daphne processes with extra environment; all stopped after the test."""
    started: list[DaphneServer] = []
    prefix = f"chatsite-faults-{uuid.uuid4().hex[:8]}"

    def start(**env: str) -> DaphneServer:
        server = DaphneServer(upstream=upstream, extra_env={"CHANNELS_REDIS_PREFIX": prefix, **env})
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


async def _connect(server: DaphneServer, conversation_id: uuid.UUID, cookie: str) -> ChatSocket:
    return await chat_socket(base_url=server.url, conversation_id=conversation_id, cookie=cookie)


def test_a_redis_outage_mid_reply_loses_no_text_and_viewers_catch_up(
    servers, redis_proxy: TcpFaultProxy, upstream: FakeUpstream, user
) -> None:
    redis = redis_proxy.url_for(os.environ["REDIS_URL"])
    a, b = servers(REDIS_URL=redis), servers(REDIS_URL=redis)
    before, during, after = "Before the outage. ", "Written while Redis is away. ", "Back again."
    chunks = gateway_chunks([before, during, after])
    cut_gate, restore_gate, end_gate = Gate(), Gate(), Gate()
    upstream.enqueue(
        Stream(
            [
                chunks[0],
                Hold(cut_gate),
                chunks[1],
                Hold(restore_gate),
                chunks[2],
                Hold(end_gate),
                *chunks[3:],
            ]
        )
    )
    conversation = conversation_create(owner=user)
    cookie = session_cookie(user)

    async def scenario() -> tuple[str, str, str, str]:
        on_a = await _connect(a, conversation.id, cookie)
        on_b = await _connect(b, conversation.id, cookie)
        await on_a.send_turn()
        async with asyncio.timeout(WITHIN):
            await on_a.read_until(before)
            await on_b.read_until(before)
            await asyncio.to_thread(redis_proxy.cut)
            cut_gate.release()
            # The generating process's own socket does not need Redis at all.
            await on_a.read_until(during)
            await asyncio.to_thread(redis_proxy.restore)
            restore_gate.release()
            # B missed the delta sent during the outage: the next one shows it the gap, and
            # it catches up from a snapshot.
            seen_on_b = await on_b.read_until(after)
            end_gate.release()
            statuses = (await on_a.final_status(), await on_b.final_status())
        final_on_b = on_b.frames[-1]
        await on_a.connection.close()
        await on_b.connection.close()
        return *statuses, seen_on_b, final_on_b

    status_a, status_b, seen_on_b, final_on_b = asyncio.run(scenario())

    reply = reply_of(conversation.id)
    assert reply is not None
    assert (reply.status, reply.content) == (Message.Status.COMPLETE, before + during + after)
    assert (status_a, status_b) == ("complete", "complete")
    assert during in seen_on_b
    assert "Back again." in final_on_b
    assert redis_proxy.refused or redis_proxy.accepted > 2


def test_a_reply_that_ends_while_redis_is_away_is_saved_at_once(
    servers, redis_proxy: TcpFaultProxy, upstream: FakeUpstream, user
) -> None:
    server = servers(REDIS_URL=redis_proxy.url_for(os.environ["REDIS_URL"]))
    chunks = gateway_chunks(["Started. ", "Finished while Redis is away."])
    gate = Gate()
    upstream.enqueue(Stream([chunks[0], Hold(gate), *chunks[1:]]))
    conversation = conversation_create(owner=user)
    cookie = session_cookie(user)

    async def start() -> ChatSocket:
        socket = await _connect(server, conversation.id, cookie)
        await socket.send_turn()
        async with asyncio.timeout(WITHIN):
            await socket.read_until("Started. ")
        return socket

    async def finish(socket: ChatSocket) -> str:
        async with asyncio.timeout(WITHIN):
            status = await socket.final_status()
        await socket.connection.close()
        return status

    loop = asyncio.new_event_loop()
    try:
        socket = loop.run_until_complete(start())
        redis_proxy.cut()
        gate.release()
        # Saved whole while Redis is still cut: the final save never waits on the layer.
        wait_for(
            lambda: getattr(reply_of(conversation.id), "status", "") == Message.Status.COMPLETE,
            what="the reply saved complete while Redis is cut",
        )
        redis_proxy.restore()
        status = loop.run_until_complete(finish(socket))
    finally:
        loop.close()

    reply = reply_of(conversation.id)
    assert reply is not None
    assert reply.content == "Started. Finished while Redis is away."
    assert status == "complete"


def test_a_database_outage_across_the_end_of_a_reply_is_waited_out(
    servers, postgres_proxy: TcpFaultProxy, upstream: FakeUpstream, user
) -> None:
    server = servers(DATABASE_URL=postgres_proxy.url_for(live_database_url()))
    chunks = gateway_chunks(["The database ", "was away at the end."])
    gate = Gate()
    upstream.enqueue(Stream([chunks[0], Hold(gate), *chunks[1:]]))
    conversation = conversation_create(owner=user)
    cookie = session_cookie(user)

    async def start() -> ChatSocket:
        socket = await _connect(server, conversation.id, cookie)
        await socket.send_turn()
        async with asyncio.timeout(WITHIN):
            await socket.read_until("The database ")
        return socket

    async def finish(socket: ChatSocket) -> str:
        async with asyncio.timeout(WITHIN):
            status = await socket.final_status()
        await socket.connection.close()
        return status

    loop = asyncio.new_event_loop()
    try:
        socket = loop.run_until_complete(start())
        postgres_proxy.cut()
        refused_before = postgres_proxy.refused
        gate.release()
        # The app tried to save, failed, and tried again.
        wait_for(
            lambda: postgres_proxy.refused >= refused_before + 2,
            what="the final save retried while PostgreSQL is away",
        )
        reply = reply_of(conversation.id)
        assert reply is not None
        assert reply.status == Message.Status.STREAMING
        postgres_proxy.restore()
        wait_for(
            lambda: getattr(reply_of(conversation.id), "status", "") != Message.Status.STREAMING,
            what="the reply saved once PostgreSQL is back",
        )
        status = loop.run_until_complete(finish(socket))
    finally:
        loop.close()

    reply = reply_of(conversation.id)
    assert reply is not None
    assert (reply.status, reply.content) == (
        Message.Status.COMPLETE,
        "The database was away at the end.",
    )
    assert status == "complete"


def test_a_reply_the_database_refuses_for_too_long_is_spooled_and_saved_at_the_next_start(
    servers, postgres_proxy: TcpFaultProxy, upstream: FakeUpstream, user, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    first = servers(
        DATABASE_URL=postgres_proxy.url_for(live_database_url()),
        CHAT_SAVE_RETRY_SECONDS="1",
        CHAT_SPOOL_DIR=str(spool),
    )
    chunks = gateway_chunks(["Kept on disk ", "until the database came back."])
    gate = Gate()
    upstream.enqueue(Stream([chunks[0], Hold(gate), *chunks[1:]]))
    conversation = conversation_create(owner=user)
    cookie = session_cookie(user)

    async def start() -> ChatSocket:
        socket = await _connect(first, conversation.id, cookie)
        await socket.send_turn()
        async with asyncio.timeout(WITHIN):
            await socket.read_until("Kept on disk ")
        return socket

    loop = asyncio.new_event_loop()
    try:
        socket = loop.run_until_complete(start())
        postgres_proxy.cut()
        gate.release()
        wait_for(lambda: list(spool.glob("*.jsonl")), what="the reply written to the spool")
        loop.run_until_complete(socket.connection.close())
    finally:
        loop.close()
    # The process goes away with the database still unreachable: only the spool has the end.
    first.stop()
    reply = reply_of(conversation.id)
    assert reply is not None
    # Another process's recovery sweep may have marked it interrupted meanwhile (its heartbeat
    # stopped with the database); the spool's replay must complete it all the same.
    assert reply.status in (Message.Status.STREAMING, Message.Status.INTERRUPTED)
    assert reply.content != "Kept on disk until the database came back."
    postgres_proxy.restore()

    servers(CHAT_SPOOL_DIR=str(spool))
    wait_for(
        lambda: getattr(reply_of(conversation.id), "status", "") == Message.Status.COMPLETE,
        what="the spooled reply saved by the next process at start-up",
    )
    reply = reply_of(conversation.id)
    assert reply is not None
    assert reply.content == "Kept on disk until the database came back."
    assert not list(spool.glob("*.jsonl*"))
