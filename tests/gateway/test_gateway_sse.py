"""Server-Sent Events from raw bytes, however the network cuts them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conversations.gateway.client import UpstreamClient
from conversations.gateway.errors import (
    GatewayError,
    ProtocolError,
)
from conversations.gateway.events import (
    Event,
    Finished,
)
from conversations.gateway.sse import ServerSentEvent, SSEDecoder
from tests.support.gateway import (
    API_KEY,
    collect,
    text_of,
)
from tests.support.upstream_server import (
    FakeUpstream,
    Pause,
    Raw,
    Stream,
    gateway_chunks,
)


@pytest.mark.asyncio
async def test_comment_keepalive_lines_are_ignored(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient
) -> None:
    first, *rest = gateway_chunks(["A", "B"])
    fake_gateway.enqueue(
        Stream(
            [
                Raw(b": OPENROUTER PROCESSING\n\n"),
                first,
                Raw(b": keep-alive\n"),
                Raw(b"\n"),
                *rest,
                Raw(b":\n\n"),
            ]
        )
    )

    events, error = await collect(gateway_client)

    assert error is None
    assert text_of(events) == "AB"
    assert events[-1] == Finished("stop")


@pytest.mark.asyncio
async def test_event_split_across_network_reads_is_reassembled(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient
) -> None:
    first, *rest = gateway_chunks(["naïve café ☕"])
    frame = first.frame()
    cut = frame.index("☕".encode()) + 1  # inside the multi-byte character
    fake_gateway.enqueue(
        Stream(
            [Raw(frame[:10]), Pause(0.05), Raw(frame[10:cut]), Pause(0.05), Raw(frame[cut:]), *rest]
        )
    )

    events, error = await collect(gateway_client)

    assert error is None
    assert text_of(events) == "naïve café ☕"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), text=st.text(min_size=1, max_size=120))
def test_any_text_split_anywhere_reassembles_exactly(
    upstream_server: FakeUpstream, data: st.DataObject, text: str
) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=8)))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    wire = b"".join(event.frame() for event in gateway_chunks(pieces))
    reads = sorted(set(data.draw(st.lists(st.integers(1, len(wire) - 1), max_size=12))))
    steps: list[Any] = []
    for start, end in zip([0, *reads], [*reads, len(wire)], strict=True):
        steps += [Raw(wire[start:end]), Pause(0.001)]
    upstream_server.reset()
    upstream_server.enqueue(Stream(steps))

    async def run() -> tuple[list[Event], GatewayError | None]:
        client = UpstreamClient(base_url=upstream_server.base_url, api_key=API_KEY, timeout=5.0)
        try:
            return await collect(client)
        finally:
            await client.aclose()

    events, error = asyncio.run(run())

    assert error is None
    # NUL is the one character PostgreSQL text cannot hold.
    assert text_of(events) == text.replace("\x00", "")
    assert events[-1] == Finished("stop")


def test_decoder_takes_every_line_ending_even_split_across_reads() -> None:
    decoder = SSEDecoder()

    events = [
        *decoder.feed(b"\xef\xbb\xbfdata: one\r"),
        *decoder.feed(b"\n\r\ndata: two\r"),
        *decoder.feed(b"\rdata:three\n"),
        *decoder.feed(b"data: four\n\n: comment\n\n"),
        *decoder.close(),
    ]

    assert [e.data for e in events] == ["one", "two", "three\nfour"]


def test_decoder_drops_an_event_left_without_its_blank_line() -> None:
    decoder = SSEDecoder()

    assert decoder.feed(b"data: whole\n\ndata: cut") == [ServerSentEvent("whole")]
    assert decoder.close() == []


def test_a_line_that_never_ends_is_refused_before_it_fills_memory() -> None:
    decoder = SSEDecoder(max_line_chars=1000)
    decoder.feed(b"data: " + b"x" * 900)

    with pytest.raises(ProtocolError):
        decoder.feed(b"x" * 200)
