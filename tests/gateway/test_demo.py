"""The offline demo model, driven through the real UpstreamClient."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from conversations.gateway.client import UpstreamClient
from conversations.gateway.content import RequestStyle
from conversations.gateway.demo import DemoTransport
from conversations.gateway.dialect import Dialect
from conversations.gateway.events import ContentDelta, Event, Finished, ReasoningDelta, Usage
from conversations.gateway.payload import TurnOptions, build_payload
from conversations.gateway.profiles import SONNET_4_5

MESSAGES = [{"role": "user", "content": "Can you show me *something* nice?"}]


@pytest_asyncio.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    demo = UpstreamClient(
        base_url="http://demo.invalid/v1",
        api_key="demo",
        transport=DemoTransport(token_delay=0),
    )
    yield demo
    await demo.aclose()


def payload(**options: Any) -> dict[str, Any]:
    style = options.pop("style", RequestStyle.OPENAI)
    stream = options.pop("stream", True)
    turn = TurnOptions(model="anthropic/claude-sonnet-4.5", **{"max_tokens": 4000, **options})
    return build_payload(
        profile=SONNET_4_5,
        options=turn,
        messages=MESSAGES,
        dialect=Dialect.of(style),
        stream=stream,
    ).body


async def collect(client: UpstreamClient, body: dict[str, Any]) -> list[Event]:
    return [event async for event in client.stream_chat(body)]


def text_of(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, ContentDelta))


@pytest.mark.asyncio
async def test_demo_streams_a_markdown_reply_word_by_word(client: UpstreamClient) -> None:
    events = await collect(client, payload())

    text = text_of(events)
    deltas = [e for e in events if isinstance(e, ContentDelta)]
    assert len(deltas) > 20
    assert "offline demo" in text
    assert "AIMLAPI_API_KEY" in text
    assert "> Can you show me *something* nice?" in text
    assert "**bold" in text
    assert "\n- " in text
    assert "```python\n" in text
    assert not any(isinstance(e, ReasoningDelta) for e in events)
    usage, finished = events[-2:]
    assert isinstance(usage, Usage)
    assert usage.completion_tokens == len(deltas)
    assert usage.cost_usd is not None
    assert usage.cost_usd > 0
    assert finished == Finished("stop")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "options",
    [
        {"reasoning_effort": "low"},
        {"reasoning_effort": "medium", "style": RequestStyle.ANTHROPIC},
    ],
    ids=["reasoning_effort", "thinking"],
)
async def test_demo_streams_reasoning_first_when_asked(
    client: UpstreamClient, options: dict[str, Any]
) -> None:
    events = await collect(client, payload(**options))

    kinds = [type(e) for e in events]
    assert kinds[0] is ReasoningDelta
    assert kinds.index(ContentDelta) > kinds.index(ReasoningDelta)
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    assert "offline demo" in reasoning
    assert isinstance(events[-2], Usage)
    assert events[-2].reasoning_tokens
    assert events[-1] == Finished("stop")


@pytest.mark.asyncio
async def test_demo_respects_max_tokens_with_length(client: UpstreamClient) -> None:
    events = await collect(client, payload(max_tokens=5))

    deltas = [e for e in events if isinstance(e, ContentDelta)]
    assert len(deltas) == 5
    assert events[-1] == Finished("length")


@pytest.mark.asyncio
async def test_demo_answers_non_streaming_requests_with_a_short_title(
    client: UpstreamClient,
) -> None:
    title = await client.complete(payload(stream=False))

    assert title == "Can you show me something nice"


@pytest.mark.asyncio
async def test_demo_paces_tokens_with_the_configured_delay() -> None:
    paced = UpstreamClient(
        base_url="http://demo.invalid/v1", api_key="demo", transport=DemoTransport(token_delay=0.01)
    )
    try:
        loop_time = asyncio.get_running_loop().time
        started = loop_time()
        events = await collect(paced, payload(max_tokens=10))
        elapsed = loop_time() - started
    finally:
        await paced.aclose()

    assert events[-1] == Finished("length")
    assert elapsed >= 0.09  # ten words plus the finish chunks, 0.01 s apart
