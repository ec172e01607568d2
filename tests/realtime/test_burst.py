"""Everyone presses Enter at once on the production layout (PostgreSQL + Redis, Daphne).

Every socket of a process shares one Redis queue with a fixed capacity, so a burst of replies
fills it: frames may then be dropped (viewers catch up from a snapshot), but no reply may be
left unsaved. The capacity is lowered here so that a burst CI can afford fills it as a burst
of a hundred fills the default one.
"""

import asyncio
import os
import uuid
from collections.abc import Iterator

import pytest
from django.conf import settings as django_settings

from conversations.chat.services import conversation_create
from conversations.models import Message
from tests.conftest import DaphneServer
from tests.support.upstream_server import FakeUpstream, Pause, Stream, gateway_chunks
from tests.support.ws import chat_socket, session_cookie

ON_POSTGRES = django_settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
BURST = int(os.environ.get("RT_BURST", "40"))
CAPACITY = 40
WORDS = [f"word{i} " for i in range(40)]
REPLY = "".join(WORDS)
# Generous: 40 replies at once on a shared 2-core machine.
FINISH_WITHIN = 120

pytestmark = [
    pytest.mark.scaleout,
    pytest.mark.skipif(
        not ON_POSTGRES,
        reason="the burst runs on the PostgreSQL + Redis leg (the production layout)",
    ),
]


def _reply_stream() -> Stream:
    steps: list = []
    for chunk in gateway_chunks(WORDS):
        steps += [chunk, Pause(0.02)]
    return Stream(steps)


@pytest.fixture
def processes(
    request: pytest.FixtureRequest,
    _sync_orm_beside_playwright: None,
    transactional_db: None,
    upstream: FakeUpstream,
) -> Iterator[list[DaphneServer]]:
    if not os.environ.get("REDIS_URL"):
        pytest.fail("the burst test needs REDIS_URL alongside PostgreSQL")
    prefix = f"chatsite-burst-{uuid.uuid4().hex[:8]}"
    env = {
        "CHANNELS_REDIS_PREFIX": prefix,
        "CHANNELS_REDIS_CAPACITY": str(CAPACITY),
        "CHAT_RATE_LIMIT_PER_MINUTE": "0",
    }
    servers = [DaphneServer(upstream=upstream, extra_env=env) for _ in range(request.param)]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


async def _burst(servers: list[DaphneServer], conversations: list, cookies: list[str]) -> list[str]:
    sockets = await asyncio.gather(
        *(
            chat_socket(
                base_url=servers[index % len(servers)].url,
                conversation_id=conversation.id,
                cookie=cookies[index],
            )
            for index, conversation in enumerate(conversations)
        )
    )
    # The socket's first frame is the conversation's (empty) final state: none here.
    await asyncio.gather(*(socket.send_turn() for socket in sockets))

    async def outcome(socket) -> str:
        try:
            async with asyncio.timeout(FINISH_WITHIN):
                return await socket.final_status()
        except (TimeoutError, ConnectionError) as exc:
            return f"no final frame ({type(exc).__name__})"

    outcomes = await asyncio.gather(*(outcome(socket) for socket in sockets))
    await asyncio.gather(*(socket.connection.close() for socket in sockets))
    return outcomes


@pytest.mark.parametrize("processes", [1, 2], indirect=True, ids=["one-process", "two-processes"])
def test_a_burst_on_the_redis_layer_saves_every_reply_whole(
    processes: list[DaphneServer], upstream: FakeUpstream, make_user, fast_password_hashing
) -> None:
    upstream.enqueue(*(_reply_stream() for _ in range(BURST)))
    users = [make_user(f"user{index}") for index in range(BURST)]
    conversations = [conversation_create(owner=user) for user in users]
    cookies = [session_cookie(user) for user in users]

    outcomes = asyncio.run(_burst(processes, conversations, cookies))

    replies = list(Message.objects.filter(role=Message.Role.ASSISTANT))
    assert len(replies) == BURST
    saved = {(reply.status, reply.content == REPLY) for reply in replies}
    stuck = [reply.status for reply in replies if reply.status != Message.Status.COMPLETE]
    assert saved == {(Message.Status.COMPLETE, True)}, f"{len(stuck)} not complete: {stuck}"
    assert outcomes == ["complete"] * BURST, outcomes
