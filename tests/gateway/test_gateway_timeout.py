"""CHAT_UPSTREAM_TIMEOUT counts time without content, not time without bytes."""

from __future__ import annotations

import time

import pytest

from conversations.gateway.errors import Timeout
from conversations.gateway.events import ContentDelta, Finished
from tests.support.gateway import ClientFactory, chunk, collect, text_of
from tests.support.upstream_server import FakeUpstream, Pause, Step, Stream, comments_only

TIMEOUT = 0.5


@pytest.mark.asyncio
async def test_keep_alive_comments_alone_time_out(
    fake_gateway: FakeUpstream, gateway_client_factory: ClientFactory
) -> None:
    # Forty comments 0.1 s apart: bytes keep arriving for 4 s, content never.
    fake_gateway.enqueue(Stream(comments_only(40, gap=0.1)))
    client = gateway_client_factory(timeout=TIMEOUT)

    started = time.monotonic()
    events, error = await collect(client)
    elapsed = time.monotonic() - started

    assert events == []
    assert isinstance(error, Timeout)
    assert "longer than 0.5 s" in error.message
    assert elapsed < 2.0


@pytest.mark.asyncio
async def test_comments_after_some_content_time_out_and_keep_the_content(
    fake_gateway: FakeUpstream, gateway_client_factory: ClientFactory
) -> None:
    fake_gateway.enqueue(Stream([chunk(content="Start"), *comments_only(40, gap=0.1)]))
    client = gateway_client_factory(timeout=TIMEOUT)

    started = time.monotonic()
    events, error = await collect(client)

    assert events == [ContentDelta("Start")]
    assert isinstance(error, Timeout)
    assert time.monotonic() - started < 2.0


@pytest.mark.asyncio
async def test_empty_chunks_are_not_progress(
    fake_gateway: FakeUpstream, gateway_client_factory: ClientFactory
) -> None:
    steps: list[Step] = [chunk(content="Start")]
    for _ in range(40):
        steps += [chunk(content=""), Pause(0.1)]
    fake_gateway.enqueue(Stream(steps))
    client = gateway_client_factory(timeout=TIMEOUT)

    started = time.monotonic()
    events, error = await collect(client)

    assert text_of(events) == "Start"
    assert isinstance(error, Timeout)
    assert time.monotonic() - started < 2.0


@pytest.mark.asyncio
async def test_slow_but_steady_content_does_not_time_out(
    fake_gateway: FakeUpstream, gateway_client_factory: ClientFactory
) -> None:
    # Each word comes 0.3 s after the last, interleaved with comments; the whole reply takes
    # longer than the timeout, but content never stops for that long.
    steps: list[Step] = []
    for word in ["one ", "two ", "three ", "four ", "five"]:
        steps += [*comments_only(1, gap=0.15), Pause(0.15), chunk(content=word)]
    steps.append(chunk(finish_reason="stop"))
    fake_gateway.enqueue(Stream(steps))
    client = gateway_client_factory(timeout=TIMEOUT)

    events, error = await collect(client)

    assert error is None
    assert text_of(events) == "one two three four five"
    assert events[-1] == Finished("stop")


@pytest.mark.asyncio
async def test_silence_after_the_finish_reason_ends_the_reply_normally(
    fake_gateway: FakeUpstream, gateway_client_factory: ClientFactory
) -> None:
    fake_gateway.enqueue(
        Stream([chunk(content="Done", finish_reason="stop"), *comments_only(40, gap=0.1)])
    )
    client = gateway_client_factory(timeout=TIMEOUT)

    events, error = await collect(client)

    assert error is None
    assert events == [ContentDelta("Done"), Finished("stop")]
