"""The stream shapes the gateway and its relatives send, read against the loopback server."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from conversations.gateway.client import UpstreamClient
from conversations.gateway.errors import (
    ProtocolError,
    StreamBroken,
)
from conversations.gateway.events import (
    Citation,
    ContentDelta,
    Finished,
    ReasoningDelta,
    Refusal,
    Retrying,
    Usage,
)
from tests.support.gateway import (
    chunk,
    collect,
    only,
    reasoning_of,
    text_of,
)
from tests.support.upstream_server import (
    DEFAULT_USAGE,
    FakeUpstream,
    Raw,
    Stream,
    completion_reply,
    gateway_chunks,
    openai_chunks,
)
from tests.support.upstream_server import Event as SSE


def test_gateway_chunks_fixture_reproduces_the_documented_quirks() -> None:
    bodies = [json.loads(e.data) for e in gateway_chunks(["a", "b"], reasoning_pieces=["r"])]

    assert bodies[0]["id"].startswith("chatcmpl-")
    assert all(b["id"] == "" for b in bodies[1:])
    assert all("finish_reason" not in b["choices"][0] for b in bodies[:-2])
    assert all(
        b["choices"][0]["delta"]["role"] == "assistant"
        and b["choices"][0]["delta"]["refusal"] is None
        for b in bodies[:-1]
    )
    assert bodies[-2]["usage"] == DEFAULT_USAGE
    assert bodies[-2]["meta"]["usage"]["usd_spent"] == 0.0012
    assert bodies[-1] == {**bodies[-1], "choices": [{"index": 0, "finish_reason": "stop"}]}
    assert bodies[-1]["usage"] is None
    assert all(e.data != "[DONE]" for e in gateway_chunks(["a"]))


@pytest.mark.asyncio
async def test_gateway_stream_yields_text_then_one_usage_then_one_finished(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient
) -> None:
    fake_gateway.enqueue(Stream(list(gateway_chunks(["Hel", "lo ", "wörld"]))))

    events, error = await collect(gateway_client)

    assert error is None
    assert text_of(events) == "Hello wörld"
    assert events[-2:] == [
        Usage(
            prompt_tokens=12,
            completion_tokens=7,
            reasoning_tokens=0,
            cached_tokens=0,
            cost_usd=Decimal("0.0012"),
        ),
        Finished("stop"),
    ]
    assert len(only(events, Finished)) == 1
    assert len(only(events, Usage)) == 1


@pytest.mark.asyncio
async def test_openai_stream_with_separate_usage_chunk_and_done(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient
) -> None:
    steps = [*openai_chunks(["One", " two"]), chunk(content="after DONE")]
    fake_gateway.enqueue(Stream(steps))

    events, error = await collect(gateway_client)

    assert error is None
    assert text_of(events) == "One two"
    assert events[-2:] == [Usage(12, 7, 0, 0, None), Finished("stop")]


@pytest.mark.asyncio
async def test_chunks_without_delta_and_duplicate_finish_give_one_finished(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient
) -> None:
    fake_gateway.enqueue(
        Stream(
            [
                chunk(content="cut off", id="chatcmpl-1"),
                chunk(content="", finish_reason="length"),
                SSE(
                    json.dumps({"choices": [{"index": 0, "finish_reason": "stop"}], "usage": None})
                ),
                SSE(json.dumps({"choices": [{"index": 0}], "id": ""})),
            ]
        )
    )

    events, error = await collect(gateway_client)

    assert error is None
    assert text_of(events) == "cut off"
    assert only(events, Finished) == [Finished("length")]
    assert only(events, Usage) == []


@pytest.mark.asyncio
async def test_end_of_body_without_done_or_finish_reason_still_ends(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient
) -> None:
    fake_gateway.enqueue(Stream([chunk(content="partial")]))

    events, error = await collect(gateway_client)

    assert error is None
    assert events == [ContentDelta("partial"), Finished("unknown")]


@pytest.mark.asyncio
@pytest.mark.parametrize("key", ["reasoning_content", "reasoning"])
async def test_reasoning_deltas_under_either_key(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient, key: str
) -> None:
    fake_gateway.enqueue(
        Stream(
            [
                chunk(delta={key: "Let me think. "}),
                chunk(delta={key: "Done."}),
                chunk(content="Answer", finish_reason="stop"),
            ]
        )
    )

    events, error = await collect(gateway_client)

    assert error is None
    assert reasoning_of(events) == "Let me think. Done."
    assert text_of(events) == "Answer"
    assert events.index(ReasoningDelta("Done.")) < events.index(ContentDelta("Answer"))


@pytest.mark.asyncio
async def test_gateway_reasoning_pieces_come_before_content(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient
) -> None:
    fake_gateway.enqueue(Stream(list(gateway_chunks(["Yes."], reasoning_pieces=["Hmm", "…"]))))

    events, error = await collect(gateway_client)

    assert error is None
    assert [type(e) for e in events[:3]] == [ReasoningDelta, ReasoningDelta, ContentDelta]
    assert reasoning_of(events) == "Hmm…"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ("stop", "stop"),
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("length", "length"),
        ("max_tokens", "length"),
        ("content_filter", "content_filter"),
        ("tool_use", "tool_calls"),
        ("tool_calls", "tool_calls"),
    ],
)
async def test_finish_reasons_are_normalised(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient, sent: str, expected: str
) -> None:
    fake_gateway.enqueue(Stream(list(gateway_chunks(["x"], finish_reason=sent))))

    events, error = await collect(gateway_client)

    assert error is None
    assert only(events, Finished) == [Finished(expected)]


@pytest.mark.asyncio
async def test_finish_reason_error_raises_stream_error_after_the_text(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient
) -> None:
    fake_gateway.enqueue(
        Stream(
            [
                chunk(content="Partial answer"),
                chunk(content="", finish_reason="error", error={"message": "Upstream exploded"}),
            ]
        )
    )

    events, error = await collect(gateway_client)

    assert text_of(events) == "Partial answer"
    assert error is not None
    assert isinstance(error, StreamBroken)
    assert "Upstream exploded" in error.message
    assert len(fake_gateway.requests) == 1


@pytest.mark.asyncio
async def test_bare_finish_reason_error_still_raises(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient
) -> None:
    fake_gateway.enqueue(Stream([chunk(content="x"), chunk(finish_reason="error")]))

    events, error = await collect(gateway_client)

    assert error is not None
    assert isinstance(error, StreamBroken)
    assert only(events, Finished) == []


@pytest.mark.asyncio
async def test_top_level_error_mid_stream_keeps_text_and_is_not_retried(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient
) -> None:
    error_line = {"error": {"code": 502, "message": "Provider returned error"}}
    fake_gateway.enqueue(
        Stream([chunk(content="Some words"), SSE(json.dumps(error_line))]),
        Stream(list(gateway_chunks(["should not be requested"]))),
    )

    events, error = await collect(gateway_client)

    assert text_of(events) == "Some words"
    assert error is not None
    assert isinstance(error, StreamBroken)
    assert "Provider returned error" in error.message
    assert len(fake_gateway.requests) == 1


@pytest.mark.asyncio
async def test_overloaded_error_before_any_token_is_retried(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient, backoff_sleeps: list[float]
) -> None:
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    fake_gateway.enqueue(
        Stream([SSE(json.dumps(overloaded))]), Stream(list(gateway_chunks(["ok"])))
    )

    events, error = await collect(gateway_client)

    assert error is None
    assert text_of(events) == "ok"
    assert len(fake_gateway.requests) == 2
    assert len(only(events, Retrying)) == 1
    assert len(backoff_sleeps) == 1


@pytest.mark.asyncio
async def test_malformed_json_line_is_a_protocol_error(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient
) -> None:
    fake_gateway.enqueue(Stream([chunk(content="fine"), Raw(b'data: {"choices": [\n\n')]))

    events, error = await collect(gateway_client)

    assert text_of(events) == "fine"
    assert error is not None
    assert isinstance(error, ProtocolError)


@pytest.mark.asyncio
@pytest.mark.parametrize("where", ["chunk_meta", "usage_meta"])
async def test_cost_is_read_from_meta_usage_usd_spent(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient, where: str
) -> None:
    meta = {"usage": {"credits_used": 2520, "usd_spent": 0.00123}}
    usage: dict[str, Any] = {"prompt_tokens": 5, "completion_tokens": 2}
    extra: dict[str, Any] = {"usage": usage}
    if where == "chunk_meta":
        extra["meta"] = meta
    else:
        usage["meta"] = meta
    fake_gateway.enqueue(
        Stream([chunk(content="x"), chunk(content="", finish_reason="stop", **extra)])
    )

    events, error = await collect(gateway_client)

    assert error is None
    assert only(events, Usage) == [Usage(5, 2, None, None, Decimal("0.00123"))]


@pytest.mark.asyncio
async def test_usage_arriving_in_pieces_is_merged_into_one_event(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient
) -> None:
    fake_gateway.enqueue(
        Stream(
            [
                chunk(content="x"),
                chunk(content="", finish_reason="stop", usage={"prompt_tokens": 9}),
                SSE(
                    json.dumps(
                        {
                            "choices": [],
                            "usage": {
                                "completion_tokens": 4,
                                "completion_tokens_details": {"reasoning_tokens": 3},
                                "prompt_tokens_details": {"cached_tokens": 8},
                            },
                        }
                    )
                ),
                SSE(json.dumps({"choices": [], "meta": {"usage": {"usd_spent": "0.5"}}})),
            ]
        )
    )

    events, error = await collect(gateway_client)

    assert error is None
    assert events[-2:] == [Usage(9, 4, 3, 8, Decimal("0.5")), Finished("stop")]


@pytest.mark.asyncio
async def test_refusal_and_citations_become_events(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient
) -> None:
    citation = {
        "type": "url_citation",
        "url_citation": {
            "url": "https://example.org",
            "title": "Ex",
            "start_index": 0,
            "end_index": 4,
        },
    }
    fake_gateway.enqueue(
        Stream(
            [
                chunk(content="Text", delta={"annotations": [citation]}),
                chunk(content="", delta={"annotations": [citation], "refusal": "I can't help."}),
                chunk(content="", finish_reason="stop"),
            ]
        )
    )

    events, error = await collect(gateway_client)

    assert error is None
    assert only(events, Citation) == [Citation("https://example.org", "Ex", 0, 4)]
    assert only(events, Refusal) == [Refusal("I can't help.")]


@pytest.mark.asyncio
async def test_json_reply_to_a_stream_request_is_still_understood(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient
) -> None:
    fake_gateway.enqueue(completion_reply("Whole answer", finish_reason="end_turn"))

    events, error = await collect(gateway_client)

    assert error is None
    assert text_of(events) == "Whole answer"
    assert events[-1] == Finished("stop")
