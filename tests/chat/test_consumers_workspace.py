"""The chat socket's workspace actions: regenerate, retry, edit, continue, versions, live
sidebar and titles, and the throttled Markdown render while streaming."""

import asyncio
import json
from typing import Any

import pytest
from channels.db import database_sync_to_async

from conversations.chat.services import conversation_create
from conversations.models import Conversation, Message
from conversations.realtime import live, runtime
from tests.support.factories import exchange
from tests.support.sockets import (
    COMPLETE,
    RECEIVE_TIMEOUT,
    SEND,
    communicator_for,
    receive_until,
)
from tests.support.upstream_server import FakeUpstream, Gate, Hold, Stream, gateway_chunks

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

CONTROLS = {k: v for k, v in SEND.items() if k not in ("action", "message")}


async def _settled() -> None:
    for task in [g.task for g in runtime.current().generations.values() if g.task]:
        await task
    background = runtime.current().background_tasks()
    if background:
        await asyncio.gather(*background)


async def _connected(user: Any, conversation: Conversation):
    comm = communicator_for(user, conversation)
    # Generous: a connect that times out mid-way leaves the Redis layer's receive lock held.
    assert (await comm.connect(timeout=RECEIVE_TIMEOUT))[0]
    if await Message.objects.filter(conversation=conversation, role="assistant").aexists():
        # On connect the socket restates the last finished reply; the tests watch what follows.
        await receive_until(comm, 'hx-swap-oob="true"')
    return comm


async def _with_exchange(user: Any, question: str = "Hi", answer: str = "Hello!", **outcome):
    conversation = await database_sync_to_async(conversation_create)(owner=user)
    asked, reply = await database_sync_to_async(exchange)(conversation, question, answer, **outcome)
    return conversation, asked, reply


async def test_first_exchange_gets_a_model_title_in_every_tab(
    upstream: FakeUpstream, user: Any
) -> None:
    other = await database_sync_to_async(conversation_create)(owner=user)
    conversation = await database_sync_to_async(conversation_create)(owner=user)
    comm = await _connected(user, conversation)
    elsewhere = await _connected(user, other)

    await comm.send_to(text_data=json.dumps(SEND))
    await receive_until(comm, COMPLETE)
    await _settled()
    frames = await receive_until(elsewhere, "A short title")

    await conversation.arefresh_from_db()
    assert conversation.title == "A short title"
    assert 'id="conversation-list"' in frames
    assert [r.json["stream"] for r in upstream.requests] == [True, False]
    await comm.disconnect(timeout=RECEIVE_TIMEOUT)
    await elsewhere.disconnect(timeout=RECEIVE_TIMEOUT)


async def test_a_sidebar_render_waits_for_the_turn_starts_in_flight(user: Any) -> None:
    # In a burst of Enters a sidebar render would take the interpreter from everyone's turn
    # start: it waits for them to pass, then shows the latest state.
    conversation, _, _ = await _with_exchange(user)
    comm = await _connected(user, conversation)
    turn_starts = runtime.current().turn_starts

    with turn_starts.running():
        await live.sidebar_changed(user_id=user.pk)
        assert await comm.receive_nothing(timeout=0.5)

    frames = await receive_until(comm, 'id="conversation-list"')
    assert str(conversation.id) in frames
    await comm.disconnect(timeout=RECEIVE_TIMEOUT)


async def test_a_steady_stream_of_turn_starts_holds_a_render_back_only_so_long() -> None:
    turn_starts = runtime.TurnStarts()

    with turn_starts.running():
        async with asyncio.timeout(RECEIVE_TIMEOUT):
            await turn_starts.passed(at_most=0.01)
        waiting = asyncio.ensure_future(turn_starts.passed(at_most=RECEIVE_TIMEOUT))
        await asyncio.sleep(0)
        assert not waiting.done()

    async with asyncio.timeout(RECEIVE_TIMEOUT):
        await waiting


async def test_regenerate_streams_a_second_version(upstream: FakeUpstream, user: Any) -> None:
    conversation, _, first = await _with_exchange(user)
    comm = await _connected(user, conversation)

    await comm.send_to(
        text_data=json.dumps({**CONTROLS, "action": "regenerate", "message_id": str(first.id)})
    )
    frames = await receive_until(comm, COMPLETE)
    await _settled()

    assert "innerHTML:#transcript" in frames
    assert "2/2" in frames
    assert upstream.requests[0].json["messages"] == [{"role": "user", "content": "Hi"}]
    replies = [m async for m in Message.objects.filter(role="assistant").order_by("created_at")]
    assert [m.content for m in replies] == ["Hello!", "Hello from the fake upstream."]
    await comm.disconnect(timeout=RECEIVE_TIMEOUT)


async def test_switch_pages_back_to_the_earlier_version(upstream: FakeUpstream, user: Any):
    conversation, _, first = await _with_exchange(user)
    comm = await _connected(user, conversation)
    await comm.send_to(
        text_data=json.dumps({**CONTROLS, "action": "regenerate", "message_id": str(first.id)})
    )
    await receive_until(comm, COMPLETE)
    await _settled()

    await comm.send_to(text_data=json.dumps({"action": "switch", "message_id": str(first.id)}))
    frames = await receive_until(comm, "innerHTML:#transcript")

    assert "Hello!" in frames
    assert "1/2" in frames
    await conversation.arefresh_from_db()
    assert conversation.active_leaf_id == first.id
    await comm.disconnect(timeout=RECEIVE_TIMEOUT)


async def test_edit_resends_on_a_new_branch(upstream: FakeUpstream, user: Any) -> None:
    conversation, asked, _ = await _with_exchange(user, "Capital of Spain?", "Madrid.")
    comm = await _connected(user, conversation)

    await comm.send_to(
        text_data=json.dumps(
            {**CONTROLS, "action": "edit", "message_id": str(asked.id), "message": "Of Italy?"}
        )
    )
    await receive_until(comm, COMPLETE)
    await _settled()

    assert upstream.requests[0].json["messages"] == [{"role": "user", "content": "Of Italy?"}]
    assert await Message.objects.filter(role="user").acount() == 2
    await comm.disconnect(timeout=RECEIVE_TIMEOUT)


async def test_retry_of_an_error_reply(upstream: FakeUpstream, user: Any) -> None:
    conversation, _, failed = await _with_exchange(
        user, "Hi", "", status=Message.Status.ERROR, error="Overloaded"
    )
    comm = await _connected(user, conversation)

    await comm.send_to(
        text_data=json.dumps({**CONTROLS, "action": "retry", "message_id": str(failed.id)})
    )
    await receive_until(comm, COMPLETE)
    await _settled()

    assert await Message.objects.filter(role="user").acount() == 1
    assert upstream.requests[0].json["messages"] == [{"role": "user", "content": "Hi"}]
    await comm.disconnect(timeout=RECEIVE_TIMEOUT)


async def test_continue_prefills_the_stopped_reply(upstream: FakeUpstream, user: Any) -> None:
    conversation, _, stopped = await _with_exchange(
        user, "Count", "one two ", status=Message.Status.STOPPED
    )
    comm = await _connected(user, conversation)

    await comm.send_to(
        text_data=json.dumps({**CONTROLS, "action": "continue", "message_id": str(stopped.id)})
    )
    await receive_until(comm, COMPLETE)
    await _settled()

    assert upstream.requests[0].json["messages"][-1] == {"role": "assistant", "content": "one two"}
    await comm.disconnect(timeout=RECEIVE_TIMEOUT)


async def test_actions_on_another_users_message_are_refused(
    upstream: FakeUpstream, user: Any, make_user: Any
) -> None:
    bob = await database_sync_to_async(make_user)("bob")
    _, _, foreign = await _with_exchange(bob)
    conversation, _, _ = await _with_exchange(user)
    comm = await _connected(user, conversation)

    for action in ("regenerate", "continue", "switch", "edit"):
        frame = {**CONTROLS, "action": action, "message_id": str(foreign.id), "message": "x"}
        await comm.send_to(text_data=json.dumps(frame))
        reply = await receive_until(comm, "composer-error")
        assert "not part of this conversation" in reply

    assert upstream.requests == []
    await comm.disconnect(timeout=RECEIVE_TIMEOUT)


async def test_streaming_reply_is_rendered_as_markdown_on_the_way(
    upstream: FakeUpstream, user: Any, settings: Any
) -> None:
    settings.CHAT_RENDER_INTERVAL = 0.0
    gate = Gate()
    chunks = gateway_chunks(["Some ", "**bold**", " words"])
    upstream.enqueue(Stream([*chunks[:2], Hold(gate), *chunks[2:]]))
    conversation = await database_sync_to_async(conversation_create)(owner=user)
    comm = await _connected(user, conversation)

    await comm.send_to(text_data=json.dumps(SEND))
    rendered = await receive_until(comm, "<strong>bold</strong>")
    gate.release()
    await receive_until(comm, COMPLETE)
    await _settled()

    assert 'class="message-body markdown" hx-swap-oob="true"' in rendered
    await comm.disconnect(timeout=RECEIVE_TIMEOUT)
