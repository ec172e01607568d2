"""Every number and string the gateway sends is made safe at the parser boundary.

Each scenario is served by the loopback fake gateway, as bytes on a real socket.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from decimal import Decimal
from typing import Any

import pytest

from conversations.gateway.client import UpstreamClient
from conversations.gateway.errors import StreamBroken
from conversations.gateway.events import Citation, ContentDelta, Event, Refusal, Usage
from conversations.gateway.values import TextJoiner, cost_usd, storable_text, token_count
from tests.support.gateway import chunk, collect, only, reasoning_of, text_of
from tests.support.upstream_server import Event as SSE
from tests.support.upstream_server import (
    FakeUpstream,
    Raw,
    Stream,
    gateway_chunks,
    split_bytes,
    surrogate_split,
)

SMILE = "\U0001f600"


def _no_unstorable(events: list[Event]) -> None:
    for event in events:
        for field in dataclasses.fields(event):
            value = getattr(event, field.name)
            if isinstance(value, str):
                assert "\x00" not in value
                value.encode("utf-8")  # raises on a lone surrogate


# -- numbers ----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_token_counts_out_of_range_become_unknown_and_are_logged_once(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient, caplog: pytest.LogCaptureFixture
) -> None:
    usage = {
        "prompt_tokens": -1,
        "completion_tokens": 5e9,
        "total_tokens": 5e9,
        "completion_tokens_details": {"reasoning_tokens": 10_000_001},
        "prompt_tokens_details": {"cached_tokens": 3},
    }
    fake_gateway.enqueue(Stream(gateway_chunks(["Hi"], usage=usage, usd_spent=None)))
    caplog.set_level(logging.WARNING, logger="conversations.gateway")

    events, error = await collect(gateway_client)

    assert error is None
    assert only(events, Usage) == [Usage(None, None, None, 3, None)]
    warnings = [r for r in caplog.records if "usage values out of range" in r.getMessage()]
    assert len(warnings) == 1
    assert "prompt_tokens=-1" in warnings[0].getMessage()


@pytest.mark.asyncio
async def test_sane_token_counts_pass_through(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient, caplog: pytest.LogCaptureFixture
) -> None:
    usage = {"prompt_tokens": 10_000_000, "completion_tokens": 0, "total_tokens": 10_000_000}
    fake_gateway.enqueue(Stream(gateway_chunks(["Hi"], usage=usage, usd_spent=None)))
    caplog.set_level(logging.WARNING, logger="conversations.gateway")

    events, _ = await collect(gateway_client)

    assert only(events, Usage) == [Usage(10_000_000, 0, None, None, None)]
    assert "out of range" not in caplog.text


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("usd_spent", "expected"),
    [
        (0.0012, Decimal("0.001200")),
        (0.00123456789, Decimal("0.001235")),
        ("0.5", Decimal("0.500000")),
        (999999.999999, Decimal("999999.999999")),
        (12345678.5, None),
        (-0.01, None),
        ("NaN", None),
        ("Infinity", None),
        ("1e400", None),
        ("a lot", None),
        (True, None),
    ],
)
async def test_cost_is_a_decimal_that_fits_the_column_or_unknown(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient, usd_spent: Any, expected: Any
) -> None:
    body = {
        "id": "",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}],
        "usage": None,
        "meta": {"usage": {"credits_used": 1, "usd_spent": usd_spent}},
    }
    fake_gateway.enqueue(Stream([SSE(json.dumps(body))]))

    events, error = await collect(gateway_client)

    assert error is None
    (usage,) = only(events, Usage) or [Usage(None, None, None, None, None)]
    assert usage.cost_usd == expected
    if expected is not None:
        assert usage.cost_usd.as_tuple().exponent == -6
        assert len(usage.cost_usd.as_tuple().digits) <= 12


def test_value_helpers_bound_their_inputs() -> None:
    assert token_count("42") == 42
    assert token_count(3.0) == 3
    assert token_count(3.5) is None
    assert token_count(False) is None
    assert token_count([1]) is None
    assert cost_usd(None) is None
    assert cost_usd("9" * 100) is None
    assert storable_text("a\x00b\ud800c") == "ab\ufffdc"


# -- text -------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_nul_and_lone_surrogates_are_removed_from_every_text(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient
) -> None:
    citation = {
        "type": "url_citation",
        "url_citation": {
            "url": "https://ex.ample/\x00a",
            "title": "T\x00itle\udc00",
            "start_index": 0,
        },
    }
    fake_gateway.enqueue(
        Stream(
            [
                chunk(delta={"reasoning_content": "thi\x00nk"}),
                chunk(content="a\x00b\udc00c"),
                chunk(delta={"refusal": "no\x00pe", "annotations": [citation]}),
                chunk(finish_reason="st\x00op"),
            ]
        )
    )

    events, error = await collect(gateway_client)

    assert error is None
    _no_unstorable(events)
    assert reasoning_of(events) == "think"
    assert text_of(events) == "ab\ufffdc"
    assert only(events, Refusal) == [Refusal("nope")]
    assert only(events, Citation) == [Citation("https://ex.ample/a", "Title\ufffd", 0, None)]


@pytest.mark.asyncio
async def test_error_message_from_the_gateway_loses_its_nul(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient
) -> None:
    fake_gateway.enqueue(
        Stream([chunk(content="partial"), SSE(json.dumps({"error": {"message": "bro\x00ke"}}))])
    )

    _, error = await collect(gateway_client)

    assert isinstance(error, StreamBroken)
    assert "\x00" not in error.message
    assert "broke" in error.message


@pytest.mark.asyncio
@pytest.mark.parametrize("offset", [1, 2, 3])
async def test_multibyte_character_split_across_network_writes_is_joined(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient, offset: int
) -> None:
    text = f"caf\u00e9 {SMILE} done"
    events_on_wire = gateway_chunks([text])
    # Cut inside the emoji's four UTF-8 bytes.
    fake_gateway.enqueue(
        Stream(split_bytes(events_on_wire, cut=lambda wire: wire.index(SMILE.encode()) + offset))
    )

    events, error = await collect(gateway_client)

    assert error is None
    assert text_of(events) == text


@pytest.mark.asyncio
async def test_invalid_utf8_becomes_replacement_characters_not_a_failure(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient
) -> None:
    fake_gateway.enqueue(Stream([Raw(b'data: {"choices":[{"delta":{"content":"a\xffb"}}]}\n\n')]))

    events, error = await collect(gateway_client)

    assert error is None
    assert text_of(events) == "a\ufffdb"


@pytest.mark.asyncio
async def test_surrogate_halves_split_across_two_chunks_are_joined(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient
) -> None:
    # JSON.stringify of a string cut between the two halves of an emoji.
    fake_gateway.enqueue(
        Stream(
            [
                SSE('{"choices":[{"index":0,"delta":{"content":"smile \\ud83d"}}]}'),
                SSE('{"choices":[{"index":0,"delta":{"content":"\\ude00 and more"}}]}'),
                SSE('{"choices":[{"index":0,"delta":{"content":"\\ud83d"}}]}'),
                SSE('{"choices":[{"index":0,"delta":{"content":"\\ude00"}}]}'),
                SSE('{"choices":[{"index":0,"finish_reason":"stop"}]}'),
            ]
        )
    )

    events, error = await collect(gateway_client)

    assert error is None
    _no_unstorable(events)
    assert text_of(events) == f"smile {SMILE} and more{SMILE}"


@pytest.mark.asyncio
async def test_a_half_that_never_finds_its_pair_becomes_a_replacement_character(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient
) -> None:
    fake_gateway.enqueue(
        Stream(
            [
                SSE('{"choices":[{"index":0,"delta":{"content":"a\\ud83d"}}]}'),
                SSE('{"choices":[{"index":0,"delta":{"content":"b\\ud83d"}}]}'),
            ]
        )
    )

    events, error = await collect(gateway_client)

    assert error is None
    _no_unstorable(events)
    assert text_of(events) == "a\ufffdb\ufffd"
    assert all(e.text for e in only(events, ContentDelta))


@pytest.mark.asyncio
async def test_the_fake_gateways_surrogate_split_reads_whole(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient
) -> None:
    halves = surrogate_split("I am ", SMILE, " today")
    assert '"I am \\ud83d"' in halves[0].data
    assert '"\\ude00 today"' in halves[1].data
    fake_gateway.enqueue(Stream(list(halves)))

    events, error = await collect(gateway_client)

    assert error is None
    assert text_of(events) == f"I am {SMILE} today"


def test_text_joiner_keeps_each_stream_apart() -> None:
    joiner = TextJoiner()
    assert joiner.feed("x\ud83d") == "x"
    assert joiner.feed("\ude00") == SMILE
    assert joiner.feed("\ude00") == "\ufffd"
    assert joiner.flush() == ""
