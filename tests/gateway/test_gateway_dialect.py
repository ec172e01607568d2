"""Dialect negotiation and the 400s that name something the app can act on, against a loopback
gateway that refuses request shapes in its own words."""

from __future__ import annotations

from typing import Any

import pytest

from conversations.gateway.client import UpstreamClient
from conversations.gateway.content import ImagePart, RequestStyle, TextPart
from conversations.gateway.dialect import Aspect, Dialect, InMemoryDialects
from conversations.gateway.errors import (
    BadRequest,
    ContextTooLong,
    ModelUnavailable,
    ShapeRejected,
)
from conversations.gateway.events import DialectSwitched, Finished, ParameterNotSent, Retrying
from conversations.gateway.payload import Message, TurnOptions, TurnRequest
from conversations.gateway.profiles import SONNET_4_5, adaptive_profile
from tests.support.gateway import ClientFactory, collect, only, text_of
from tests.support.upstream_server import ErrorReply, FakeUpstream, strict_gateway

MODEL = SONNET_4_5.id
OPENAI = Dialect.of(RequestStyle.OPENAI)
ANTHROPIC = Dialect.of(RequestStyle.ANTHROPIC)


def turn(dialect: Dialect = OPENAI, **options: Any) -> TurnRequest:
    values: dict[str, Any] = {"model": MODEL, "max_tokens": 4000}
    values.update(options)
    return TurnRequest(
        profile=SONNET_4_5,
        options=TurnOptions(**values),
        messages=[Message("user", [TextPart("What is this?"), ImagePart("image/png", b"\x89PNG")])],
        system_prompt="Be brief.",
        dialect=dialect,
    )


def shapes_sent(fake: FakeUpstream) -> list[set[str]]:
    sent = []
    for request in fake.requests:
        body = request.json
        shape = {
            k
            for k in ("system", "reasoning_effort", "thinking", "stop", "stop_sequences")
            if k in body
        }
        if body["messages"][0]["role"] == "system":
            shape.add("system-role")
        shape.update(p["type"] for p in body["messages"][-1]["content"] if p["type"] != "text")
        sent.append(shape)
    return sent


@pytest.mark.asyncio
async def test_system_role_refused_then_top_level_system_remembered_for_the_next_turn(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient
) -> None:
    fake_gateway.default_reply = strict_gateway({"system-role"})

    events, error = await collect(gateway_client, turn())

    assert error is None
    switched = only(events, DialectSwitched)
    assert switched == [DialectSwitched(MODEL, Aspect.SYSTEM, OPENAI.switched(Aspect.SYSTEM))]
    assert text_of(events) == "Hello from the fake upstream."
    assert events[-1] == Finished("stop")
    assert shapes_sent(fake_gateway) == [{"system-role", "image_url"}, {"system", "image_url"}]
    assert fake_gateway.requests[1].json["system"] == "Be brief."

    events, error = await collect(gateway_client, turn())

    assert error is None
    assert only(events, DialectSwitched) == []
    assert len(fake_gateway.requests) == 3
    assert "system" in fake_gateway.requests[2].json


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("start", "refused", "aspect", "now_sent"),
    [
        (OPENAI, "reasoning_effort", Aspect.REASONING, "thinking"),
        (ANTHROPIC, "thinking", Aspect.REASONING, "reasoning_effort"),
        (OPENAI, "stop", Aspect.STOP, "stop_sequences"),
        (ANTHROPIC, "stop_sequences", Aspect.STOP, "stop"),
        (OPENAI, "image_url", Aspect.CONTENT, "image"),
        (ANTHROPIC, "image", Aspect.CONTENT, "image_url"),
        (ANTHROPIC, "system", Aspect.SYSTEM, "system-role"),
    ],
)
async def test_each_refused_aspect_is_switched_once_and_only_that_aspect(
    fake_gateway: FakeUpstream,
    gateway_client: UpstreamClient,
    start: Dialect,
    refused: str,
    aspect: Aspect,
    now_sent: str,
) -> None:
    fake_gateway.default_reply = strict_gateway({refused})

    events, error = await collect(
        gateway_client, turn(start, reasoning_effort="low", stop=("END",))
    )

    assert error is None
    assert [e.aspect for e in only(events, DialectSwitched)] == [aspect]
    first, second = shapes_sent(fake_gateway)
    assert refused in first and refused not in second
    assert now_sent in second
    assert first ^ second == {refused, now_sent}


@pytest.mark.asyncio
async def test_a_gateway_that_refuses_both_spellings_fails_after_one_switch(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient, backoff_sleeps: list[float]
) -> None:
    fake_gateway.default_reply = strict_gateway({"stop", "stop_sequences"})

    events, error = await collect(gateway_client, turn(stop=("END",)))

    assert isinstance(error, ShapeRejected)
    assert error.aspect is Aspect.STOP
    assert len(fake_gateway.requests) == 2
    assert len(only(events, DialectSwitched)) == 1
    assert backoff_sleeps == []


@pytest.mark.asyncio
async def test_memory_shared_by_two_clients_sends_the_second_straight_to_the_working_shape(
    fake_gateway: FakeUpstream, gateway_client_factory: ClientFactory
) -> None:
    # Two processes share the app's store; here, one memory object stands for it.
    memory = InMemoryDialects()
    first = gateway_client_factory(dialects=memory)
    second = gateway_client_factory(dialects=memory)
    fake_gateway.default_reply = strict_gateway({"system-role"})

    await collect(first, turn())
    events, error = await collect(second, turn())

    assert error is None
    assert await memory.get(MODEL) == OPENAI.switched(Aspect.SYSTEM)
    assert only(events, DialectSwitched) == []
    assert len(fake_gateway.requests) == 3


@pytest.mark.asyncio
async def test_memory_is_not_taught_a_shape_the_gateway_also_refused(
    fake_gateway: FakeUpstream, gateway_client_factory: ClientFactory
) -> None:
    memory = InMemoryDialects()
    client = gateway_client_factory(dialects=memory)
    fake_gateway.default_reply = strict_gateway({"system-role", "system"})

    _, error = await collect(client, turn())

    assert isinstance(error, ShapeRejected)
    assert await memory.get(MODEL) is None


@pytest.mark.asyncio
async def test_parameters_the_model_does_not_take_are_reported_before_the_reply(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient
) -> None:
    adaptive = adaptive_profile(id="anthropic/claude-sonnet-5", display_name="Claude Sonnet 5")
    request = TurnRequest(
        profile=adaptive,
        options=TurnOptions(model=adaptive.id, max_tokens=100, temperature=0.3, top_p=0.5),
        messages=[{"role": "user", "content": "Hi"}],
    )

    events, error = await collect(gateway_client, request)

    assert error is None
    assert [type(e) for e in events[:2]] == [ParameterNotSent, ParameterNotSent]
    assert {e.parameter for e in only(events, ParameterNotSent)} == {"temperature", "top_p"}
    body = fake_gateway.requests[0].json
    assert "temperature" not in body and "top_p" not in body


@pytest.mark.asyncio
async def test_notices_do_not_stop_a_retry_before_the_first_token(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient
) -> None:
    fake_gateway.enqueue(ErrorReply(503, "busy"))
    request = turn(temperature=0.5, top_p=0.9)

    events, error = await collect(gateway_client, request)

    assert error is None
    assert [type(e) for e in events[:2]] == [ParameterNotSent, Retrying]
    assert text_of(events) == "Hello from the fake upstream."


@pytest.mark.asyncio
async def test_complete_negotiates_too(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient
) -> None:
    fake_gateway.default_reply = strict_gateway({"system-role"})

    title = await gateway_client.complete(turn())

    assert title == "A short title"
    assert [r.json["stream"] for r in fake_gateway.requests] == [False, False]
    assert "stream_options" not in fake_gateway.requests[1].json


# -- 400s that name something the app acts on -------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "message",
    [
        "`temperature` and `top_p` cannot both be specified for this model. Please use only one.",
        "`max_tokens` must be greater than `thinking.budget_tokens`.",
        "`temperature` may only be set to 1 when thinking is enabled.",
    ],
)
async def test_a_value_problem_is_not_mistaken_for_a_shape_problem(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient, message: str
) -> None:
    fake_gateway.enqueue(ErrorReply(400, {"type": "error", "error": {"message": message}}))

    events, error = await collect(gateway_client, turn())

    assert type(error) is BadRequest
    assert message in error.message
    assert only(events, DialectSwitched) == []
    assert len(fake_gateway.requests) == 1


@pytest.mark.asyncio
async def test_prompt_too_long_carries_both_numbers(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient
) -> None:
    fake_gateway.enqueue(
        ErrorReply(
            400,
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": "prompt is too long: 210345 tokens > 200000 maximum",
                },
            },
        )
    )

    _, error = await collect(gateway_client, turn())

    assert isinstance(error, ContextTooLong)
    assert (error.prompt_tokens, error.limit) == (210_345, 200_000)
    assert "210,345" in error.message and "200,000" in error.message
    assert len(fake_gateway.requests) == 1


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("status", "body"),
    [
        (404, {"message": "Model anthropic/claude-sonnet-4.5 not found", "statusCode": 404}),
        (400, {"error": {"message": "This model has been retired.", "type": "x"}}),
        (400, {"error": {"message": "Unknown model: anthropic/claude-sonnet-4.5"}}),
        (400, {"error": {"message": "no such model", "code": "model_not_found"}}),
    ],
)
async def test_retired_or_unknown_model_is_its_own_error_naming_the_model(
    fake_gateway: FakeUpstream, gateway_client: UpstreamClient, status: int, body: Any
) -> None:
    fake_gateway.enqueue(ErrorReply(status, body))

    _, error = await collect(gateway_client, turn())

    assert isinstance(error, ModelUnavailable)
    assert error.model == MODEL
    assert error.status == status
    assert len(fake_gateway.requests) == 1
