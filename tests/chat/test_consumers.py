import asyncio
import json
import re
import threading
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from chatsite.asgi import application
from conversations.chat.rendering import markdown_to_html
from conversations.chat.services import conversation_create
from conversations.models import Message
from conversations.realtime import live
from tests.support.factories import exchange
from tests.support.sockets import (
    COMPLETE,
    SEND,
    communicator_for,
    finished,
    receive_until,
)
from tests.support.upstream_server import Event, FakeUpstream, Gate, Hold, Stream, gateway_chunks

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


async def test_send_streams_reply_and_saves_it(upstream: FakeUpstream, user: Any) -> None:
    upstream.enqueue(Stream(gateway_chunks(["Hel", "lo ", "<b>world</b>"])))
    conversation = await database_sync_to_async(conversation_create)(owner=user)
    comm = communicator_for(user, conversation)
    assert (await comm.connect())[0]

    await comm.send_to(text_data=json.dumps(SEND))
    frames = await receive_until(comm, 'data-role="assistant" data-status="complete"')

    assert 'data-role="user"' in frames
    assert "&lt;b&gt;world&lt;/b&gt;" in frames, frames
    assert "<b>world</b>" not in frames
    reply = await finished(conversation)
    assert reply.content == "Hello <b>world</b>"
    assert reply.status == Message.Status.COMPLETE
    assert reply.finish_reason == "stop"
    assert reply.prompt_tokens is not None
    await comm.disconnect()


async def test_request_carries_exactly_the_chosen_parameters(
    upstream: FakeUpstream, user: Any
) -> None:
    conversation = await database_sync_to_async(conversation_create)(owner=user)
    comm = communicator_for(user, conversation)
    await comm.connect()

    await comm.send_to(
        text_data=json.dumps({**SEND, "sampling": "top_p", "top_p": "0.7", "max_tokens": "321"})
    )
    await receive_until(comm, 'data-role="assistant" data-status="complete"')

    body = upstream.requests[0].json
    assert body["top_p"] == 0.7
    assert "temperature" not in body
    assert body["max_tokens"] == 321
    assert body["stream"] is True
    assert body["messages"] == [{"role": "user", "content": "Hello there"}]
    assert upstream.requests[0].headers["authorization"].startswith("Bearer ")
    await comm.disconnect()


async def test_out_of_range_value_is_refused_and_nothing_sent(
    upstream: FakeUpstream, user: Any
) -> None:
    conversation = await database_sync_to_async(conversation_create)(owner=user)
    comm = communicator_for(user, conversation)
    await comm.connect()

    await comm.send_to(
        text_data=json.dumps({**SEND, "sampling": "temperature", "temperature": "1.5"})
    )
    frame = await comm.receive_from()

    assert 'id="composer-error"' in frame
    assert (
        "Temperature: Claude Sonnet 4.5 takes a temperature from 0 to 1 (you chose 1.5)." in frame
    )
    assert await Message.objects.filter(conversation=conversation).acount() == 0
    assert upstream.requests == []
    await comm.disconnect()


async def test_closing_the_socket_does_not_stop_the_reply(
    upstream: FakeUpstream, user: Any
) -> None:
    gate = Gate()
    upstream.enqueue(
        Stream(
            [*gateway_chunks(["first "])[:1], Hold(gate), *gateway_chunks(["first ", "second"])[1:]]
        )
    )
    conversation = await database_sync_to_async(conversation_create)(owner=user)
    comm = communicator_for(user, conversation)
    await comm.connect()
    await comm.send_to(text_data=json.dumps(SEND))
    await receive_until(comm, 'data-role="assistant" data-status="streaming"')

    await comm.disconnect()
    gate.release()

    reply = await finished(conversation)
    assert reply.status == Message.Status.COMPLETE
    assert reply.content.endswith("second")


async def test_second_socket_joining_mid_reply_gets_text_so_far_then_the_rest(
    upstream: FakeUpstream, user: Any
) -> None:
    gate = Gate()
    chunks = gateway_chunks(["one ", "two ", "three"])
    upstream.enqueue(Stream([*chunks[:2], Hold(gate), *chunks[2:]]))
    conversation = await database_sync_to_async(conversation_create)(owner=user)
    first = communicator_for(user, conversation)
    await first.connect()
    await first.send_to(text_data=json.dumps(SEND))
    await asyncio.to_thread(gate.wait_reached)
    await receive_until(first, "two")

    second = communicator_for(user, conversation)
    await second.connect()
    snapshot = await receive_until(second, "innerHTML:#msg-")
    gate.release()
    rest = await receive_until(second, 'data-role="assistant" data-status="complete"')

    assert "one two " in snapshot
    # After the snapshot only the new text is appended (a throttled Markdown render may
    # redraw the whole body, which replaces rather than repeats it).
    appended = re.findall(r'hx-swap-oob="beforeend:#msg-[^"]*">([^<]*)<', rest)
    assert "".join(appended) == "three"
    await first.disconnect()
    await second.disconnect()


async def test_stop_keeps_partial_reply(upstream: FakeUpstream, user: Any) -> None:
    gate = Gate()
    upstream.enqueue(Stream([*gateway_chunks(["partial "])[:1], Hold(gate)]))
    conversation = await database_sync_to_async(conversation_create)(owner=user)
    comm = communicator_for(user, conversation)
    await comm.connect()
    await comm.send_to(text_data=json.dumps(SEND))
    await receive_until(comm, "partial")

    await comm.send_to(text_data=json.dumps({"action": "stop"}))
    frames = await receive_until(comm, 'data-status="stopped"')

    gate.release()
    reply = await finished(conversation)
    assert reply.status == Message.Status.STOPPED
    assert reply.content == "partial "
    assert "Stopped" in frames
    await comm.disconnect()


async def test_second_send_while_streaming_is_refused(upstream: FakeUpstream, user: Any) -> None:
    gate = Gate()
    upstream.enqueue(Stream([*gateway_chunks(["busy"])[:1], Hold(gate)]))
    conversation = await database_sync_to_async(conversation_create)(owner=user)
    comm = communicator_for(user, conversation)
    await comm.connect()
    await comm.send_to(text_data=json.dumps(SEND))
    await receive_until(comm, "busy")

    await comm.send_to(text_data=json.dumps({**SEND, "message": "again"}))
    frame = await receive_until(comm, "composer-error")

    assert "still being written" in frame
    assert await Message.objects.filter(conversation=conversation).acount() == 2
    gate.release()
    await finished(conversation)
    await comm.disconnect()


async def test_anonymous_socket_is_refused() -> None:
    comm = WebsocketCommunicator(
        application,
        "/ws/c/00000000-0000-0000-0000-000000000000/",
        headers=[(b"origin", b"http://localhost"), (b"host", b"localhost")],
    )
    connected, _ = await comm.connect()
    assert not connected


async def test_other_users_conversation_socket_is_refused(make_user: Any) -> None:
    owner, intruder = (
        await database_sync_to_async(make_user)("owner"),
        await database_sync_to_async(make_user)("intruder"),
    )
    conversation = await database_sync_to_async(conversation_create)(owner=owner)
    comm = communicator_for(intruder, conversation)

    connected, code = await comm.connect()

    assert not connected
    assert code == 4404


async def test_foreign_origin_is_refused(user: Any) -> None:
    conversation = await database_sync_to_async(conversation_create)(owner=user)
    comm = WebsocketCommunicator(
        application, f"/ws/c/{conversation.id}/", headers=[(b"origin", b"http://evil.example")]
    )
    connected, _ = await comm.connect()
    assert not connected


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[]",
        "1",
        json.dumps({"action": "dance"}),
        json.dumps({"message": 5}),
        json.dumps({**SEND, "max_tokens": 10**30}),
        '{"temperature": NaN, "message": "x"}',
    ],
)
async def test_malformed_frames_get_an_error_and_keep_the_socket(
    upstream: FakeUpstream, user: Any, raw: str
) -> None:
    conversation = await database_sync_to_async(conversation_create)(owner=user)
    comm = communicator_for(user, conversation)
    await comm.connect()

    await comm.send_to(text_data=raw)
    frame = await comm.receive_from()

    assert 'id="composer-error"' in frame
    assert await Message.objects.filter(conversation=conversation).acount() == 0
    await comm.send_to(text_data=json.dumps(SEND))
    await receive_until(comm, 'data-role="assistant" data-status="complete"')
    await comm.disconnect()


async def test_only_web_citations_are_kept(upstream: FakeUpstream, user: Any) -> None:
    annotations = [
        {"type": "url_citation", "url_citation": {"url": "https://example.com/a", "title": "A"}},
        {"type": "url_citation", "url_citation": {"url": "javascript:alert(1)", "title": "B"}},
    ]
    chunk = {
        "id": "",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": "Cited.", "annotations": annotations}}],
    }
    upstream.enqueue(Stream([Event(json.dumps(chunk)), *gateway_chunks([""])[1:]]))
    conversation = await database_sync_to_async(conversation_create)(owner=user)
    comm = communicator_for(user, conversation)
    await comm.connect()

    await comm.send_to(text_data=json.dumps(SEND))
    frames = await receive_until(comm, 'data-role="assistant" data-status="complete"')

    reply = await finished(conversation)
    assert reply.citations == [{"url": "https://example.com/a", "title": "A"}]
    assert "javascript:" not in frames
    await comm.disconnect()


async def test_deltas_reach_the_socket_while_the_orm_thread_is_busy(
    upstream: FakeUpstream, user: Any
) -> None:
    # Relaying a delta must not wait for the shared ORM thread: with hundreds of replies
    # streaming, that thread is busy with turn starts and saves.
    gate = Gate()
    first, *rest = gateway_chunks(["one ", "two"])
    upstream.enqueue(Stream([first, Hold(gate), *rest]))
    conversation = await database_sync_to_async(conversation_create)(owner=user)
    # Not a first turn: that one re-renders the sidebar (a database read) on the socket.
    await database_sync_to_async(exchange)(conversation, "Hi", "Hello!")
    comm = communicator_for(user, conversation)
    assert (await comm.connect())[0]
    await comm.send_to(text_data=json.dumps(SEND))
    await receive_until(comm, "one ")
    orm_free = threading.Event()
    orm_busy = asyncio.ensure_future(sync_to_async(orm_free.wait)())

    gate.release()
    frames = await receive_until(comm, "two")

    assert not orm_busy.done()
    orm_free.set()
    await orm_busy
    assert "two" in frames
    await receive_until(comm, COMPLETE)
    await comm.disconnect()


async def test_a_turn_that_moves_the_sidebar_updates_it_after_the_first_text(
    upstream: FakeUpstream, user: Any
) -> None:
    upstream.enqueue(Stream(gateway_chunks(["First words", " and more"])))
    conversation = await database_sync_to_async(conversation_create)(owner=user)
    comm = communicator_for(user, conversation)
    assert (await comm.connect())[0]

    await comm.send_to(text_data=json.dumps(SEND))
    frames = await receive_until(comm, 'id="conversation-list"')

    assert "First words" in frames.split('id="conversation-list"')[0]
    await finished(conversation)
    await comm.disconnect()


async def test_the_quota_line_follows_the_first_text_on_every_page_of_the_user(
    upstream: FakeUpstream, user: Any, settings: Any
) -> None:
    # Rendered into the turn's frame, the quota line was on every first token's path.
    upstream.enqueue(Stream(gateway_chunks(["First words", " and more"])))
    conversation = await database_sync_to_async(conversation_create)(owner=user)
    other = await database_sync_to_async(conversation_create)(owner=user)
    comm = communicator_for(user, conversation)
    elsewhere = communicator_for(user, other)
    assert (await comm.connect())[0]
    assert (await elsewhere.connect())[0]

    await comm.send_to(text_data=json.dumps(SEND))
    frames = await receive_until(comm, 'id="quota-status"')
    elsewhere_frames = await receive_until(elsewhere, 'id="quota-status"')

    assert "First words" in frames.split('id="quota-status"')[0]
    per_day = settings.CHAT_DAILY_MESSAGE_QUOTA
    one_sent = f"{per_day - 1:,} of {per_day:,} messages left today"
    assert one_sent in frames.split('id="quota-status"')[1]
    assert one_sent in elsewhere_frames
    await finished(conversation)
    await comm.disconnect()
    await elsewhere.disconnect()


async def test_a_turn_in_the_conversation_on_top_leaves_the_sidebar_alone(
    upstream: FakeUpstream, user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    conversation = await database_sync_to_async(conversation_create)(owner=user)
    await database_sync_to_async(exchange)(conversation, "Hi", "Hello!")
    announced: list[Any] = []
    monkeypatch.setattr(live, "turn_announced_after", lambda **kw: announced.append(kw))
    comm = communicator_for(user, conversation)
    assert (await comm.connect())[0]
    await receive_until(comm, COMPLETE)  # the finished reply, on connect

    await comm.send_to(text_data=json.dumps(SEND))
    frames = await receive_until(comm, COMPLETE)

    # The consumer decides before the reply streams; no sidebar update is on its way.
    assert [kw["sidebar_moves"] for kw in announced] == [False]
    assert 'id="conversation-list"' not in frames
    await comm.disconnect()


async def test_a_streamed_reply_is_saved_with_the_html_of_its_whole_text(
    upstream: FakeUpstream, user: Any, settings: Any
) -> None:
    # The saved HTML comes from the streaming render, which by the end has kept the first
    # blocks from an earlier render and renders only the rest: it must be the whole text's.
    settings.CHAT_RENDER_INTERVAL = 0.01
    gate = Gate()
    pieces = [
        "# Notes\n\nSome *text* & <tags>.\n\n```python\nprint('<hi>')\n```\n\n- one\n",
        "- two\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\nThe [end](https://example.com/).",
    ]
    chunks = gateway_chunks(pieces)
    upstream.enqueue(Stream([chunks[0], Hold(gate), *chunks[1:]]))
    conversation = await database_sync_to_async(conversation_create)(owner=user)
    comm = communicator_for(user, conversation)
    assert (await comm.connect())[0]

    await comm.send_to(text_data=json.dumps(SEND))
    await receive_until(comm, "<h1>Notes</h1>")
    gate.release()
    await receive_until(comm, 'data-role="assistant" data-status="complete"')

    reply = await finished(conversation)
    assert reply.content == "".join(pieces)
    assert reply.content_html == markdown_to_html(reply.content)
    assert "<table>" in reply.content_html and "&lt;tags&gt;" in reply.content_html
    await comm.disconnect()
