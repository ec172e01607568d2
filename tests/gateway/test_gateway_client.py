"""The client: connections, HTTP errors, the retry loop, request headers, plain completions."""

from __future__ import annotations

import asyncio
import email.utils
import socket
import time
from typing import Any

import pytest

from conversations.gateway.client import UpstreamClient
from conversations.gateway.errors import (
    AuthError,
    BadRequest,
    ConnectionFailed,
    CreditsError,
    GatewayError,
    ModelUnavailable,
    RateLimited,
    ServerError,
    StreamBroken,
    Timeout,
)
from conversations.gateway.events import (
    ContentDelta,
    Finished,
    Retrying,
)
from tests.support.gateway import (
    API_KEY,
    MODEL,
    PAYLOAD,
    ClientFactory,
    collect,
    only,
    text_of,
)
from tests.support.upstream_server import (
    Drop,
    ErrorReply,
    FakeUpstream,
    Gate,
    Hold,
    Pause,
    Refuse,
    Stream,
    completion_reply,
    gateway_chunks,
)


@pytest.mark.asyncio
async def test_dropped_connection_keeps_deltas_then_raises_connection(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient
) -> None:
    first, second, *_ = gateway_chunks(["Hello", " there", " never"])
    fake_gateway.enqueue(Stream([first, second, Drop()]), Stream(list(gateway_chunks(["again"]))))

    events, error = await collect(gateway_client)

    assert events == [ContentDelta("Hello"), ContentDelta(" there")]
    assert error is not None
    assert isinstance(error, ConnectionFailed)
    assert "connection to the model was lost" in error.message.lower()
    assert len(fake_gateway.requests) == 1


@pytest.mark.asyncio
async def test_drop_after_the_finish_reason_still_completes(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient
) -> None:
    fake_gateway.enqueue(Stream([*gateway_chunks(["Done"], trailing_finish_reason=None), Drop()]))

    events, error = await collect(gateway_client)

    assert error is None
    assert events[-1] == Finished("stop")


@pytest.mark.asyncio
async def test_stall_mid_stream_times_out_within_the_configured_timeout(
    fake_gateway: FakeUpstream, gateway_client_factory: ClientFactory
) -> None:
    gate = Gate()
    first, *_ = gateway_chunks(["Start"])
    fake_gateway.enqueue(Stream([first, Hold(gate), *gateway_chunks([" never"])]))
    client = gateway_client_factory(timeout=0.5)

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
    gateway_client_factory: ClientFactory, backoff_sleeps: list[float]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = gateway_client_factory(base_url=f"http://127.0.0.1:{port}/v1")

    started = time.monotonic()
    events, error = await collect(client)

    assert time.monotonic() - started < 3.0
    assert error is not None
    assert isinstance(error, ConnectionFailed)
    assert "127.0.0.1" in error.message
    assert len(backoff_sleeps) == 2  # connect errors are retried: three tries in all
    assert [type(e) for e in events] == [Retrying, Retrying]


@pytest.mark.asyncio
async def test_connection_closed_without_response_is_retried(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient
) -> None:
    fake_gateway.enqueue(Refuse())

    events, error = await collect(gateway_client)

    assert error is None
    retry = events[0]
    assert isinstance(retry, Retrying)
    assert (retry.attempt, retry.reason) == (1, "connection problem")
    assert text_of(events) == "Hello from the fake upstream."
    assert len(fake_gateway.requests) == 2


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
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient, body: Any, headers: dict[str, str]
) -> None:
    fake_gateway.enqueue(ErrorReply(401, body, headers))

    _, error = await collect(gateway_client)

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
    fake_gateway: FakeUpstream,
    gateway_client: UpstreamClient,
    backoff_sleeps: list[float],
    status: int,
    message: str,
    kind: type[GatewayError],
    expected: str,
) -> None:
    fake_gateway.enqueue(ErrorReply(status, {"message": message, "statusCode": status}))

    events, error = await collect(gateway_client)

    assert error is not None
    assert type(error) is kind
    assert error.message.startswith(expected)
    assert message in error.message
    assert error.retryable is False
    assert events == []
    assert backoff_sleeps == []
    assert len(fake_gateway.requests) == 1


@pytest.mark.asyncio
async def test_retired_model_in_a_400_message_reads_as_model_unavailable(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient
) -> None:
    fake_gateway.enqueue(
        ErrorReply(400, {"error": {"message": "This model has been retired.", "type": "x"}})
    )

    _, error = await collect(gateway_client)

    assert error is not None
    assert isinstance(error, ModelUnavailable)
    assert error.message == (
        f"The model '{MODEL}' is not available (it may have been retired): "
        "This model has been retired."
    )


@pytest.mark.asyncio
async def test_validation_details_are_included(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient
) -> None:
    fake_gateway.enqueue(
        ErrorReply(
            400,
            {
                "message": "Body validation error!",
                "statusCode": 400,
                "details": ["temperature must be at most 1"],
            },
        )
    )

    _, error = await collect(gateway_client)

    assert error is not None
    assert isinstance(error, BadRequest)
    assert "Body validation error!" in error.message
    assert "temperature must be at most 1" in error.message


@pytest.mark.asyncio
@pytest.mark.parametrize("retry_after", ["7", "date"])
async def test_429_honours_retry_after(
    fake_gateway: FakeUpstream,
    gateway_client: UpstreamClient,
    backoff_sleeps: list[float],
    retry_after: str,
) -> None:
    header = email.utils.formatdate(time.time() + 7, usegmt=True) if retry_after == "date" else "7"
    fake_gateway.enqueue(
        ErrorReply(
            429, {"message": "Too many requests", "statusCode": 429}, {"Retry-After": header}
        )
    )

    events, error = await collect(gateway_client)

    assert error is None
    assert len(backoff_sleeps) == 1
    assert backoff_sleeps[0] == pytest.approx(7.0, abs=1.5)
    assert only(events, Retrying) == [Retrying(1, backoff_sleeps[0], "rate limited (429)")]
    assert text_of(events) == "Hello from the fake upstream."
    assert len(fake_gateway.requests) == 2


@pytest.mark.asyncio
async def test_retry_after_too_long_to_wait_is_reported_not_slept(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient, backoff_sleeps: list[float]
) -> None:
    fake_gateway.enqueue(
        ErrorReply(429, {"message": "Hourly limit", "statusCode": 429}, {"Retry-After": "3600"})
    )

    _, error = await collect(gateway_client)

    assert error is not None
    assert isinstance(error, RateLimited)
    assert error.retry_after == 3600
    assert "Hourly limit" in error.message
    assert "3600 s" in error.message
    assert backoff_sleeps == []
    assert len(fake_gateway.requests) == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("status", [500, 502, 503, 504, 529])
async def test_server_errors_are_retried_up_to_three_tries(
    fake_gateway: FakeUpstream,
    gateway_client: UpstreamClient,
    backoff_sleeps: list[float],
    status: int,
) -> None:
    reply = ErrorReply(status, {"type": "error", "error": {"type": "api_error", "message": "Boom"}})
    fake_gateway.enqueue(reply, reply, reply, Stream(list(gateway_chunks(["never"]))))

    events, error = await collect(gateway_client)

    assert error is not None
    assert isinstance(error, ServerError)
    assert error.status == status
    assert "Boom" in error.message
    assert "after 3 attempts" in error.message
    assert len(fake_gateway.requests) == 3
    assert len(backoff_sleeps) == 2
    assert all(0.0 <= delay <= 20.0 for delay in backoff_sleeps)
    assert [e.attempt for e in only(events, Retrying)] == [1, 2]


@pytest.mark.asyncio
async def test_server_error_then_success_recovers(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient
) -> None:
    fake_gateway.enqueue(ErrorReply(503, "Service Unavailable"), ErrorReply(529, "Overloaded"))

    events, error = await collect(gateway_client)

    assert error is None
    assert [e.reason for e in only(events, Retrying)] == ["server error (503)", "overloaded (529)"]
    assert text_of(events) == "Hello from the fake upstream."
    assert len(fake_gateway.requests) == 3


@pytest.mark.asyncio
async def test_backoff_grows_exponentially_with_full_jitter(
    fake_gateway: FakeUpstream, gateway_client_factory: ClientFactory, backoff_sleeps: list[float]
) -> None:
    client = gateway_client_factory(max_attempts=4, backoff_base=1.0, backoff_max=3.0)
    fake_gateway.enqueue(*[ErrorReply(502, "Bad gateway")] * 4)

    await collect(client)

    assert len(backoff_sleeps) == 3
    assert backoff_sleeps[0] <= 1.0
    assert backoff_sleeps[1] <= 2.0
    assert backoff_sleeps[2] <= 3.0


@pytest.mark.asyncio
async def test_no_retry_once_a_token_was_yielded(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient, backoff_sleeps: list[float]
) -> None:
    first, *_ = gateway_chunks(["Already shown"])
    fake_gateway.enqueue(Stream([first, Drop()]), Stream(list(gateway_chunks(["duplicate"]))))

    events, error = await collect(gateway_client)

    assert events == [ContentDelta("Already shown")]
    assert error is not None
    assert isinstance(error, ConnectionFailed)
    assert backoff_sleeps == []
    assert len(fake_gateway.requests) == 1


@pytest.mark.asyncio
async def test_request_line_headers_and_body(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient
) -> None:
    await collect(gateway_client, request_id="0b7c.a:x-1_2")

    (request,) = fake_gateway.requests
    assert request.method == "POST"
    assert request.path == "/v1/chat/completions"
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.headers["Accept"] == "text/event-stream"
    assert request.headers["X-Client-Request-Id"] == "0b7c.a:x-1_2"
    assert request.json == PAYLOAD


@pytest.mark.asyncio
@pytest.mark.parametrize("request_id", ["", "has space", "x" * 129, "ünïcode", "a/b"])
async def test_invalid_request_id_is_omitted(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient, request_id: str
) -> None:
    events, error = await collect(gateway_client, request_id=request_id)

    assert error is None
    assert events
    assert "x-client-request-id" not in fake_gateway.requests[0].headers


@pytest.mark.asyncio
async def test_base_url_trailing_slash_is_tolerated(
    fake_gateway: FakeUpstream, gateway_client_factory: ClientFactory
) -> None:
    client = gateway_client_factory(base_url=fake_gateway.base_url + "/")

    await collect(client)

    assert fake_gateway.requests[0].path == "/v1/chat/completions"


@pytest.mark.asyncio
async def test_complete_returns_the_message_text_without_streaming(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient
) -> None:
    fake_gateway.enqueue(completion_reply("Trip to Lisbon"))

    title = await gateway_client.complete(PAYLOAD, request_id="t-1")

    assert title == "Trip to Lisbon"
    (request,) = fake_gateway.requests
    assert request.json["stream"] is False
    assert "stream_options" not in request.json
    assert request.headers["Accept"] == "application/json"
    assert request.headers["X-Client-Request-Id"] == "t-1"


@pytest.mark.asyncio
async def test_complete_retries_and_maps_errors_like_streaming(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient, backoff_sleeps: list[float]
) -> None:
    fake_gateway.enqueue(ErrorReply(503, "busy"), ErrorReply(403, {"message": "No credits left"}))

    with pytest.raises(GatewayError) as caught:
        await gateway_client.complete(PAYLOAD)

    assert isinstance(caught.value, CreditsError)
    assert "No credits left" in caught.value.message
    assert len(backoff_sleeps) == 1
    assert len(fake_gateway.requests) == 2


@pytest.mark.asyncio
async def test_complete_accepts_a_streamed_answer(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient
) -> None:
    fake_gateway.enqueue(Stream(list(gateway_chunks(["Streamed", " title"])), unasked=True))

    title = await gateway_client.complete(PAYLOAD)

    assert title == "Streamed title"


@pytest.mark.asyncio
async def test_complete_raises_an_error_carried_in_a_200_body(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient
) -> None:
    fake_gateway.enqueue(ErrorReply(200, {"error": {"message": "Generation failed", "code": 400}}))

    with pytest.raises(GatewayError) as caught:
        await gateway_client.complete(PAYLOAD)

    assert isinstance(caught.value, StreamBroken)
    assert "Generation failed" in caught.value.message


@pytest.mark.asyncio
async def test_many_concurrent_streams_share_one_client(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient
) -> None:
    count = 100
    for _ in range(count):
        pieces = [f"w{i} " for i in range(20)]
        steps: list[Any] = []
        for event in gateway_chunks(pieces):
            steps += [event, Pause(0.002)]
        fake_gateway.enqueue(Stream(steps))

    results = await asyncio.gather(*(collect(gateway_client) for _ in range(count)))

    expected = "".join(f"w{i} " for i in range(20))
    assert all(error is None for _, error in results)
    assert all(text_of(events) == expected for events, _ in results)
    assert len(fake_gateway.requests) == count
