"""Attachments on the wire: a send frame with attachment ids reaches the loopback gateway as
content parts in the request's dialect, with base64 that decodes to the stored bytes."""

import base64
import json
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator

from conversations.attachments import selectors, services
from conversations.attachments.models import Attachment
from conversations.chat.routing import websocket_urlpatterns
from conversations.chat.services import conversation_create
from conversations.models import Message
from conversations.realtime import runtime
from tests.support import attachment_files as files
from tests.support.factories import MODEL, finish, turn_with_attachments
from tests.support.sockets import (
    SEND,
    receive_until,
)
from tests.support.upstream_server import FakeUpstream, Stream, gateway_chunks

CONTROLS = {k: v for k, v in SEND.items() if k not in ("action", "message")}

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def media(settings: Any, tmp_path: Any) -> Any:
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": tmp_path / "media", "base_url": None},
        },
    }
    return tmp_path / "media"


TEXT_ONLY = "example/text-only-model"


@pytest.fixture
def text_only_model(settings: Any, tmp_path: Any) -> str:
    """The operator describes a model that reads neither images nor PDFs."""
    path = tmp_path / "models.json"
    entry = {
        "id": TEXT_ONLY,
        "kind": "claude-4",
        "display_name": "Text-only model",
        "vision": False,
        "pdf": False,
    }
    path.write_text(json.dumps({"models": [entry]}))
    settings.CHAT_MODELS_FILE = str(path)
    return TEXT_ONLY


async def _upload(user: Any, data: bytes, name: str) -> Attachment:
    return await database_sync_to_async(services.attachment_upload)(
        owner=user, data=data, filename=name
    )


async def _stored(attachment: Attachment) -> bytes:
    return await database_sync_to_async(selectors.attachment_read)(attachment=attachment)


async def _finish_all() -> None:
    for task in [g.task for g in runtime.current().generations.values() if g.task]:
        await task


async def _connect(user: Any) -> tuple[WebsocketCommunicator, Any]:
    conversation = await database_sync_to_async(conversation_create)(owner=user)
    comm = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/c/{conversation.id}/")
    comm.scope["user"] = user
    assert (await comm.connect())[0]
    return comm, conversation


async def _send(
    comm: WebsocketCommunicator, message: str, attachments: list[Attachment], **controls: str
) -> None:
    frame = {
        **SEND,
        **controls,
        "message": message,
        "attachments": ",".join(str(a.id) for a in attachments),
    }
    await comm.send_to(text_data=json.dumps(frame))


@pytest.mark.parametrize("style", ["openai", "anthropic"])
async def test_image_pdf_and_text_reach_the_gateway_as_parts(
    upstream: FakeUpstream, user: Any, settings: Any, style: str
) -> None:
    settings.CHAT_REQUEST_STYLE = style
    upstream.enqueue(Stream(gateway_chunks(["A red square."])))
    image = await _upload(user, files.jpeg_with_exif(300, 200), "photo.jpg")
    document = await _upload(user, files.pdf(pages=2), "report.pdf")
    text = await _upload(user, b"def f():\n    return 1\n", "code.py")
    comm, _ = await _connect(user)

    await _send(comm, "What are these?", [image, document, text])
    frames = await receive_until(comm, 'data-role="assistant" data-status="complete"')
    await _finish_all()

    assert "photo.jpg" in frames and "report.pdf" in frames
    [request] = upstream.streamed_requests
    [user_turn] = [m for m in request.json["messages"] if m["role"] == "user"]
    parts = user_turn["content"]
    assert [p["type"] for p in parts[3:]] == ["text", "text"]
    assert parts[-1]["text"] == "What are these?"
    assert "photo.jpg (image, 300×200 px)" in parts[-2]["text"]
    assert "report.pdf (PDF, 2 pages)" in parts[-2]["text"]
    assert parts[2] == {
        "type": "text",
        "text": '<file name="code.py">\ndef f():\n    return 1\n\n</file>',
    }
    if style == "openai":
        assert parts[0]["type"] == "image_url"
        prefix = "data:image/jpeg;base64,"
        assert parts[0]["image_url"]["url"].startswith(prefix)
        image_bytes = base64.b64decode(parts[0]["image_url"]["url"][len(prefix) :])
        assert parts[1]["type"] == "file"
        assert parts[1]["file"]["filename"] == "report.pdf"
        pdf_bytes = base64.b64decode(parts[1]["file"]["file_data"])
    else:
        assert parts[0]["type"] == "image"
        assert parts[0]["source"]["media_type"] == "image/jpeg"
        image_bytes = base64.b64decode(parts[0]["source"]["data"])
        assert parts[1]["type"] == "document"
        assert parts[1]["source"]["media_type"] == "application/pdf"
        pdf_bytes = base64.b64decode(parts[1]["source"]["data"])
    assert image_bytes == await _stored(image)
    assert b"GPS-SECRET-PLACE" not in image_bytes
    assert pdf_bytes == await _stored(document) == files.pdf(pages=2)
    await comm.disconnect()


async def test_earlier_attachments_are_sent_again_and_old_images_can_be_left_out(
    upstream: FakeUpstream, user: Any, settings: Any
) -> None:
    settings.CHAT_ATTACHMENT_IMAGE_MAX_AGE_TURNS = 2
    comm, conversation = await _connect(user)
    first = await _upload(user, files.png(10, 10, (1, 1, 1)), "first.png")
    for turn, attachments in enumerate([[first], [], []]):
        upstream.enqueue(Stream(gateway_chunks([f"Reply {turn}."])))
        await _send(comm, f"Turn {turn}", attachments)
        await receive_until(comm, f"Reply {turn}.")
        await _finish_all()

    second, third = [r.json["messages"] for r in upstream.streamed_requests[1:]]
    # One turn later the image is still sent with the first message...
    assert second[0]["content"][0]["type"] == "image_url"
    # ...two turns later it is left out, in words, and the reply says so.
    assert second[0]["content"][0]["type"] != third[0]["content"][0]["type"]
    assert "first.png was attached here" in third[0]["content"][0]["text"]
    replies = [
        m
        async for m in Message.objects.filter(conversation=conversation, role="assistant").order_by(
            "created_at"
        )
    ]
    assert [r.request_params.get("images_left_out") for r in replies] == [None, None, 1]
    await comm.disconnect()


async def test_model_without_vision_refuses_before_sending(
    upstream: FakeUpstream, user: Any, text_only_model: str
) -> None:
    image = await _upload(user, files.png(), "cat.png")
    comm, conversation = await _connect(user)

    await _send(comm, "What is this?", [image], model=text_only_model)
    frames = await receive_until(comm, "composer-error")

    assert "Text-only model cannot read images" in frames
    assert not await Message.objects.filter(conversation=conversation).aexists()
    assert upstream.streamed_requests == []
    assert (await Attachment.objects.aget(id=image.id)).sent_at is None
    await comm.disconnect()


async def test_another_users_attachment_id_in_a_frame_is_refused(
    upstream: FakeUpstream, make_user: Any
) -> None:
    alice = await database_sync_to_async(make_user)("alice")
    bob = await database_sync_to_async(make_user)("bob")
    theirs = await _upload(alice, files.png(), "private.png")
    comm, conversation = await _connect(bob)

    await _send(comm, "Show me", [theirs])
    frames = await receive_until(comm, "composer-error")
    await comm.send_to(text_data=json.dumps({**SEND, "attachments": ["not-a-uuid"]}))
    frames += await receive_until(comm, "composer-error")
    await comm.send_to(text_data=json.dumps({**SEND, "attachments": {"a": 1}}))
    frames += await receive_until(comm, "composer-error")

    assert frames.count("not one of your uploads") == 2
    assert "must be a list of ids" in frames
    assert not await Message.objects.filter(conversation=conversation).aexists()
    assert upstream.streamed_requests == []
    await comm.disconnect()


async def test_too_many_attachments_per_message_are_refused(
    upstream: FakeUpstream, user: Any, settings: Any
) -> None:
    settings.CHAT_ATTACHMENT_MAX_PER_MESSAGE = 1
    one = await _upload(user, files.png(5, 5), "one.png")
    two = await _upload(user, files.png(6, 6), "two.png")
    comm, conversation = await _connect(user)

    await _send(comm, "Both", [one, two])
    frames = await receive_until(comm, "composer-error")

    assert "at most 1 attachments" in frames
    assert not await Message.objects.filter(conversation=conversation).aexists()
    await comm.disconnect()


async def test_switching_to_a_model_without_vision_refuses_a_turn_that_would_resend_images(
    upstream: FakeUpstream, user: Any, text_only_model: str
) -> None:
    upstream.enqueue(Stream(gateway_chunks(["A cat."])))
    image = await _upload(user, files.png(), "cat.png")
    comm, conversation = await _connect(user)
    await _send(comm, "What is this?", [image])
    await receive_until(comm, "A cat.")
    await _finish_all()

    await _send(comm, "And now?", [], model=text_only_model)
    frames = await receive_until(comm, "composer-error")

    assert "already holds files" in frames
    assert "Text-only model cannot read images" in frames
    assert len(upstream.streamed_requests) == 1
    assert await Message.objects.filter(conversation=conversation).acount() == 2
    await comm.disconnect()


async def test_an_edit_for_a_model_without_vision_must_drop_the_image(
    upstream: FakeUpstream, user: Any, text_only_model: str
) -> None:
    upstream.enqueue(Stream(gateway_chunks(["A cat."])))
    image = await _upload(user, files.png(), "cat.png")
    comm, conversation = await _connect(user)
    await _send(comm, "What is this?", [image])
    await receive_until(comm, "A cat.")
    await _finish_all()
    first = await Message.objects.aget(conversation=conversation, role="user")
    edit = {
        **SEND,
        "action": "edit",
        "message_id": str(first.id),
        "message": "Describe it",
        "model": text_only_model,
    }

    await comm.send_to(text_data=json.dumps(edit))
    frames = await receive_until(comm, "composer-error")
    assert "Text-only model cannot read images" in frames
    assert await Message.objects.filter(conversation=conversation).acount() == 2

    upstream.enqueue(Stream(gateway_chunks(["Text only."])))
    await comm.send_to(text_data=json.dumps({**edit, "keep_attachments": []}))
    await receive_until(comm, "Text only.")
    await _finish_all()
    [_, request] = upstream.streamed_requests
    assert request.json["messages"] == [{"role": "user", "content": "Describe it"}]
    await comm.disconnect()


# --- Every way a reply is asked for checks the files its request carries again ------------


async def _conversation_with_image(
    user: Any, *, model: str = MODEL, status: str = "complete"
) -> tuple[Any, Message]:
    """A conversation whose first message carries an image, answered (or failed, stopped)."""
    image = await _upload(user, files.png(), "cat.png")
    conversation = await database_sync_to_async(conversation_create)(owner=user)
    started = await database_sync_to_async(turn_with_attachments)(
        conversation, "What is this?", [image], model=model
    )
    outcome = {"status": status} if status != "complete" else {}
    reply = await database_sync_to_async(finish)(started.reply, "A cat, I think", **outcome)
    return conversation, reply


async def _refused(user: Any, conversation: Any, frame: dict[str, Any]) -> str:
    comm = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/c/{conversation.id}/")
    comm.scope["user"] = user
    assert (await comm.connect())[0]
    await comm.send_to(text_data=json.dumps(frame))
    frames = await receive_until(comm, "composer-error")
    await comm.disconnect()
    return frames


@pytest.mark.parametrize(
    ("action", "status"), [("regenerate", "complete"), ("continue", "stopped")]
)
async def test_regenerate_and_continue_on_a_model_without_vision_are_refused_in_words(
    upstream: FakeUpstream, user: Any, text_only_model: str, action: str, status: str
) -> None:
    conversation, reply = await _conversation_with_image(user, status=status)
    before = await Message.objects.filter(conversation=conversation).acount()

    frame = {**CONTROLS, "action": action, "message_id": str(reply.id), "model": text_only_model}
    frames = await _refused(user, conversation, frame)

    assert "already holds files" in frames
    assert "Text-only model cannot read images" in frames
    assert await Message.objects.filter(conversation=conversation).acount() == before
    assert upstream.streamed_requests == []


async def test_retry_refuses_once_the_model_no_longer_reads_images(
    upstream: FakeUpstream, user: Any, settings: Any, tmp_path: Any
) -> None:
    models = tmp_path / "models.json"
    entry = {"id": TEXT_ONLY, "kind": "claude-4", "display_name": "Text-only model"}
    models.write_text(json.dumps([entry]))
    settings.CHAT_MODELS_FILE = str(models)
    conversation, failed = await _conversation_with_image(user, model=TEXT_ONLY, status="error")
    # The operator learns the model reads no images.
    models.write_text(json.dumps([{**entry, "vision": False}]))

    frame = {**CONTROLS, "action": "retry", "message_id": str(failed.id)}
    frames = await _refused(user, conversation, frame)

    assert "Text-only model cannot read images" in frames
    assert await Message.objects.filter(conversation=conversation).acount() == 2
    assert upstream.streamed_requests == []


async def test_editing_a_later_message_checks_the_files_of_earlier_turns(
    upstream: FakeUpstream, user: Any, text_only_model: str
) -> None:
    conversation, _ = await _conversation_with_image(user)
    later = await database_sync_to_async(turn_with_attachments)(conversation, "And this?", [])
    await database_sync_to_async(finish)(later.reply, "Still a cat.")

    frame = {
        **CONTROLS,
        "action": "edit",
        "message_id": str(later.user_message.id),
        "message": "Describe it",
        "model": text_only_model,
    }
    frames = await _refused(user, conversation, frame)

    assert "already holds files" in frames
    assert "Text-only model cannot read images" in frames
    assert await Message.objects.filter(conversation=conversation).acount() == 4
    assert upstream.streamed_requests == []


async def test_regenerate_checks_the_request_limits_again(
    upstream: FakeUpstream, user: Any, settings: Any
) -> None:
    conversation, reply = await _conversation_with_image(user)
    settings.CHAT_ATTACHMENT_MAX_BYTES_PER_REQUEST = 100

    frame = {**CONTROLS, "action": "regenerate", "message_id": str(reply.id)}
    frames = await _refused(user, conversation, frame)

    assert "more than the 100 bytes a request may carry" in frames
    assert await Message.objects.filter(conversation=conversation).acount() == 2
    assert upstream.streamed_requests == []


async def test_a_send_over_the_request_count_is_refused(
    upstream: FakeUpstream, user: Any, settings: Any
) -> None:
    conversation, _ = await _conversation_with_image(user)
    settings.CHAT_ATTACHMENT_MAX_PER_REQUEST = 1
    second = await _upload(user, files.png(7, 7), "dog.png")

    frame = {**SEND, "message": "And this one?", "attachments": str(second.id)}
    frames = await _refused(user, conversation, frame)

    assert "would send 2 attachments with this reply; a request may carry at most 1" in frames
    assert await Message.objects.filter(conversation=conversation).acount() == 2
    assert (await Attachment.objects.aget(id=second.id)).sent_at is None


# --- Files without words --------------------------------------------------------------


@pytest.mark.parametrize("style", ["openai", "anthropic"])
async def test_files_can_be_sent_without_words(
    upstream: FakeUpstream, user: Any, settings: Any, style: str
) -> None:
    settings.CHAT_REQUEST_STYLE = style
    upstream.enqueue(Stream(gateway_chunks(["A report."])))
    document = await _upload(user, files.pdf(pages=3), "report.pdf")
    comm, conversation = await _connect(user)

    await _send(comm, "", [document])
    await receive_until(comm, 'data-role="assistant" data-status="complete"')
    await _finish_all()

    [request] = upstream.streamed_requests
    [user_turn] = [m for m in request.json["messages"] if m["role"] == "user"]
    # The document and the line naming it; no empty text part (Anthropic refuses one).
    assert [p["type"] for p in user_turn["content"]] == [
        "file" if style == "openai" else "document",
        "text",
    ]
    assert user_turn["content"][-1]["text"] == "Attached files: report.pdf (PDF, 3 pages)"
    saved = await Message.objects.aget(conversation=conversation, role="user")
    assert (saved.content, saved.attachment_count) == ("", 1)
    await comm.disconnect()


async def test_no_words_and_no_files_is_still_refused(upstream: FakeUpstream, user: Any) -> None:
    comm, conversation = await _connect(user)

    await _send(comm, "  ", [])
    frames = await receive_until(comm, "composer-error")

    assert "Type a message before sending." in frames
    assert not await Message.objects.filter(conversation=conversation).aexists()
    await comm.disconnect()


async def test_an_edit_may_keep_only_the_files(upstream: FakeUpstream, user: Any) -> None:
    conversation, _ = await _conversation_with_image(user)
    first = await Message.objects.aget(conversation=conversation, role="user")
    edit = {**CONTROLS, "action": "edit", "message_id": str(first.id), "message": ""}

    frames = await _refused(user, conversation, {**edit, "keep_attachments": []})
    assert "Type a message before sending." in frames
    assert await Message.objects.filter(conversation=conversation).acount() == 2

    upstream.enqueue(Stream(gateway_chunks(["Just the cat."])))
    comm = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/c/{conversation.id}/")
    comm.scope["user"] = user
    assert (await comm.connect())[0]
    await comm.send_to(text_data=json.dumps(edit))
    await receive_until(comm, "Just the cat.")
    await _finish_all()
    await comm.disconnect()

    [request] = upstream.streamed_requests
    [user_turn] = request.json["messages"]
    assert [p["type"] for p in user_turn["content"]] == ["image_url", "text"]
    edited = await Message.objects.filter(role="user").order_by("-created_at").afirst()
    assert edited is not None and (edited.content, edited.attachment_count) == ("", 1)
