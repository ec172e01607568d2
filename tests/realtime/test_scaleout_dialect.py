"""The request shape one Daphne process learned is the one the other sends first.

Runs on the PostgreSQL + Redis leg: two processes need a shared database and channel layer.
"""

import asyncio
from typing import Any

import pytest
from django.conf import settings as django_settings

from conversations.chat.services import conversation_create
from conversations.gateway.dialect import Dialect
from conversations.gateway.profiles import SONNET_4_5
from conversations.models import Message, ModelDialect
from tests.support.upstream_server import FakeUpstream, strict_gateway
from tests.support.ws import FINAL, chat_socket, session_cookie

ON_POSTGRES = django_settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
SYSTEM = "Answer in French."
FINISH_WITHIN = 60

pytestmark = [
    pytest.mark.scaleout,
    pytest.mark.skipif(
        not ON_POSTGRES,
        reason="two processes need a shared database and channel layer: runs on the "
        "PostgreSQL + Redis leg (DATABASE_URL=postgres://..., REDIS_URL=redis://...)",
    ),
]


async def _turn(base_url: str, conversation_id: Any, cookie: str, text: str, *, nth: int) -> str:
    """Send a turn and return the status of the conversation's ``nth`` finished reply (the
    socket's first frame already shows the replies finished before)."""
    socket = await chat_socket(base_url=base_url, conversation_id=conversation_id, cookie=cookie)
    try:
        await socket.send_turn(text)
        async with asyncio.timeout(FINISH_WITHIN):
            while len(finished := FINAL.findall(socket.text)) < nth:
                frame = await socket.connection.recv()
                assert isinstance(frame, str)
                socket.frames.append(frame)
        return finished[nth - 1]
    finally:
        await socket.connection.close()


def _system_shapes(upstream: FakeUpstream) -> list[str]:
    shapes = []
    for request in upstream.streamed_requests:
        body = request.json
        if body["messages"][0]["role"] == "system":
            shapes.append("first message")
        else:
            shapes.append("top-level" if body.get("system") == SYSTEM else "none")
    return shapes


def test_process_b_sends_the_shape_process_a_learned_without_a_refused_request(
    two_processes, upstream: FakeUpstream, user
) -> None:
    a, b = two_processes
    upstream.default_reply = strict_gateway({"system-role"})
    conversation = conversation_create(owner=user)
    conversation.model, conversation.system_prompt = SONNET_4_5.id, SYSTEM
    conversation.save(update_fields=["model", "system_prompt"])
    cookie = session_cookie(user)

    assert asyncio.run(_turn(a.url, conversation.id, cookie, "First, on A", nth=1)) == "complete"

    assert _system_shapes(upstream) == ["first message", "top-level"]
    row = ModelDialect.objects.get(model_id=SONNET_4_5.id)
    learned = Dialect.from_json(row.dialect)
    assert learned is not None and learned.system_top_level

    upstream.requests.clear()
    assert asyncio.run(_turn(b.url, conversation.id, cookie, "Then, on B", nth=2)) == "complete"

    # B never saw the refusal: its one request is already in the learned shape.
    assert _system_shapes(upstream) == ["top-level"]
    replies = list(Message.objects.filter(role=Message.Role.ASSISTANT).order_by("created_at"))
    assert [reply.status for reply in replies] == ["complete", "complete"]
    assert [reply.worker_id.split(":")[1] for reply in replies] == [
        str(a.process.pid),
        str(b.process.pid),
    ]
