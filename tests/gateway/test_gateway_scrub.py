"""The API key never leaves in an error, a log line or stored error text: not whole, not in
another case, not as any 12+ character piece of it."""

from __future__ import annotations

import json
import logging

import pytest

from conversations.gateway.classify import KEY_ECHO_CHARS, scrub
from conversations.gateway.client import UpstreamClient
from conversations.gateway.errors import GatewayError, UnreadableStream
from tests.support.gateway import API_KEY, collect
from tests.support.upstream_server import ErrorReply, FakeUpstream, Stream
from tests.support.upstream_server import Event as SSE

ECHOES = {
    "exact": API_KEY,
    "upper": API_KEY.upper(),
    "title": API_KEY.title(),
    "prefix-12": API_KEY[:12],
    "middle-15": API_KEY[5:20],
    "suffix-13": API_KEY[-13:].upper(),
}


def assert_no_key_piece(text: str) -> None:
    key, low = API_KEY.lower(), text.lower()
    pieces = {low[i : i + KEY_ECHO_CHARS] for i in range(len(low) - KEY_ECHO_CHARS + 1)}
    leaked = [piece for piece in pieces if piece in key]
    assert leaked == [], f"key piece(s) {leaked} in {text!r}"


def _replies(echo: str) -> dict[str, ErrorReply | Stream]:
    return {
        "aiml-401": ErrorReply(401, {"message": f"Invalid key {echo}", "statusCode": 401}),
        "openai-400": ErrorReply(400, {"error": {"message": f"bad key '{echo}'", "type": "x"}}),
        "text-500": ErrorReply(500, f"crash with key={echo}!"),
        "mid-stream": Stream([SSE(json.dumps({"error": {"code": 400, "message": f"{echo}"}}))]),
        "unreadable": Stream([SSE(json.dumps({"type": "start", "auth": f"Bearer-ish {echo}"}))]),
    }


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "shape", ["aiml-401", "openai-400", "text-500", "mid-stream", "unreadable"]
)
@pytest.mark.parametrize("echo", list(ECHOES.values()), ids=list(ECHOES))
async def test_no_piece_of_the_key_reaches_errors_or_logs(
    fake_gateway: FakeUpstream,
    gateway_client: UpstreamClient,
    caplog: pytest.LogCaptureFixture,
    shape: str,
    echo: str,
) -> None:
    reply = _replies(echo)[shape]
    fake_gateway.enqueue(reply, reply, reply)
    caplog.set_level(logging.DEBUG)

    _, error = await collect(gateway_client, request_id="msg-1")

    assert isinstance(error, GatewayError)
    for text in (error.message, str(error), repr(error), caplog.text):
        assert_no_key_piece(text)
    assert "***" in error.message or isinstance(error, UnreadableStream)
    if isinstance(error, UnreadableStream):
        assert_no_key_piece(error.raw_event)
        assert "***" in error.raw_event


def test_scrub_keeps_text_that_only_shares_short_pieces_with_the_key() -> None:
    text = "sk-aiml-tes is eleven characters; 0123456789 are ten"

    assert scrub(text, API_KEY) == text


def test_scrub_replaces_each_echo_once_and_keeps_the_rest() -> None:
    text = f"a {API_KEY.upper()} b {API_KEY[2:16]} c"

    assert scrub(text, API_KEY) == "a *** b *** c"


def test_scrub_keeps_indices_when_lower_casing_changes_length() -> None:
    text = f"\u0130 {API_KEY} \u0130"

    assert scrub(text, API_KEY) == "\u0130 *** \u0130"


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
    fake_gateway: FakeUpstream,
    gateway_client: UpstreamClient,
    reply: ErrorReply | Stream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_gateway.enqueue(reply, reply, reply)
    caplog.set_level(logging.DEBUG)

    _, error = await collect(gateway_client, request_id="msg-1")

    assert error is not None
    assert API_KEY not in error.message
    assert API_KEY not in str(error)
    assert API_KEY not in repr(error)
    assert "***" in error.message
    assert API_KEY not in caplog.text
