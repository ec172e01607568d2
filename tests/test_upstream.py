"""The upstream client against recorded byte streams served by a real loopback server."""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conversations.gateway.client import UpstreamClient
from conversations.gateway.content import RequestStyle
from conversations.gateway.errors import (
    AuthError,
    BadRequest,
    ConnectionFailed,
    CreditsError,
    GatewayError,
    ModelUnavailable,
    ProtocolError,
    RateLimited,
    ServerError,
    StreamBroken,
    Timeout,
)
from conversations.gateway.events import (
    Citation,
    ContentDelta,
    Event,
    Finished,
    ReasoningDelta,
    Refusal,
    Retrying,
    Usage,
)
from conversations.gateway.payload import TurnOptions, build_payload
from tests.upstream_server import (
    DEFAULT_USAGE,
    Drop,
    ErrorReply,
    FakeUpstream,
    Gate,
    Hold,
    Pause,
    Raw,
    Refuse,
    Stream,
    completion_reply,
    gateway_chunks,
    openai_chunks,
)
from tests.upstream_server import Event as SSE

API_KEY = "sk-aiml-test-0123456789abcdef"
MODEL = "anthropic/claude-sonnet-4.5"
PAYLOAD = build_payload(
    options=TurnOptions(model=MODEL, max_tokens=256),
    messages=[{"role": "user", "content": "Hi"}],
)
ClientFactory = Callable[..., UpstreamClient]


# -- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def upstream(server: FakeUpstream) -> FakeUpstream:
    server.reset()
    return server


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest_asyncio.fixture
async def make_client(upstream: FakeUpstream, sleeps: list[float]) -> AsyncIterator[ClientFactory]:
    clients: list[UpstreamClient] = []

    async def record_sleep(delay: float) -> None:
        sleeps.append(delay)

    def factory(**overrides: Any) -> UpstreamClient:
        options: dict[str, Any] = {
            "base_url": upstream.base_url,
            "api_key": API_KEY,
            "timeout": 5.0,
            "connect_timeout": 2.0,
            "sleep": record_sleep,
        }
        options.update(overrides)
        client = UpstreamClient(**options)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.aclose()


@pytest_asyncio.fixture
async def client(make_client: ClientFactory) -> UpstreamClient:
    return make_client()


async def collect(
    client: UpstreamClient, payload: dict[str, Any] = PAYLOAD, **kwargs: Any
) -> tuple[list[Event], GatewayError | None]:
    """Every event yielded before the stream ended, and the error that ended it, if any."""
    events: list[Event] = []
    try:
        async for event in client.stream_chat(payload, **kwargs):
            events.append(event)
    except GatewayError as exc:
        return events, exc
    return events, None


def text_of(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, ContentDelta))


def reasoning_of(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, ReasoningDelta))


def only(events: list[Event], kind: type[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def chunk(
    *,
    content: str | None = None,
    finish_reason: str | None = None,
    delta: dict[str, Any] | None = None,
    **extra: Any,
) -> SSE:
    """A hand-written gateway-style chunk for cases gateway_chunks does not cover."""
    choice: dict[str, Any] = {"index": 0}
    if delta is not None or content is not None:
        choice["delta"] = {
            "role": "assistant",
            "content": content,
            "refusal": None,
            **(delta or {}),
        }
    if finish_reason is not None:
        choice["finish_reason"] = finish_reason
    body: dict[str, Any] = {"id": "", "object": "chat.completion.chunk", "choices": [choice]}
    body.update(extra)
    return SSE(json.dumps(body))


# -- the gateway's documented stream ----------------------------------------------------------


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
    upstream: FakeUpstream, client: UpstreamClient
) -> None:
    upstream.enqueue(Stream(list(gateway_chunks(["Hel", "lo ", "wörld"]))))

    events, error = await collect(client)

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
    upstream: FakeUpstream, client: UpstreamClient
) -> None:
    steps = [*openai_chunks(["One", " two"]), chunk(content="after DONE")]
    upstream.enqueue(Stream(steps))

    events, error = await collect(client)

    assert error is None
    assert text_of(events) == "One two"
    assert events[-2:] == [Usage(12, 7, 0, 0, None), Finished("stop")]


@pytest.mark.asyncio
async def test_comment_keepalive_lines_are_ignored(
    upstream: FakeUpstream, client: UpstreamClient
) -> None:
    first, *rest = gateway_chunks(["A", "B"])
    upstream.enqueue(
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

    events, error = await collect(client)

    assert error is None
    assert text_of(events) == "AB"
    assert events[-1] == Finished("stop")


@pytest.mark.asyncio
async def test_event_split_across_network_reads_is_reassembled(
    upstream: FakeUpstream, client: UpstreamClient
) -> None:
    first, *rest = gateway_chunks(["naïve café ☕"])
    frame = first.frame()
    cut = frame.index("☕".encode()) + 1  # inside the multi-byte character
    upstream.enqueue(
        Stream(
            [Raw(frame[:10]), Pause(0.05), Raw(frame[10:cut]), Pause(0.05), Raw(frame[cut:]), *rest]
        )
    )

    events, error = await collect(client)

    assert error is None
    assert text_of(events) == "naïve café ☕"


@pytest.mark.asyncio
async def test_chunks_without_delta_and_duplicate_finish_give_one_finished(
    upstream: FakeUpstream, client: UpstreamClient
) -> None:
    upstream.enqueue(
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

    events, error = await collect(client)

    assert error is None
    assert text_of(events) == "cut off"
    assert only(events, Finished) == [Finished("length")]
    assert only(events, Usage) == []


@pytest.mark.asyncio
async def test_end_of_body_without_done_or_finish_reason_still_ends(
    upstream: FakeUpstream, client: UpstreamClient
) -> None:
    upstream.enqueue(Stream([chunk(content="partial")]))

    events, error = await collect(client)

    assert error is None
    assert events == [ContentDelta("partial"), Finished("unknown")]


@pytest.mark.asyncio
async def test_empty_stream_is_a_protocol_error(
    upstream: FakeUpstream, client: UpstreamClient
) -> None:
    upstream.enqueue(Stream([Raw(b": nothing to see\n\n")]))

    events, error = await collect(client)

    assert events == []
    assert error is not None
    assert isinstance(error, ProtocolError)


@pytest.mark.asyncio
@pytest.mark.parametrize("key", ["reasoning_content", "reasoning"])
async def test_reasoning_deltas_under_either_key(
    upstream: FakeUpstream, client: UpstreamClient, key: str
) -> None:
    upstream.enqueue(
        Stream(
            [
                chunk(delta={key: "Let me think. "}),
                chunk(delta={key: "Done."}),
                chunk(content="Answer", finish_reason="stop"),
            ]
        )
    )

    events, error = await collect(client)

    assert error is None
    assert reasoning_of(events) == "Let me think. Done."
    assert text_of(events) == "Answer"
    assert events.index(ReasoningDelta("Done.")) < events.index(ContentDelta("Answer"))


@pytest.mark.asyncio
async def test_gateway_reasoning_pieces_come_before_content(
    upstream: FakeUpstream, client: UpstreamClient
) -> None:
    upstream.enqueue(Stream(list(gateway_chunks(["Yes."], reasoning_pieces=["Hmm", "…"]))))

    events, error = await collect(client)

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
    upstream: FakeUpstream, client: UpstreamClient, sent: str, expected: str
) -> None:
    upstream.enqueue(Stream(list(gateway_chunks(["x"], finish_reason=sent))))

    events, error = await collect(client)

    assert error is None
    assert only(events, Finished) == [Finished(expected)]


@pytest.mark.asyncio
async def test_finish_reason_error_raises_stream_error_after_the_text(
    upstream: FakeUpstream, client: UpstreamClient
) -> None:
    upstream.enqueue(
        Stream(
            [
                chunk(content="Partial answer"),
                chunk(content="", finish_reason="error", error={"message": "Upstream exploded"}),
            ]
        )
    )

    events, error = await collect(client)

    assert text_of(events) == "Partial answer"
    assert error is not None
    assert isinstance(error, StreamBroken)
    assert "Upstream exploded" in error.message
    assert len(upstream.requests) == 1


@pytest.mark.asyncio
async def test_bare_finish_reason_error_still_raises(
    upstream: FakeUpstream, client: UpstreamClient
) -> None:
    upstream.enqueue(Stream([chunk(content="x"), chunk(finish_reason="error")]))

    events, error = await collect(client)

    assert error is not None
    assert isinstance(error, StreamBroken)
    assert only(events, Finished) == []


@pytest.mark.asyncio
async def test_top_level_error_mid_stream_keeps_text_and_is_not_retried(
    upstream: FakeUpstream, client: UpstreamClient
) -> None:
    error_line = {"error": {"code": 502, "message": "Provider returned error"}}
    upstream.enqueue(
        Stream([chunk(content="Some words"), SSE(json.dumps(error_line))]),
        Stream(list(gateway_chunks(["should not be requested"]))),
    )

    events, error = await collect(client)

    assert text_of(events) == "Some words"
    assert error is not None
    assert isinstance(error, StreamBroken)
    assert "Provider returned error" in error.message
    assert len(upstream.requests) == 1


@pytest.mark.asyncio
async def test_overloaded_error_before_any_token_is_retried(
    upstream: FakeUpstream, client: UpstreamClient, sleeps: list[float]
) -> None:
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    upstream.enqueue(Stream([SSE(json.dumps(overloaded))]), Stream(list(gateway_chunks(["ok"]))))

    events, error = await collect(client)

    assert error is None
    assert text_of(events) == "ok"
    assert len(upstream.requests) == 2
    assert len(only(events, Retrying)) == 1
    assert len(sleeps) == 1


@pytest.mark.asyncio
async def test_malformed_json_line_is_a_protocol_error(
    upstream: FakeUpstream, client: UpstreamClient
) -> None:
    upstream.enqueue(Stream([chunk(content="fine"), Raw(b'data: {"choices": [\n\n')]))

    events, error = await collect(client)

    assert text_of(events) == "fine"
    assert error is not None
    assert isinstance(error, ProtocolError)


@pytest.mark.asyncio
@pytest.mark.parametrize("where", ["chunk_meta", "usage_meta"])
async def test_cost_is_read_from_meta_usage_usd_spent(
    upstream: FakeUpstream, client: UpstreamClient, where: str
) -> None:
    meta = {"usage": {"credits_used": 2520, "usd_spent": 0.00123}}
    usage: dict[str, Any] = {"prompt_tokens": 5, "completion_tokens": 2}
    extra: dict[str, Any] = {"usage": usage}
    if where == "chunk_meta":
        extra["meta"] = meta
    else:
        usage["meta"] = meta
    upstream.enqueue(Stream([chunk(content="x"), chunk(content="", finish_reason="stop", **extra)]))

    events, error = await collect(client)

    assert error is None
    assert only(events, Usage) == [Usage(5, 2, None, None, Decimal("0.00123"))]


@pytest.mark.asyncio
async def test_usage_arriving_in_pieces_is_merged_into_one_event(
    upstream: FakeUpstream, client: UpstreamClient
) -> None:
    upstream.enqueue(
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

    events, error = await collect(client)

    assert error is None
    assert events[-2:] == [Usage(9, 4, 3, 8, Decimal("0.5")), Finished("stop")]


@pytest.mark.asyncio
async def test_refusal_and_citations_become_events(
    upstream: FakeUpstream, client: UpstreamClient
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
    upstream.enqueue(
        Stream(
            [
                chunk(content="Text", delta={"annotations": [citation]}),
                chunk(content="", delta={"annotations": [citation], "refusal": "I can't help."}),
                chunk(content="", finish_reason="stop"),
            ]
        )
    )

    events, error = await collect(client)

    assert error is None
    assert only(events, Citation) == [Citation("https://example.org", "Ex", 0, 4)]
    assert only(events, Refusal) == [Refusal("I can't help.")]


@pytest.mark.asyncio
async def test_json_reply_to_a_stream_request_is_still_understood(
    upstream: FakeUpstream, client: UpstreamClient
) -> None:
    upstream.enqueue(completion_reply("Whole answer", finish_reason="end_turn"))

    events, error = await collect(client)

    assert error is None
    assert text_of(events) == "Whole answer"
    assert events[-1] == Finished("stop")


# -- connection failures ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_dropped_connection_keeps_deltas_then_raises_connection(
    upstream: FakeUpstream, client: UpstreamClient
) -> None:
    first, second, *_ = gateway_chunks(["Hello", " there", " never"])
    upstream.enqueue(Stream([first, second, Drop()]), Stream(list(gateway_chunks(["again"]))))

    events, error = await collect(client)

    assert events == [ContentDelta("Hello"), ContentDelta(" there")]
    assert error is not None
    assert isinstance(error, ConnectionFailed)
    assert "connection to the model was lost" in error.message.lower()
    assert len(upstream.requests) == 1


@pytest.mark.asyncio
async def test_drop_after_the_finish_reason_still_completes(
    upstream: FakeUpstream, client: UpstreamClient
) -> None:
    upstream.enqueue(Stream([*gateway_chunks(["Done"], trailing_finish_reason=None), Drop()]))

    events, error = await collect(client)

    assert error is None
    assert events[-1] == Finished("stop")


@pytest.mark.asyncio
async def test_stall_mid_stream_times_out_within_the_configured_timeout(
    upstream: FakeUpstream, make_client: ClientFactory
) -> None:
    gate = Gate()
    first, *_ = gateway_chunks(["Start"])
    upstream.enqueue(Stream([first, Hold(gate), *gateway_chunks([" never"])]))
    client = make_client(timeout=0.5)

    started = time.monotonic()
    try:
        events, error = await collect(client)
    finally:
        gate.release()
    elapsed = time.monotonic() - started

    assert events == [ContentDelta("Start")]
    assert error is not None
    assert isinstance(error, Timeout)
    assert "longer than 0.5 s" in error.message
    assert elapsed < 3.0


@pytest.mark.asyncio
async def test_refused_port_fails_fast_with_a_connection_error(
    make_client: ClientFactory, sleeps: list[float]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = make_client(base_url=f"http://127.0.0.1:{port}/v1")

    started = time.monotonic()
    events, error = await collect(client)

    assert time.monotonic() - started < 3.0
    assert error is not None
    assert isinstance(error, ConnectionFailed)
    assert "127.0.0.1" in error.message
    assert len(sleeps) == 2  # connect errors are retried: three tries in all
    assert [type(e) for e in events] == [Retrying, Retrying]


@pytest.mark.asyncio
async def test_connection_closed_without_response_is_retried(
    upstream: FakeUpstream, client: UpstreamClient
) -> None:
    upstream.enqueue(Refuse())

    events, error = await collect(client)

    assert error is None
    retry = events[0]
    assert isinstance(retry, Retrying)
    assert (retry.attempt, retry.reason) == (1, "connection problem")
    assert text_of(events) == "Hello from the fake upstream."
    assert len(upstream.requests) == 2


# -- HTTP errors and retries ------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (
            {
                "message": "Invalid API key",
                "path": "/v1/chat/completions",
                "requestId": "r1",
                "statusCode": "401",
                "timestamp": "2026-02-01T00:00:00Z",
            },
            {},
        ),
        ({"error": {"message": "Invalid API key", "type": "auth", "code": None}}, {}),
        (
            {
                "type": "error",
                "error": {"type": "authentication_error", "message": "Invalid API key"},
            },
            {},
        ),
        ("Invalid API key", {"Content-Type": "text/plain"}),
    ],
    ids=["aiml", "openai", "anthropic", "plain-text"],
)
async def test_every_error_body_shape_surfaces_the_gateway_message(
    upstream: FakeUpstream, client: UpstreamClient, body: Any, headers: dict[str, str]
) -> None:
    upstream.enqueue(ErrorReply(401, body, headers))

    _, error = await collect(client)

    assert error is not None
    assert isinstance(error, AuthError)
    assert error.message == "The API key was rejected (401): Invalid API key"
    assert error.status == 401


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("status", "message", "kind", "expected"),
    [
        (
            400,
            "Body validation error!",
            BadRequest,
            "The model rejected the request (400)",
        ),
        (401, "Invalid key", AuthError, "The API key was rejected (401)"),
        (403, "Not enough credits", CreditsError, "The account is out of credits (403)"),
        (
            404,
            "Model not found",
            ModelUnavailable,
            f"The model '{MODEL}' is not available",
        ),
    ],
)
async def test_client_errors_are_not_retried(
    upstream: FakeUpstream,
    client: UpstreamClient,
    sleeps: list[float],
    status: int,
    message: str,
    kind: type[GatewayError],
    expected: str,
) -> None:
    upstream.enqueue(ErrorReply(status, {"message": message, "statusCode": status}))

    events, error = await collect(client)

    assert error is not None
    assert type(error) is kind
    assert error.message.startswith(expected)
    assert message in error.message
    assert error.retryable is False
    assert events == []
    assert sleeps == []
    assert len(upstream.requests) == 1


@pytest.mark.asyncio
async def test_retired_model_in_a_400_message_reads_as_model_unavailable(
    upstream: FakeUpstream, client: UpstreamClient
) -> None:
    upstream.enqueue(
        ErrorReply(400, {"error": {"message": "This model has been retired.", "type": "x"}})
    )

    _, error = await collect(client)

    assert error is not None
    assert isinstance(error, ModelUnavailable)
    assert error.message == (
        f"The model '{MODEL}' is not available (it may have been retired): "
        "This model has been retired."
    )


@pytest.mark.asyncio
async def test_validation_details_are_included(
    upstream: FakeUpstream, client: UpstreamClient
) -> None:
    upstream.enqueue(
        ErrorReply(
            400,
            {
                "message": "Body validation error!",
                "statusCode": 400,
                "details": ["temperature must be at most 1"],
            },
        )
    )

    _, error = await collect(client)

    assert error is not None
    assert isinstance(error, BadRequest)
    assert "Body validation error!" in error.message
    assert "temperature must be at most 1" in error.message


@pytest.mark.asyncio
@pytest.mark.parametrize("retry_after", ["7", "date"])
async def test_429_honours_retry_after(
    upstream: FakeUpstream, client: UpstreamClient, sleeps: list[float], retry_after: str
) -> None:
    header = email.utils.formatdate(time.time() + 7, usegmt=True) if retry_after == "date" else "7"
    upstream.enqueue(
        ErrorReply(
            429, {"message": "Too many requests", "statusCode": 429}, {"Retry-After": header}
        )
    )

    events, error = await collect(client)

    assert error is None
    assert len(sleeps) == 1
    assert sleeps[0] == pytest.approx(7.0, abs=1.5)
    assert only(events, Retrying) == [Retrying(1, sleeps[0], "rate limited (429)")]
    assert text_of(events) == "Hello from the fake upstream."
    assert len(upstream.requests) == 2


@pytest.mark.asyncio
async def test_retry_after_too_long_to_wait_is_reported_not_slept(
    upstream: FakeUpstream, client: UpstreamClient, sleeps: list[float]
) -> None:
    upstream.enqueue(
        ErrorReply(429, {"message": "Hourly limit", "statusCode": 429}, {"Retry-After": "3600"})
    )

    _, error = await collect(client)

    assert error is not None
    assert isinstance(error, RateLimited)
    assert error.retry_after == 3600
    assert "Hourly limit" in error.message
    assert "3600 s" in error.message
    assert sleeps == []
    assert len(upstream.requests) == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("status", [500, 502, 503, 504, 529])
async def test_server_errors_are_retried_up_to_three_tries(
    upstream: FakeUpstream, client: UpstreamClient, sleeps: list[float], status: int
) -> None:
    reply = ErrorReply(status, {"type": "error", "error": {"type": "api_error", "message": "Boom"}})
    upstream.enqueue(reply, reply, reply, Stream(list(gateway_chunks(["never"]))))

    events, error = await collect(client)

    assert error is not None
    assert isinstance(error, ServerError)
    assert error.status == status
    assert "Boom" in error.message
    assert "after 3 attempts" in error.message
    assert len(upstream.requests) == 3
    assert len(sleeps) == 2
    assert all(0.0 <= delay <= 20.0 for delay in sleeps)
    assert [e.attempt for e in only(events, Retrying)] == [1, 2]


@pytest.mark.asyncio
async def test_server_error_then_success_recovers(
    upstream: FakeUpstream, client: UpstreamClient
) -> None:
    upstream.enqueue(ErrorReply(503, "Service Unavailable"), ErrorReply(529, "Overloaded"))

    events, error = await collect(client)

    assert error is None
    assert [e.reason for e in only(events, Retrying)] == ["server error (503)", "overloaded (529)"]
    assert text_of(events) == "Hello from the fake upstream."
    assert len(upstream.requests) == 3


@pytest.mark.asyncio
async def test_backoff_grows_exponentially_with_full_jitter(
    upstream: FakeUpstream, make_client: ClientFactory, sleeps: list[float]
) -> None:
    client = make_client(max_attempts=4, backoff_base=1.0, backoff_max=3.0)
    upstream.enqueue(*[ErrorReply(502, "Bad gateway")] * 4)

    await collect(client)

    assert len(sleeps) == 3
    assert sleeps[0] <= 1.0
    assert sleeps[1] <= 2.0
    assert sleeps[2] <= 3.0


@pytest.mark.asyncio
async def test_no_retry_once_a_token_was_yielded(
    upstream: FakeUpstream, client: UpstreamClient, sleeps: list[float]
) -> None:
    first, *_ = gateway_chunks(["Already shown"])
    upstream.enqueue(Stream([first, Drop()]), Stream(list(gateway_chunks(["duplicate"]))))

    events, error = await collect(client)

    assert events == [ContentDelta("Already shown")]
    assert error is not None
    assert isinstance(error, ConnectionFailed)
    assert sleeps == []
    assert len(upstream.requests) == 1


# -- the API key never leaks ------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "reply",
    [
        ErrorReply(401, {"message": f"Invalid key {API_KEY}", "statusCode": 401}),
        ErrorReply(400, {"error": {"message": f"Bad header: Bearer {API_KEY}", "type": "x"}}),
        ErrorReply(500, f"crash while handling key={API_KEY}"),
        Stream([SSE(json.dumps({"error": {"code": 400, "message": f"key {API_KEY} refused"}}))]),
    ],
    ids=["aiml-401", "openai-400", "text-500", "mid-stream"],
)
async def test_api_key_echoed_by_the_gateway_never_reaches_the_message(
    upstream: FakeUpstream,
    client: UpstreamClient,
    reply: ErrorReply | Stream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    upstream.enqueue(reply, reply, reply)
    caplog.set_level(logging.DEBUG)

    _, error = await collect(client, request_id="msg-1")

    assert error is not None
    assert API_KEY not in error.message
    assert API_KEY not in str(error)
    assert API_KEY not in repr(error)
    assert "***" in error.message
    assert API_KEY not in caplog.text


# -- requests ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_request_line_headers_and_body(
    upstream: FakeUpstream, client: UpstreamClient
) -> None:
    await collect(client, request_id="0b7c.a:x-1_2")

    (request,) = upstream.requests
    assert request.method == "POST"
    assert request.path == "/v1/chat/completions"
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.headers["Accept"] == "text/event-stream"
    assert request.headers["X-Client-Request-Id"] == "0b7c.a:x-1_2"
    assert request.json == PAYLOAD


@pytest.mark.asyncio
@pytest.mark.parametrize("request_id", ["", "has space", "x" * 129, "ünïcode", "a/b"])
async def test_invalid_request_id_is_omitted(
    upstream: FakeUpstream, client: UpstreamClient, request_id: str
) -> None:
    events, error = await collect(client, request_id=request_id)

    assert error is None
    assert events
    assert "x-client-request-id" not in upstream.requests[0].headers


@pytest.mark.asyncio
async def test_base_url_trailing_slash_is_tolerated(
    upstream: FakeUpstream, make_client: ClientFactory
) -> None:
    client = make_client(base_url=upstream.base_url + "/")

    await collect(client)

    assert upstream.requests[0].path == "/v1/chat/completions"


@pytest.mark.asyncio
async def test_complete_returns_the_message_text_without_streaming(
    upstream: FakeUpstream, client: UpstreamClient
) -> None:
    upstream.enqueue(completion_reply("Trip to Lisbon"))

    title = await client.complete(PAYLOAD, request_id="t-1")

    assert title == "Trip to Lisbon"
    (request,) = upstream.requests
    assert request.json["stream"] is False
    assert "stream_options" not in request.json
    assert request.headers["Accept"] == "application/json"
    assert request.headers["X-Client-Request-Id"] == "t-1"


@pytest.mark.asyncio
async def test_complete_retries_and_maps_errors_like_streaming(
    upstream: FakeUpstream, client: UpstreamClient, sleeps: list[float]
) -> None:
    upstream.enqueue(ErrorReply(503, "busy"), ErrorReply(403, {"message": "No credits left"}))

    with pytest.raises(GatewayError) as caught:
        await client.complete(PAYLOAD)

    assert isinstance(caught.value, CreditsError)
    assert "No credits left" in caught.value.message
    assert len(sleeps) == 1
    assert len(upstream.requests) == 2


@pytest.mark.asyncio
async def test_complete_accepts_a_streamed_answer(
    upstream: FakeUpstream, client: UpstreamClient
) -> None:
    upstream.enqueue(Stream(list(gateway_chunks(["Streamed", " title"])), unasked=True))

    title = await client.complete(PAYLOAD)

    assert title == "Streamed title"


@pytest.mark.asyncio
async def test_complete_raises_an_error_carried_in_a_200_body(
    upstream: FakeUpstream, client: UpstreamClient
) -> None:
    upstream.enqueue(ErrorReply(200, {"error": {"message": "Generation failed", "code": 400}}))

    with pytest.raises(GatewayError) as caught:
        await client.complete(PAYLOAD)

    assert isinstance(caught.value, StreamBroken)
    assert "Generation failed" in caught.value.message


@pytest.mark.asyncio
async def test_many_concurrent_streams_share_one_client(
    upstream: FakeUpstream, client: UpstreamClient
) -> None:
    count = 100
    for _ in range(count):
        pieces = [f"w{i} " for i in range(20)]
        steps: list[Any] = []
        for event in gateway_chunks(pieces):
            steps += [event, Pause(0.002)]
        upstream.enqueue(Stream(steps))

    results = await asyncio.gather(*(collect(client) for _ in range(count)))

    expected = "".join(f"w{i} " for i in range(20))
    assert all(error is None for _, error in results)
    assert all(text_of(events) == expected for events, _ in results)
    assert len(upstream.requests) == count


# -- property: any split of any text reassembles exactly --------------------------------------


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), text=st.text(min_size=1, max_size=120))
def test_any_text_split_anywhere_reassembles_exactly(
    server: FakeUpstream, data: st.DataObject, text: str
) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=8)))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    wire = b"".join(event.frame() for event in gateway_chunks(pieces))
    reads = sorted(set(data.draw(st.lists(st.integers(1, len(wire) - 1), max_size=12))))
    steps: list[Any] = []
    for start, end in zip([0, *reads], [*reads, len(wire)], strict=True):
        steps += [Raw(wire[start:end]), Pause(0.001)]
    server.reset()
    server.enqueue(Stream(steps))

    async def run() -> tuple[list[Event], GatewayError | None]:
        client = UpstreamClient(base_url=server.base_url, api_key=API_KEY, timeout=5.0)
        try:
            return await collect(client)
        finally:
            await client.aclose()

    events, error = asyncio.run(run())

    assert error is None
    # NUL is the one character PostgreSQL text cannot hold.
    assert text_of(events) == text.replace("\x00", "")
    assert events[-1] == Finished("stop")


# -- payload building -------------------------------------------------------------------------

MESSAGES = [
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi!"},
    {"role": "user", "content": "Tell me more"},
]


def test_openai_style_payload() -> None:
    options = TurnOptions(model=MODEL, max_tokens=1000, temperature=0.3, stop=("END",))

    payload = build_payload(options=options, messages=MESSAGES, system_prompt="Be brief.")

    assert payload == {
        "model": MODEL,
        "messages": [{"role": "system", "content": "Be brief."}, *MESSAGES],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 1000,
        "temperature": 0.3,
        "stop": ["END"],
    }


def test_openai_style_payload_with_reasoning_drops_temperature() -> None:
    options = TurnOptions(model=MODEL, max_tokens=1000, temperature=0.3, reasoning_effort="high")

    payload = build_payload(options=options, messages=MESSAGES, system_prompt="  ")

    assert payload == {
        "model": MODEL,
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 1000,
        "reasoning_effort": "high",
    }


def test_anthropic_style_payload() -> None:
    options = TurnOptions(model=MODEL, max_tokens=2048, top_p=0.9)

    payload = build_payload(
        options=options,
        messages=MESSAGES,
        system_prompt="Be brief.",
        style=RequestStyle.ANTHROPIC,
        stream=False,
    )

    assert payload == {
        "model": MODEL,
        "messages": MESSAGES,
        "system": "Be brief.",
        "stream": False,
        "max_tokens": 2048,
        "top_p": 0.9,
    }


@pytest.mark.parametrize(
    ("effort", "max_tokens", "budget", "expected_max"),
    [
        ("low", 512, 1024, 2048),
        ("medium", 4096, 4096, 5120),
        ("high", 1000, 16384, 17408),
        ("high", 32000, 16384, 32000),
        ("low", 1025, 1024, 1025),
    ],
)
def test_anthropic_thinking_budget_raises_max_tokens_when_needed(
    effort: str, max_tokens: int, budget: int, expected_max: int
) -> None:
    options = TurnOptions(
        model=MODEL, max_tokens=max_tokens, temperature=0.7, reasoning_effort=effort
    )

    payload = build_payload(options=options, messages=MESSAGES, style=RequestStyle.ANTHROPIC)

    assert payload["thinking"] == {"type": "enabled", "budget_tokens": budget}
    assert payload["max_tokens"] == expected_max
    assert payload["max_tokens"] > budget
    assert "temperature" not in payload
    assert "reasoning_effort" not in payload
    assert "system" not in payload


def test_temperature_and_top_p_together_are_refused() -> None:
    options = TurnOptions(model=MODEL, max_tokens=100, temperature=0.5, top_p=0.9)

    with pytest.raises(ValueError, match="temperature and top_p"):
        build_payload(options=options, messages=MESSAGES)


def test_unknown_reasoning_effort_is_refused() -> None:
    options = TurnOptions(model=MODEL, max_tokens=100, reasoning_effort="extreme")

    with pytest.raises(ValueError, match="reasoning_effort"):
        build_payload(options=options, messages=MESSAGES)


def test_build_payload_copies_messages() -> None:
    source = [{"role": "user", "content": "Hi", "id": "123"}]

    payload = build_payload(options=TurnOptions(model=MODEL, max_tokens=10), messages=source)

    assert payload["messages"] == [{"role": "user", "content": "Hi"}]
    payload["messages"][0]["content"] = "changed"
    assert source[0]["content"] == "Hi"
