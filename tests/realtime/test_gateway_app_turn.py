"""A saved reply's turn, handed to the gateway client as a TurnRequest, negotiates its dialect
(the path the generation takes once it passes `selectors.reply_turn` instead of a ready body)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conversations.chat import selectors, services
from conversations.gateway.client import UpstreamClient
from conversations.gateway.dialect import Aspect
from conversations.gateway.events import DialectSwitched, Event
from conversations.gateway.payload import TurnRequest
from conversations.models import Conversation
from tests.support.factories import MODEL, turn_settings
from tests.support.gateway import API_KEY, collect, only, text_of
from tests.support.upstream_server import FakeUpstream, strict_gateway


@pytest.mark.django_db
def test_a_saved_turn_switches_to_a_top_level_system_prompt_when_refused(
    upstream_server: FakeUpstream, user: Any
) -> None:
    conversation = Conversation.objects.create(
        owner=user, max_tokens=1000, system_prompt="Answer in French."
    )
    started = services.turn_start(
        conversation_id=conversation.id,
        owner=user,
        content="Hello",
        settings=turn_settings(),
        model=MODEL,
    )
    turn, conversation_id = selectors.reply_turn(reply=started.reply)
    assert isinstance(turn, TurnRequest)
    assert conversation_id == conversation.id
    upstream_server.reset()
    upstream_server.default_reply = strict_gateway({"system-role"})

    async def run() -> list[Event]:
        client = UpstreamClient(base_url=upstream_server.base_url, api_key=API_KEY, timeout=5.0)
        try:
            events, error = await collect(client, turn)
        finally:
            await client.aclose()
        assert error is None
        return events

    try:
        events = asyncio.run(run())
        first, second = (request.json for request in upstream_server.requests)
    finally:
        upstream_server.reset()

    assert [e.aspect for e in only(events, DialectSwitched)] == [Aspect.SYSTEM]
    assert text_of(events) == "Hello from the fake upstream."
    assert first["messages"][0] == {"role": "system", "content": "Answer in French."}
    assert second["system"] == "Answer in French."
    assert second["messages"] == [{"role": "user", "content": "Hello"}]
