"""Every row of the upstream fault table, end to end through the chat socket.

Each test scripts the loopback gateway to misbehave one way and checks what the user sees (the
frames), what is saved (status, partial text, error), and how many requests reached the
gateway (no retry for 4xx, at most 3 tries for 429/5xx, never once text was shown).
"""

import asyncio
import html
import json
import re
import socket
import time
from dataclasses import dataclass
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from conversations.chat.services import conversation_create
from conversations.models import Conversation, Message
from conversations.realtime import runtime
from tests.conftest import TEST_API_KEY
from tests.support.sockets import (
    RECEIVE_TIMEOUT,
    SEND,
    SOCKET_TIMEOUT,
    communicator_for,
    drain_final_state,
    wait_generations,
)
from tests.support.upstream_server import (
    Drop,
    ErrorReply,
    Event,
    FakeUpstream,
    Gate,
    Hold,
    Pause,
    Raw,
    Refuse,
    Stream,
    gateway_chunks,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

FINAL = re.compile(r'data-role="assistant" data-status="(complete|error|stopped|interrupted)"')


@dataclass
class Turn:
    frames: str  # everything the socket received, unescaped: what the user read
    reply: Message
    elapsed: float
    requests: int

    @property
    def notices(self) -> list[str]:
        return re.findall(r"retrying in [^<]*", self.frames)


async def collect_until_final(comm: WebsocketCommunicator) -> str:
    received = []
    async with asyncio.timeout(RECEIVE_TIMEOUT):
        while True:
            frame = await comm.receive_from(timeout=RECEIVE_TIMEOUT)
            received.append(frame)
            if FINAL.search(frame):
                return html.unescape("".join(received))


async def run_turn(upstream: FakeUpstream, user: Any, *replies: Any) -> Turn:
    upstream.enqueue(*replies)
    conversation = await database_sync_to_async(conversation_create)(owner=user)
    comm = communicator_for(user, conversation)
    assert (await comm.connect(timeout=SOCKET_TIMEOUT))[0]
    started = time.monotonic()
    await comm.send_to(text_data=json.dumps(SEND))
    frames = await collect_until_final(comm)
    elapsed = time.monotonic() - started
    await wait_generations()
    # A first turn names the conversation in the background after its reply; a socket opened
    # later must not take that announcement for the answer to what it sends.
    await asyncio.gather(*runtime.current().background_tasks())
    await comm.disconnect()
    reply = await Message.objects.aget(conversation=conversation, role=Message.Role.ASSISTANT)
    return Turn(
        frames=frames, reply=reply, elapsed=elapsed, requests=len(upstream.streamed_requests)
    )


def aiml_error(status: int, message: str) -> dict[str, Any]:
    return {
        "message": message,
        "path": "/v1/chat/completions",
        "requestId": "req-123",
        "statusCode": status,
        "timestamp": "2026-11-25T12:00:00.000Z",
    }


def assert_failed_with_retry_offered(turn: Turn, *, text: str, error: str) -> None:
    assert turn.reply.status == Message.Status.ERROR
    assert turn.reply.content == text
    assert error in turn.reply.error
    assert error in turn.frames
    assert text in turn.frames
    assert ">Retry</button>" in turn.frames


# 401 / 403: no retry, the message names the problem, never the key.


async def test_401_bad_key_is_not_retried_and_never_shows_the_key(
    upstream: FakeUpstream, user: Any
) -> None:
    turn = await run_turn(
        upstream,
        user,
        ErrorReply(401, aiml_error(401, f"Invalid API key {TEST_API_KEY}")),
    )

    assert turn.requests == 1
    assert turn.reply.status == Message.Status.ERROR
    assert "The API key was rejected (401)" in turn.frames
    assert TEST_API_KEY not in turn.frames
    assert TEST_API_KEY not in turn.reply.error
    assert turn.notices == []


async def test_403_out_of_credits_is_not_retried(upstream: FakeUpstream, user: Any) -> None:
    turn = await run_turn(
        upstream, user, ErrorReply(403, aiml_error(403, "You have run out of credits"))
    )

    assert turn.requests == 1
    assert "The account is out of credits (403): You have run out of credits" in turn.frames
    assert turn.reply.status == Message.Status.ERROR


# 400: no retry, the gateway's own words, in all three body shapes.


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(aiml_error(400, "Body validation error!"), id="aiml"),
        pytest.param(
            {
                "error": {
                    "message": "Body validation error!",
                    "type": "invalid_request_error",
                    "code": None,
                }
            },
            id="openai",
        ),
        pytest.param(
            {
                "type": "error",
                "error": {"type": "invalid_request_error", "message": "Body validation error!"},
            },
            id="anthropic",
        ),
    ],
)
async def test_400_shows_the_gateways_message_without_retry(
    upstream: FakeUpstream, user: Any, body: dict[str, Any]
) -> None:
    turn = await run_turn(upstream, user, ErrorReply(400, body))

    assert turn.requests == 1
    assert "The model rejected the request (400): Body validation error!" in turn.frames
    assert turn.reply.status == Message.Status.ERROR
    assert turn.notices == []


# 429 / 5xx / 529 before any token: backoff, Retry-After, at most 3 tries, visible notice.


async def test_429_without_retry_after_is_retried_with_a_notice_then_succeeds(
    upstream: FakeUpstream, user: Any
) -> None:
    turn = await run_turn(
        upstream,
        user,
        ErrorReply(429, aiml_error(429, "Too many requests")),
        Stream(gateway_chunks(["Fine ", "now."])),
    )

    assert turn.requests == 2
    assert turn.notices and "retrying in 0 s (attempt 2)" in turn.notices[0]
    assert turn.reply.status == Message.Status.COMPLETE
    assert turn.reply.content == "Fine now."


async def test_429_honours_retry_after_and_says_how_long(upstream: FakeUpstream, user: Any) -> None:
    turn = await run_turn(
        upstream,
        user,
        ErrorReply(429, aiml_error(429, "Too many requests"), headers={"Retry-After": "1"}),
        Stream(gateway_chunks(["Waited."])),
    )

    assert turn.requests == 2
    assert "retrying in 1 s (attempt 2)" in turn.notices[0]
    assert turn.elapsed >= 1.0
    assert turn.reply.content == "Waited."


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 529])
async def test_persistent_retryable_status_gives_up_after_three_tries(
    upstream: FakeUpstream, user: Any, status: int
) -> None:
    failure = ErrorReply(status, aiml_error(status, "Something went wrong upstream"))
    turn = await run_turn(upstream, user, failure, failure, failure, failure)

    assert turn.requests == 3
    assert len(turn.notices) == 2
    assert turn.reply.status == Message.Status.ERROR
    assert f"({status})" in turn.reply.error
    assert "gave up after 3 attempts" in turn.frames
    assert turn.reply.content == ""


async def test_529_anthropic_overloaded_names_the_overload(
    upstream: FakeUpstream, user: Any
) -> None:
    overloaded = ErrorReply(
        529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    )
    turn = await run_turn(upstream, user, overloaded, Stream(gateway_chunks(["Back."])))

    assert "The model is busy (overloaded (529)); retrying in" in turn.frames
    assert turn.reply.status == Message.Status.COMPLETE


# Connection refused, DNS failure, TLS error, hang-up before any response: clear, no hang.


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        pytest.param(
            lambda up: f"http://127.0.0.1:{closed_port()}/v1",
            "Could not connect to the model service at 127.0.0.1",
            id="refused",
        ),
        pytest.param(
            lambda up: "http://gateway.invalid/v1",
            "Could not connect to the model service at gateway.invalid",
            id="dns",
        ),
        pytest.param(
            # The loopback gateway speaks plain HTTP: a TLS handshake with it fails.
            lambda up: f"https://127.0.0.1:{up.port}/v1",
            "model service at 127.0.0.1",
            id="tls",
        ),
    ],
)
async def test_unreachable_gateway_fails_clearly_and_quickly(
    upstream: FakeUpstream, user: Any, settings: Any, base_url: Any, expected: str
) -> None:
    settings.AIMLAPI_BASE_URL = base_url(upstream)

    turn = await run_turn(upstream, user)

    assert turn.reply.status == Message.Status.ERROR
    assert expected in turn.frames
    assert len(turn.notices) <= 2  # at most 3 tries in all
    assert turn.elapsed < 10


async def test_hang_up_without_a_response_is_retried_then_reported(
    upstream: FakeUpstream, user: Any
) -> None:
    turn = await run_turn(upstream, user, Refuse(), Refuse(), Refuse())

    assert turn.requests == 3
    assert turn.reply.status == Message.Status.ERROR
    assert "gave up after 3 attempts" in turn.reply.error


# No first byte / a stall mid-reply: ends within CHAT_UPSTREAM_TIMEOUT, partial kept.


async def test_no_first_byte_ends_within_the_timeout(
    upstream: FakeUpstream, user: Any, settings: Any
) -> None:
    settings.CHAT_UPSTREAM_TIMEOUT = 0.5
    gate = Gate()
    try:
        turn = await run_turn(upstream, user, Stream([Hold(gate)]))
    finally:
        gate.release()

    assert turn.requests == 1
    assert turn.reply.status == Message.Status.ERROR
    assert "The model took longer than 0.5 s" in turn.frames
    assert 0.5 <= turn.elapsed < 3


async def test_stall_mid_reply_ends_within_the_timeout_and_keeps_the_text(
    upstream: FakeUpstream, user: Any, settings: Any
) -> None:
    settings.CHAT_UPSTREAM_TIMEOUT = 0.5
    gate = Gate()
    chunks = gateway_chunks(["Half ", "a story"])
    try:
        turn = await run_turn(upstream, user, Stream([*chunks[:2], Hold(gate)]))
    finally:
        gate.release()

    assert turn.requests == 1
    assert_failed_with_retry_offered(
        turn,
        text="Half a story",
        error="The model took longer than 0.5 s to send more of its reply",
    )
    assert turn.elapsed < 3


# Broken mid-stream: partial kept and shown, status error, Retry, never retried automatically.


def _retryable_in_band_error() -> Event:
    # Retryable by its code: proves the no-retry-once-shown rule, not mere classification.
    return Event(json.dumps({"error": {"message": "Overloaded", "code": 529}}))


@pytest.mark.parametrize(
    ("breakage", "error"),
    [
        pytest.param(
            [Drop()], "The connection to the model was lost before the reply finished", id="drop"
        ),
        pytest.param(
            [_retryable_in_band_error()],
            "The model reported an error while answering: Overloaded",
            id="error-object",
        ),
        pytest.param(
            [
                Event(
                    json.dumps(
                        {
                            "id": "",
                            "object": "chat.completion.chunk",
                            "choices": [{"index": 0, "delta": {}, "finish_reason": "error"}],
                        }
                    )
                )
            ],
            "The model reported an error while answering",
            id="finish-reason-error",
        ),
        pytest.param(
            [Raw(b'data: {"choices": [{"delta": {"content": "x"\n\n')],
            "a malformed line in the reply stream",
            id="malformed-json",
        ),
    ],
)
async def test_broken_stream_keeps_partial_and_is_not_retried(
    upstream: FakeUpstream, user: Any, breakage: list[Any], error: str
) -> None:
    chunks = gateway_chunks(["Partial ", "answer"])
    turn = await run_turn(
        upstream, user, Stream([*chunks[:2], *breakage]), Stream(gateway_chunks(["unused"]))
    )

    assert turn.requests == 1
    assert turn.notices == []
    assert_failed_with_retry_offered(turn, text="Partial answer", error=error)


async def test_length_cut_is_complete_with_a_note(upstream: FakeUpstream, user: Any) -> None:
    turn = await run_turn(
        upstream, user, Stream(gateway_chunks(["Cut ", "short"], finish_reason="length"))
    )

    assert turn.reply.status == Message.Status.COMPLETE
    assert turn.reply.finish_reason == "length"
    assert "Stopped at the token limit." in turn.frames
    assert ">Retry</button>" not in turn.frames


# Retry: a new reply under the same user message; nothing duplicated.


async def failed_turn(upstream: FakeUpstream, user: Any) -> tuple[Conversation, Message]:
    chunks = gateway_chunks(["Partial ", "answer"])
    turn = await run_turn(upstream, user, Stream([*chunks[:2], Drop()]))
    assert turn.reply.status == Message.Status.ERROR
    conversation = await Conversation.objects.aget(id=turn.reply.conversation_id)
    return conversation, turn.reply


async def test_retry_writes_a_new_reply_without_duplicating_the_users_message(
    upstream: FakeUpstream, user: Any
) -> None:
    conversation, failed = await failed_turn(upstream, user)
    upstream.reset()
    upstream.enqueue(Stream(gateway_chunks(["Whole ", "answer."])))
    comm = communicator_for(user, conversation)
    await comm.connect(timeout=SOCKET_TIMEOUT)
    await drain_final_state(comm)

    await comm.send_to(text_data=json.dumps({"action": "retry", "message_id": str(failed.id)}))
    frames = await collect_until_final(comm)
    await wait_generations()

    assert f'hx-swap-oob="outerHTML:#msg-{failed.id}"' in frames
    assert "Whole answer." in frames
    messages = [m async for m in Message.objects.filter(conversation=conversation)]
    users = [m for m in messages if m.role == Message.Role.USER]
    replies = [m for m in messages if m.role == Message.Role.ASSISTANT]
    assert len(users) == 1
    assert len(replies) == 2
    new = next(m for m in replies if m.id != failed.id)
    assert new.parent_id == failed.parent_id == users[0].id
    assert new.status == Message.Status.COMPLETE
    assert new.content == "Whole answer."
    await conversation.arefresh_from_db()
    assert conversation.active_leaf_id == new.id
    # The retried request carries the user's message once, and not the failed partial.
    assert upstream.streamed_requests[0].json["messages"] == [
        {"role": "user", "content": "Hello there"}
    ]
    await comm.disconnect()


@pytest.mark.parametrize(
    "message_id",
    ["not-a-uuid", "00000000-0000-0000-0000-000000000000", None, 5, ["x"], {"a": 1}],
)
async def test_retry_with_a_bad_id_changes_nothing(
    upstream: FakeUpstream, user: Any, message_id: Any
) -> None:
    conversation, _ = await failed_turn(upstream, user)
    requests_before = len(upstream.streamed_requests)
    comm = communicator_for(user, conversation)
    await comm.connect(timeout=SOCKET_TIMEOUT)
    await drain_final_state(comm)

    await comm.send_to(text_data=json.dumps({"action": "retry", "message_id": message_id}))
    frame = await comm.receive_from(timeout=SOCKET_TIMEOUT)

    assert 'id="composer-error"' in frame
    assert "not part of this conversation" in frame
    assert await Message.objects.filter(conversation=conversation).acount() == 2
    assert len(upstream.streamed_requests) == requests_before
    await comm.disconnect()


async def test_only_the_last_failed_reply_can_be_retried(upstream: FakeUpstream, user: Any) -> None:
    turn = await run_turn(upstream, user, Stream(gateway_chunks(["Fine."])))
    conversation = await Conversation.objects.aget(id=turn.reply.conversation_id)
    comm = communicator_for(user, conversation)
    await comm.connect(timeout=SOCKET_TIMEOUT)
    await drain_final_state(comm)

    await comm.send_to(text_data=json.dumps({"action": "retry", "message_id": str(turn.reply.id)}))
    frame = await comm.receive_from(timeout=SOCKET_TIMEOUT)

    assert "Only a reply that failed or was interrupted can be retried." in html.unescape(frame)
    assert await Message.objects.filter(conversation=conversation).acount() == 2
    await comm.disconnect()


async def test_socket_joining_after_the_reply_ended_gets_its_final_state(
    upstream: FakeUpstream, user: Any
) -> None:
    # The page was rendered mid-reply, but the reply ended before the socket joined: no
    # generation is left to answer the snapshot request, so the final state comes from the DB.
    turn = await run_turn(upstream, user, Stream(gateway_chunks(["Done ", "already."])))
    conversation = await Conversation.objects.aget(id=turn.reply.conversation_id)
    comm = communicator_for(user, conversation)
    await comm.connect(timeout=SOCKET_TIMEOUT)

    frame = await drain_final_state(comm)

    assert f'<article id="msg-{turn.reply.id}" hx-swap-oob="true"' in frame
    assert 'data-status="complete"' in frame
    assert "Done already." in frame
    await comm.disconnect()


async def test_a_page_that_shows_the_finished_reply_keeps_it(
    upstream: FakeUpstream, user: Any
) -> None:
    # Re-sending the reply the page already shows finished would swap its article under the
    # reader (a thumb just pressed, an editor just opened): the first frame is the answer to
    # the reader's own frame instead.
    turn = await run_turn(upstream, user, Stream(gateway_chunks(["Done ", "already."])))
    conversation = await Conversation.objects.aget(id=turn.reply.conversation_id)
    comm = communicator_for(user, conversation, query=f"shown={turn.reply.id}")
    await comm.connect(timeout=SOCKET_TIMEOUT)
    await comm.send_to(text_data=json.dumps({"action": "dance"}))

    frame = await drain_final_state(comm)

    assert f'id="msg-{turn.reply.id}"' not in frame
    assert "composer-error" in frame
    await comm.disconnect()


async def test_text_arriving_during_the_last_flush_is_kept(
    upstream: FakeUpstream, user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A slow channel layer (Redis under load): the end of the stream arrives while the
    # previous delta is still being sent. The last words must not be lost.
    layer = get_channel_layer()
    original = layer.group_send

    async def slow_group_send(group: str, message: dict[str, Any]) -> None:
        if message.get("type") == "reply.delta":
            await asyncio.sleep(0.3)
        await original(group, message)

    monkeypatch.setattr(layer, "group_send", slow_group_send)
    chunks = gateway_chunks(["First ", "last."])
    turn = await run_turn(upstream, user, Stream([chunks[0], Pause(0.1), *chunks[1:]]))

    assert turn.reply.status == Message.Status.COMPLETE
    assert turn.reply.content == "First last."
    assert "First last." in turn.frames


# The reply's own time limit: a stream that keeps sending, but for too long.


async def test_a_reply_still_streaming_after_the_time_limit_ends_with_an_error_and_its_text(
    upstream: FakeUpstream, user: Any, settings: Any
) -> None:
    settings.CHAT_REPLY_MAX_SECONDS = 2
    # Text keeps arriving (no upstream timeout applies), but the stream would never end.
    words = [f"word{index} " for index in range(200)]
    steps: list[Any] = []
    for chunk in gateway_chunks(words)[: len(words)]:
        steps += [chunk, Pause(0.05)]
    turn = await run_turn(upstream, user, Stream([*steps, Hold(Gate())]))

    assert turn.reply.status == Message.Status.ERROR
    assert "after 2 seconds" in turn.reply.error
    assert "text so far is kept" in turn.reply.error
    assert turn.reply.content
    assert "".join(words).startswith(turn.reply.content)
    assert turn.reply.content in turn.frames
    assert 2 <= turn.elapsed < 10
