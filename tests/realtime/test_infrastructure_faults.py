"""Redis and PostgreSQL going away under a streaming reply, through a TCP fault proxy.

Runs on the PostgreSQL + Redis leg. The app runs in Daphne processes whose REDIS_URL or
DATABASE_URL points at the proxy; the test itself reaches both directly, so it can watch the
database while the app cannot.
"""

import asyncio
import json
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
from tests.factories import exchange
from tests.support.sockets import SEND
from tests.support.tcp_proxy import TcpFaultProxy
from tests.support.upstream_server import FakeUpstream, Gate, Hold, Stream, gateway_chunks
from tests.support.ws import ChatSocket, chat_socket, session_cookie

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


def _gated(pieces: list[str]) -> tuple[Stream, list[Gate]]:
    """A reply whose pieces after the first each wait for their own gate, and whose end (usage,
    finish) waits for a last one: the test decides when each word is written."""
    chunks = gateway_chunks(pieces)
    gates = [Gate() for _ in pieces]
    steps: list[object] = [chunks[0]]
    for gate, chunk in zip(gates, chunks[1 : len(pieces)], strict=False):
        steps += [Hold(gate), chunk]
    steps += [Hold(gates[-1]), *chunks[len(pieces) :]]
    return Stream(steps), gates  # type: ignore[arg-type]


# Well under the Redis client's 30 s socket timeout, so the stall is a stall, not a cut.
STALL_STEP = 10


def test_a_redis_stall_mid_reply_keeps_local_deltas_flowing_and_loses_nothing(
    servers, redis_proxy: TcpFaultProxy, upstream: FakeUpstream, user
) -> None:
    redis = redis_proxy.url_for(os.environ["REDIS_URL"])
    a, b = servers(REDIS_URL=redis), servers(REDIS_URL=redis)
    first = ["One: before the stall. ", "One: stalled a. ", "One: stalled b. ", "One: after."]
    second = ["Two: before the stall. ", "Two: stalled a. ", "Two: stalled b. ", "Two: after."]
    stream_one, gates_one = _gated(first)
    stream_two, gates_two = _gated(second)
    upstream.enqueue(stream_one, stream_two)
    one, two = conversation_create(owner=user), conversation_create(owner=user)
    cookie = session_cookie(user)

    async def scenario() -> tuple[str, str, str, str]:
        # Reply one is written by A and watched from A and B; reply two is written by B.
        one_on_a = await _connect(a, one.id, cookie)
        one_on_b = await _connect(b, one.id, cookie)
        two_on_b = await _connect(b, two.id, cookie)
        async with asyncio.timeout(WITHIN):
            await one_on_a.send_turn()
            await one_on_a.read_until(first[0])
            await one_on_b.read_until(first[0])
            await two_on_b.send_turn()
            await two_on_b.read_until(second[0])
        await asyncio.to_thread(redis_proxy.stall)
        # While Redis answers nothing, each process's own sockets still get every word, one
        # after the other (not only the first delta of the stall).
        for index in (1, 2):
            gates_one[index - 1].release()
            gates_two[index - 1].release()
            async with asyncio.timeout(STALL_STEP):
                await one_on_a.read_until(first[index])
                await two_on_b.read_until(second[index])
        # Nothing of the stall reached B's viewer of reply one: it crosses Redis.
        assert first[1] not in one_on_b.text
        await asyncio.to_thread(redis_proxy.restore)
        gates_one[2].release()
        gates_two[2].release()
        gates_one[3].release()
        gates_two[3].release()
        async with asyncio.timeout(WITHIN):
            statuses = (
                await one_on_a.final_status(),
                await one_on_b.final_status(),
                await two_on_b.final_status(),
            )
            # Every socket is still open and answers.
            for socket in (one_on_a, one_on_b, two_on_b):
                await socket.connection.send('{"action": "probe"}')
                await socket.read_until("probe")
        for socket in (one_on_a, one_on_b, two_on_b):
            await socket.connection.close()
        return *statuses, one_on_b.frames[-1] if one_on_b.frames else ""

    *statuses, _ = asyncio.run(scenario())

    assert statuses == ["complete", "complete", "complete"]
    for conversation, pieces in ((one, first), (two, second)):
        reply = reply_of(conversation.id)
        assert reply is not None
        assert (reply.status, reply.content) == (Message.Status.COMPLETE, "".join(pieces))


def test_a_database_stall_mid_reply_keeps_deltas_flowing_and_saves_the_reply_whole(
    servers, postgres_proxy: TcpFaultProxy, upstream: FakeUpstream, user
) -> None:
    server = servers(DATABASE_URL=postgres_proxy.url_for(live_database_url()))
    first = ["One: before. ", "One: stalled a. ", "One: stalled b. ", "One: end."]
    second = ["Two: before. ", "Two: stalled a. ", "Two: stalled b. ", "Two: end."]
    stream_one, gates_one = _gated(first)
    stream_two, gates_two = _gated(second)
    upstream.enqueue(stream_one, stream_two)
    one, two = conversation_create(owner=user), conversation_create(owner=user)
    cookie = session_cookie(user)

    async def start() -> tuple[ChatSocket, ChatSocket]:
        on_one = await _connect(server, one.id, cookie)
        on_two = await _connect(server, two.id, cookie)
        async with asyncio.timeout(WITHIN):
            await on_one.send_turn()
            await on_one.read_until(first[0])
            await on_two.send_turn()
            await on_two.read_until(second[0])
        return on_one, on_two

    async def stalled(on_one: ChatSocket, on_two: ChatSocket) -> None:
        # Neither reply needs the database to reach its socket, word after word; reply one
        # also ends while the database answers nothing.
        for index in (1, 2, 3):
            gates_one[index - 1].release()
            gates_two[index - 1].release()
            async with asyncio.timeout(STALL_STEP):
                await on_one.read_until(first[index])
                await on_two.read_until(second[index])
        gates_one[3].release()

    async def finish(on_one: ChatSocket, on_two: ChatSocket) -> tuple[str, str]:
        gates_two[3].release()
        async with asyncio.timeout(WITHIN):
            statuses = (await on_one.final_status(), await on_two.final_status())
            for socket in (on_one, on_two):
                await socket.connection.send('{"action": "probe"}')
                await socket.read_until("probe")
        for socket in (on_one, on_two):
            await socket.connection.close()
        return statuses

    loop = asyncio.new_event_loop()
    try:
        on_one, on_two = loop.run_until_complete(start())
        postgres_proxy.stall()
        loop.run_until_complete(stalled(on_one, on_two))
        # The end of reply one waits for the database, held in memory.
        assert getattr(reply_of(one.id), "status", "") == Message.Status.STREAMING
        postgres_proxy.restore()
        statuses = loop.run_until_complete(finish(on_one, on_two))
    finally:
        loop.close()

    assert statuses == ("complete", "complete")
    for conversation, pieces in ((one, first), (two, second)):
        reply = reply_of(conversation.id)
        assert reply is not None
        assert (reply.status, reply.content) == (Message.Status.COMPLETE, "".join(pieces))


def test_a_database_connection_dropped_silently_is_given_up_and_the_save_retried(
    servers, postgres_proxy: TcpFaultProxy, upstream: FakeUpstream, user
) -> None:
    server = servers(
        DATABASE_URL=postgres_proxy.url_for(live_database_url()), CHAT_DB_STALL_SECONDS="2"
    )
    pieces = ["Saved although ", "its connection went dark."]
    stream, gates = _gated(pieces)
    upstream.enqueue(stream)
    conversation = conversation_create(owner=user)
    cookie = session_cookie(user)

    async def start() -> ChatSocket:
        socket = await _connect(server, conversation.id, cookie)
        async with asyncio.timeout(WITHIN):
            await socket.send_turn()
            await socket.read_until(pieces[0])
        return socket

    async def finish(socket: ChatSocket) -> str:
        async with asyncio.timeout(WITHIN):
            status = await socket.final_status()
        await socket.connection.close()
        return status

    loop = asyncio.new_event_loop()
    try:
        socket = loop.run_until_complete(start())
        # Every connection open now holds its bytes for good (nothing restores them); new
        # connections work. Only a bound in the app ends a save stuck on an old one.
        postgres_proxy.stall_open_connections()
        accepted = postgres_proxy.accepted
        gates[0].release()
        gates[1].release()
        wait_for(
            lambda: getattr(reply_of(conversation.id), "status", "") == Message.Status.COMPLETE,
            what="the reply saved on a fresh connection",
        )
        status = loop.run_until_complete(finish(socket))
    finally:
        loop.close()

    reply = reply_of(conversation.id)
    assert reply is not None
    assert reply.content == "".join(pieces)
    assert status == "complete"
    assert postgres_proxy.accepted > accepted


def test_a_branch_action_during_a_redis_stall_keeps_the_socket_open_and_writes_the_reply(
    servers, redis_proxy: TcpFaultProxy, upstream: FakeUpstream, user
) -> None:
    server = servers(REDIS_URL=redis_proxy.url_for(os.environ["REDIS_URL"]))
    pieces = ["Regenerated while Redis stalls. ", "And finished."]
    stream, gates = _gated(pieces)
    upstream.enqueue(stream)
    conversation = conversation_create(owner=user)
    _, first_reply = exchange(conversation, "A question", "The first answer.")
    cookie = session_cookie(user)
    regenerate = {**SEND, "action": "regenerate", "message_id": str(first_reply.id)}
    del regenerate["message"]

    async def scenario() -> str:
        socket = await _connect(server, conversation.id, cookie)
        await asyncio.to_thread(redis_proxy.stall)
        # The re-render of the branch crosses Redis for other processes' viewers, and that
        # waits on the stall until its bound: the new reply is still written, on an open socket.
        async with asyncio.timeout(WITHIN):
            await socket.connection.send(json.dumps(regenerate))
            await socket.read_until(pieces[0])
        await asyncio.to_thread(redis_proxy.restore)
        gates[0].release()
        gates[1].release()
        async with asyncio.timeout(WITHIN):
            status = await socket.final_status()
            await socket.connection.send('{"action": "probe"}')
            await socket.read_until("probe")
        await socket.connection.close()
        return status

    assert asyncio.run(scenario()) == "complete"
    replies = Message.objects.filter(conversation_id=conversation.id, role=Message.Role.ASSISTANT)
    assert sorted(replies.values_list("content", flat=True)) == sorted(
        ["The first answer.", "".join(pieces)]
    )
