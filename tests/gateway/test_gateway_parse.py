"""Stream shapes the parser must read whole, or refuse loudly: never an empty "complete"."""

from __future__ import annotations

import json
import logging

import pytest

from conversations.gateway.client import UpstreamClient
from conversations.gateway.errors import ProtocolError, UnreadableStream
from conversations.gateway.events import ContentDelta, Finished, Usage
from conversations.gateway.parse import UNREADABLE_MESSAGE
from tests.support.gateway import API_KEY, chunk, collect, only, text_of
from tests.support.upstream_server import Event as SSE
from tests.support.upstream_server import FakeUpstream, Raw, Stream, gateway_chunks, wrapped_chunks


@pytest.mark.asyncio
async def test_wrapped_stream_reads_whole_with_counts_from_state_usage(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient
) -> None:
    fake_gateway.enqueue(
        Stream(
            wrapped_chunks(
                ["Hello", " from", " 2025"],
                input_tokens=16,
                output_tokens=3,
                cache_read_input_tokens=4,
            )
        )
    )

    events, error = await collect(gateway_client)

    assert error is None
    assert text_of(events) == "Hello from 2025"
    # Anthropic's input_tokens exclude the cached ones; OpenAI's prompt_tokens include them.
    assert only(events, Usage) == [Usage(20, 3, None, 4, None)]
    assert events[-1] == Finished("stop")


@pytest.mark.asyncio
async def test_own_usage_wins_over_state_usage_when_it_has_counts(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient
) -> None:
    inner = {
        "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 9},
    }
    state = {"usage": {"input_tokens": 1, "output_tokens": 1}}
    fake_gateway.enqueue(Stream([SSE(json.dumps({"event": inner, "state": state}))]))

    events, _ = await collect(gateway_client)

    assert only(events, Usage) == [Usage(30, 9, None, None, None)]


@pytest.mark.asyncio
async def test_stream_of_unknown_shape_is_an_unreadable_error_not_an_empty_reply(
    fake_gateway: FakeUpstream,
    gateway_client: UpstreamClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = {"type": "message_start", "message": {"id": "m1", "note": f"key {API_KEY}"}}
    fake_gateway.enqueue(
        Stream(
            [
                SSE(json.dumps(first)),
                SSE(json.dumps({"type": "content_block_delta", "delta": {"text": "Hi"}})),
                SSE(json.dumps({"type": "message_stop"})),
            ]
        )
    )
    caplog.set_level(logging.WARNING, logger="conversations.gateway")

    events, error = await collect(gateway_client)

    assert events == []
    assert isinstance(error, UnreadableStream)
    assert error.message == UNREADABLE_MESSAGE
    assert error.message == "The gateway's reply could not be read."
    assert '"message_start"' in error.raw_event
    assert API_KEY not in error.raw_event
    logged = [r.getMessage() for r in caplog.records if "unrecognised" in r.getMessage()]
    assert len(logged) == 1
    assert "3 unrecognised event(s)" in logged[0]
    assert API_KEY not in caplog.text


@pytest.mark.asyncio
async def test_raw_first_event_kept_for_staff_is_bounded(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient
) -> None:
    fake_gateway.enqueue(Stream([SSE(json.dumps({"blob": "x" * 100_000}))]))

    _, error = await collect(gateway_client)

    assert isinstance(error, UnreadableStream)
    assert len(error.raw_event) <= 2000


@pytest.mark.asyncio
async def test_only_finish_and_usage_chunks_are_unreadable_too(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient
) -> None:
    # The choices are recognised but carry no text under any key the parser knows.
    fake_gateway.enqueue(
        Stream([chunk(delta={"text": "Hi"}), chunk(finish_reason="stop", usage={"x": 1})])
    )

    events, error = await collect(gateway_client)

    assert events == []
    assert isinstance(error, UnreadableStream)


@pytest.mark.asyncio
async def test_unrecognised_events_among_good_ones_are_counted_and_logged_once(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient, caplog: pytest.LogCaptureFixture
) -> None:
    odd = SSE(json.dumps({"type": "ping"}))
    fake_gateway.enqueue(Stream([odd, *gateway_chunks(["fine"]), odd, SSE("[1, 2]")]))
    caplog.set_level(logging.WARNING, logger="conversations.gateway")

    events, error = await collect(gateway_client)

    assert error is None
    assert text_of(events) == "fine"
    logged = [r.getMessage() for r in caplog.records if "unrecognised" in r.getMessage()]
    assert logged == [
        'the gateway\'s reply had 3 unrecognised event(s); the first event was: {"type": "ping"}'
    ]


@pytest.mark.asyncio
async def test_comments_only_is_still_an_empty_reply_error(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient
) -> None:
    fake_gateway.enqueue(Stream([Raw(b": nothing to see\n\n")]))

    events, error = await collect(gateway_client)

    assert events == []
    assert isinstance(error, ProtocolError)
    assert not isinstance(error, UnreadableStream)


@pytest.mark.asyncio
async def test_anthropic_blocks_inside_a_delta_are_read(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient
) -> None:
    fake_gateway.enqueue(Stream([chunk(delta={"content": [{"type": "text", "text": "Hi"}]})]))

    events, error = await collect(gateway_client)

    assert error is None
    assert only(events, ContentDelta) == [ContentDelta("Hi")]
