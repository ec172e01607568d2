"""Replies go through the gateway client's turn path: a refused request shape is switched and
sent once more before any token, the working shape is remembered per gateway and model in the
database, parameters the model does not take are named on the reply, and a stream the app
cannot read keeps its first event for the logged transcript. Against the loopback gateway."""

from __future__ import annotations

import asyncio
import json
from html import unescape
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from conversations.attachments import services as attachment_services
from conversations.chat import services
from conversations.chat.routing import websocket_urlpatterns
from conversations.gateway.content import RequestStyle
from conversations.gateway.dialect import Dialect
from conversations.gateway.profiles import SONNET_4_5
from conversations.models import Conversation, Message, ModelDialect
from conversations.realtime import generation, runtime
from tests.support import attachment_files as files
from tests.support.factories import turn_settings
from tests.support.upstream_server import (
    Event,
    FakeUpstream,
    Gate,
    Hold,
    Stream,
    gateway_chunks,
    strict_gateway,
)
from tests.support.ws import SEND

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

MODEL = SONNET_4_5.id
SYSTEM = "Answer in French."


async def start_reply(user: Any, *, content: str = "Hello") -> Message:
    conversation = await Conversation.objects.filter(owner=user).afirst()
    if conversation is None:
        conversation = await database_sync_to_async(services.conversation_create)(owner=user)
        conversation.model, conversation.system_prompt = MODEL, SYSTEM
        await conversation.asave(update_fields=["model", "system_prompt"])
    started = await database_sync_to_async(services.turn_start)(
        conversation_id=conversation.id,
        owner=user,
        content=content,
        settings=turn_settings(),
        model=MODEL,
    )
    return started.reply


async def generate(reply: Message) -> Message:
    running = await generation.reply_generate(reply_id=reply.id)
    await running.task
    return await Message.objects.aget(id=reply.id)


def system_shape(body: dict[str, Any]) -> str:
    if body["messages"][0]["role"] == "system":
        return "first message"
    return "top-level" if body.get("system") == SYSTEM else "none"


async def test_a_refused_system_role_is_switched_once_remembered_and_used_by_a_new_process(
    upstream: FakeUpstream, user: Any, caplog
) -> None:
    upstream.default_reply = strict_gateway({"system-role"})

    first = await generate(await start_reply(user))

    assert first.status == Message.Status.COMPLETE
    assert first.content == "Hello from the fake upstream."
    sent = [r.json for r in upstream.streamed_requests]
    assert [system_shape(body) for body in sent] == ["first message", "top-level"]
    row = await ModelDialect.objects.aget(model_id=MODEL)
    assert row.gateway == upstream.base_url.rstrip("/")
    remembered = Dialect.from_json(row.dialect)
    assert remembered is not None and remembered.system_top_level
    # The operator reads what was learned in words.
    assert "the system prompt as a top-level field" in caplog.text

    # A later turn, from a fresh runtime (as another process would be), goes straight there.
    runtime.forget_all()
    upstream.requests.clear()
    second = await generate(await start_reply(user, content="Again"))

    assert second.status == Message.Status.COMPLETE
    assert [system_shape(r.json) for r in upstream.streamed_requests] == ["top-level"]


async def test_the_remembered_dialect_belongs_to_its_gateway(
    upstream: FakeUpstream, user: Any
) -> None:
    # Another gateway learned a top-level system prompt for the same model id.
    await ModelDialect.objects.acreate(
        gateway="https://other-gateway.example/v1",
        model_id=MODEL,
        dialect=Dialect(system_top_level=True).as_json(),
    )

    reply = await generate(await start_reply(user))

    assert reply.status == Message.Status.COMPLETE
    assert [system_shape(r.json) for r in upstream.streamed_requests] == ["first message"]


async def test_a_stored_row_that_is_not_a_dialect_is_ignored(
    upstream: FakeUpstream, user: Any
) -> None:
    await ModelDialect.objects.acreate(
        gateway=upstream.base_url.rstrip("/"),
        model_id=MODEL,
        dialect={"system_top_level": "yes please"},
    )

    reply = await generate(await start_reply(user))

    assert reply.status == Message.Status.COMPLETE
    assert [system_shape(r.json) for r in upstream.streamed_requests] == ["first message"]


async def test_a_shape_refused_in_both_forms_ends_in_the_gateways_words(
    upstream: FakeUpstream, user: Any
) -> None:
    upstream.default_reply = strict_gateway({"system-role", "system"})

    reply = await generate(await start_reply(user))

    assert reply.status == Message.Status.ERROR
    assert "Extra inputs are not permitted" in reply.error
    assert len(upstream.streamed_requests) == 2
    assert not await ModelDialect.objects.filter(model_id=MODEL).aexists()


async def test_parameters_the_model_does_not_take_are_named_on_the_reply(
    upstream: FakeUpstream, user: Any
) -> None:
    reply = await start_reply(user)
    # Saved before the model's profile said so (or by an older version): both set, which
    # Claude Sonnet 4.5 refuses.
    await Message.objects.filter(id=reply.id).aupdate(
        request_params={"max_tokens": 1000, "temperature": 0.5, "top_p": 0.9}
    )

    done = await generate(reply)

    assert done.status == Message.Status.COMPLETE
    body = upstream.streamed_requests[0].json
    assert body["temperature"] == 0.5 and "top_p" not in body
    assert done.request_notes == [
        "Top P was not sent as set: Claude Sonnet 4.5 takes temperature or top_p, not both."
    ]
    page = await database_sync_to_async(page_of)(user, done.conversation_id)
    assert "Top P was not sent as set: Claude Sonnet 4.5 takes temperature or top_p" in page


def page_of(user: Any, conversation_id: Any) -> str:
    client = Client()
    client.force_login(user)
    return client.get(f"/c/{conversation_id}/").content.decode()


RAW_CANARY = "canary-raw-event-7311"


async def test_an_unreadable_stream_keeps_its_first_event_for_the_logged_transcript(
    upstream: FakeUpstream, user: Any
) -> None:
    unknown = {"type": "message_start", "message": {"note": RAW_CANARY}}
    upstream.enqueue(Stream([Event(json.dumps(unknown)), Event(json.dumps({"type": "stop"}))]))

    reply = await generate(await start_reply(user))

    assert reply.status == Message.Status.ERROR
    assert reply.error == "The gateway's reply could not be read."
    assert RAW_CANARY in reply.raw_event
    # The user sees the error, never the gateway's raw text.
    page = await database_sync_to_async(page_of)(user, reply.conversation_id)
    assert "could not be read" in page and RAW_CANARY not in page


async def test_the_user_is_told_in_words_when_the_request_is_sent_again_in_another_form(
    upstream: FakeUpstream, user: Any
) -> None:
    upstream.default_reply = strict_gateway({"system-role"})
    conversation = await database_sync_to_async(services.conversation_create)(owner=user)
    conversation.model, conversation.system_prompt = MODEL, SYSTEM
    await conversation.asave(update_fields=["model", "system_prompt"])
    comm = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/c/{conversation.id}/")
    comm.scope["user"] = user
    assert (await comm.connect())[0]

    await comm.send_to(text_data=json.dumps(SEND))
    frames: list[str] = []
    async with asyncio.timeout(30):
        while 'data-role="assistant" data-status="complete"' not in "".join(frames):
            frames.append(await comm.receive_from(timeout=30))
    await comm.disconnect()

    shown = unescape("".join(frames))
    assert (
        "The gateway did not take the system prompt in the form sent; the request was sent "
        "again with the system prompt as a top-level field." in shown
    )
    assert "Hello from the fake upstream." in shown


async def test_an_image_part_the_gateway_refuses_is_sent_again_in_the_other_spelling(
    upstream: FakeUpstream, user: Any, settings: Any, tmp_path: Any
) -> None:
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": tmp_path / "media", "base_url": None},
        },
    }
    upstream.default_reply = strict_gateway({"image_url"})
    image = await database_sync_to_async(attachment_services.attachment_upload)(
        owner=user, data=files.png(), filename="square.png"
    )
    conversation = await database_sync_to_async(services.conversation_create)(owner=user)
    comm = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/c/{conversation.id}/")
    comm.scope["user"] = user
    assert (await comm.connect())[0]

    frame = {**SEND, "message": "What is this?", "attachments": str(image.id)}
    await comm.send_to(text_data=json.dumps(frame))
    async with asyncio.timeout(30):
        while not await Message.objects.filter(
            conversation=conversation, role=Message.Role.ASSISTANT, status="complete"
        ).aexists():
            await comm.receive_from(timeout=30)
    await comm.disconnect()

    first, second = (r.json["messages"][-1]["content"] for r in upstream.streamed_requests)
    assert first[0]["type"] == "image_url"
    assert second[0]["type"] == "image"
    row = await ModelDialect.objects.aget(model_id=conversation.model)
    remembered = Dialect.from_json(row.dialect)
    assert remembered is not None and remembered.content_style.value == "anthropic"


SWITCH_SENTENCE = (
    "The gateway did not take the system prompt in the form sent; the request was sent again "
    "with the system prompt as a top-level field."
)


async def test_the_switch_is_kept_on_the_reply_with_the_dialect_it_was_sent_in(
    upstream: FakeUpstream, user: Any
) -> None:
    upstream.default_reply = strict_gateway({"system-role"})

    first = await generate(await start_reply(user))

    assert first.status == Message.Status.COMPLETE
    assert SWITCH_SENTENCE in first.request_notes
    assert first.dialect == Dialect(system_top_level=True).code()
    # After a reload the reply still says why it was sent twice.
    page = unescape(await database_sync_to_async(page_of)(user, first.conversation_id))
    assert SWITCH_SENTENCE in page

    # The next turn goes straight to the learned shape: stored, but nothing to tell the user.
    second = await generate(await start_reply(user, content="Again"))
    assert second.dialect == Dialect(system_top_level=True).code()
    assert second.request_notes == []


async def test_a_reply_sent_in_the_first_shape_stores_that_shape(
    upstream: FakeUpstream, user: Any
) -> None:
    reply = await generate(await start_reply(user))

    assert reply.status == Message.Status.COMPLETE
    assert reply.dialect == Dialect.of(SONNET_4_5.dialect).code()
    assert reply.request_notes == []


async def test_a_dialect_code_reads_back_and_stays_short() -> None:
    for dialect in (Dialect(), Dialect.of(RequestStyle.ANTHROPIC), Dialect(stop_sequences=True)):
        assert Dialect.from_code(dialect.code()) == dialect
        assert len(dialect.code()) <= Message._meta.get_field("dialect").max_length
    assert Dialect.from_code("system:sideways") is None


async def test_a_socket_joining_mid_reply_gets_the_switch_notice(
    upstream: FakeUpstream, user: Any
) -> None:
    gate = Gate()
    held = Stream([*gateway_chunks(["Hello"])[:1], Hold(gate), *gateway_chunks(["Hello"])[1:]])
    upstream.default_reply = strict_gateway({"system-role"}, reply=lambda request: held)
    reply = await start_reply(user)
    running = await generation.reply_generate(reply_id=reply.id)
    await asyncio.to_thread(gate.wait_reached, 30)

    comm = WebsocketCommunicator(
        URLRouter(websocket_urlpatterns), f"/ws/c/{reply.conversation_id}/"
    )
    comm.scope["user"] = user
    assert (await comm.connect())[0]
    frames: list[str] = []
    try:
        async with asyncio.timeout(30):
            while SWITCH_SENTENCE not in unescape("".join(frames)):
                frames.append(await comm.receive_from(timeout=30))
    finally:
        gate.release()
        await comm.disconnect()
        await running.task
    assert f"msg-{reply.id}-notice" in "".join(frames)


def staff_transcript_and_owner_export(
    owner: Any, conversation_id: Any
) -> tuple[str, dict[str, Any]]:
    staff = User.objects.create_user("reviewer", is_staff=True)
    staff.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="conversations", codename="view_conversation"
        )
    )
    reviewer = Client()
    reviewer.force_login(staff)
    url = reverse("admin:conversations_conversation_transcript", args=[conversation_id])
    opened = reviewer.post(url, {"reason": "checking a gateway refusal"})
    transcript = unescape(reviewer.get(opened["Location"]).content.decode())
    client = Client()
    client.force_login(owner)
    export = client.get(reverse("conversation_export_json", args=[conversation_id]))
    return transcript, json.loads(export.content)


async def test_staff_and_the_export_see_the_dialect_a_reply_was_sent_in(
    upstream: FakeUpstream, user: Any
) -> None:
    upstream.default_reply = strict_gateway({"system-role"})
    reply = await generate(await start_reply(user))
    code = Dialect(system_top_level=True).code()

    transcript, export = await database_sync_to_async(staff_transcript_and_owner_export)(
        user, reply.conversation_id
    )

    assert f"<dt>Dialect</dt><dd><code>{code}</code></dd>" in transcript
    assert SWITCH_SENTENCE in transcript
    exported = {m["id"]: m for m in export["messages"]}[str(reply.id)]
    assert exported["dialect"] == code
    assert SWITCH_SENTENCE in exported["request_notes"]
