"""Turns on each model, end to end through the socket: what the loopback gateway receives, and
what happens when a model retires (dates injected, no dependence on the real clock)."""

import datetime
import json
from decimal import Decimal
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import Permission
from django.template.loader import render_to_string
from django.test import Client
from django.urls import reverse

from conversations.catalogue import selectors as catalogue
from conversations.chat import selectors, services, titles
from conversations.gateway.profiles import BUILT_IN, OPUS_4_5, SONNET_4_5, SONNET_4_6
from conversations.models import Conversation, Message
from conversations.realtime import generation
from tests.support.factories import exchange, finish, turn_settings
from tests.support.sockets import (
    COMPLETE,
    SEND,
    communicator_for,
    finished,
    receive_until,
)
from tests.support.upstream_server import (
    ErrorReply,
    FakeUpstream,
    Stream,
    completion_reply,
    gateway_chunks,
)

SONNET_5 = "anthropic/claude-sonnet-5"
RETIRED_NOTE = "Claude Sonnet 4.5 was retired on 30 Nov 2026; this reply is from Claude Sonnet 4.6."


@pytest.fixture
def adaptive_file(settings, tmp_path) -> None:
    """The operator maps an id the built-ins do not know to the adaptive kind."""
    path = tmp_path / "models.json"
    path.write_text(
        json.dumps(
            {"models": [{"id": SONNET_5, "kind": "adaptive", "display_name": "Claude Sonnet 5"}]}
        )
    )
    settings.CHAT_MODELS_FILE = str(path)


def on_day(monkeypatch, day: datetime.date) -> None:
    monkeypatch.setattr(catalogue, "today", lambda: day)


async def conversation_on(user: Any, model: str) -> Conversation:
    conversation = await database_sync_to_async(services.conversation_create)(owner=user)
    conversation.model = model
    await conversation.asave(update_fields=["model"])
    return conversation


async def send_and_finish(user: Any, conversation: Conversation, frame: dict[str, Any]) -> str:
    comm = communicator_for(user, conversation)
    await comm.connect()
    await comm.send_to(text_data=json.dumps(frame))
    frames = await receive_until(comm, COMPLETE)
    await finished(conversation)
    await comm.disconnect()
    return frames


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("profile", BUILT_IN, ids=lambda p: p.id)
async def test_each_claude_4_model_gets_its_sampling_and_thinking(
    upstream: FakeUpstream, user: Any, adaptive_file: None, profile
) -> None:
    conversation = await conversation_on(user, SONNET_4_6.id)

    await send_and_finish(
        user,
        conversation,
        {**SEND, "model": profile.id, "sampling": "top_p", "top_p": "0.97", "max_tokens": "2000"}
        | {"reasoning_effort": "low"},
    )

    body = upstream.streamed_requests[0].json
    assert body["model"] == profile.id
    assert body["top_p"] == 0.97
    assert body["reasoning_effort"] == "low"
    assert body["max_tokens"] == 2000
    assert "temperature" not in body
    reply = await Message.objects.aget(conversation=conversation, role=Message.Role.ASSISTANT)
    assert reply.model == profile.id
    assert reply.request_params == {"max_tokens": 2000, "top_p": 0.97, "reasoning_effort": "low"}


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_an_adaptive_model_is_sent_no_sampling_and_no_thinking(
    upstream: FakeUpstream, user: Any, adaptive_file: None
) -> None:
    conversation = await conversation_on(user, SONNET_4_6.id)

    await send_and_finish(user, conversation, {**SEND, "model": SONNET_5, "max_tokens": "100000"})

    body = upstream.streamed_requests[0].json
    assert body["model"] == SONNET_5
    assert body["max_tokens"] == 100_000
    for refused in ("temperature", "top_p", "top_k", "reasoning_effort", "thinking"):
        assert refused not in body
    await conversation.arefresh_from_db()
    assert conversation.model == SONNET_5


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_sampling_an_adaptive_model_refuses_is_explained_and_nothing_is_sent(
    upstream: FakeUpstream, user: Any, adaptive_file: None
) -> None:
    conversation = await conversation_on(user, SONNET_5)
    comm = communicator_for(user, conversation)
    await comm.connect()

    await comm.send_to(text_data=json.dumps({**SEND, "model": SONNET_5, "sampling": "temperature"}))
    frame = await comm.receive_from()

    assert "Temperature: Claude Sonnet 5 chooses its own sampling." in frame
    assert upstream.requests == []
    await comm.disconnect()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_model_not_offered_is_refused(upstream: FakeUpstream, user: Any) -> None:
    conversation = await conversation_on(user, SONNET_4_6.id)
    comm = communicator_for(user, conversation)
    await comm.connect()

    await comm.send_to(text_data=json.dumps({**SEND, "model": "openai/gpt-4o"}))
    frame = await comm.receive_from()

    assert "That model is not offered here" in frame
    assert upstream.requests == []
    await comm.disconnect()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_after_shutdown_a_turn_goes_to_the_replacement_with_a_note(
    upstream: FakeUpstream, user: Any, monkeypatch
) -> None:
    on_day(monkeypatch, datetime.date(2026, 12, 1))
    conversation = await conversation_on(user, SONNET_4_5.id)

    frames = await send_and_finish(
        user,
        conversation,
        {**SEND, "model": SONNET_4_5.id, "sampling": "temperature", "temperature": "0.4"},
    )

    body = upstream.streamed_requests[0].json
    assert body["model"] == SONNET_4_6.id
    assert body["temperature"] == 0.4
    assert RETIRED_NOTE in frames
    reply = await Message.objects.aget(conversation=conversation, role=Message.Role.ASSISTANT)
    assert (reply.model, reply.model_note) == (SONNET_4_6.id, RETIRED_NOTE)
    assert reply.request_params == {"max_tokens": 1000, "temperature": 0.4}
    await conversation.arefresh_from_db()
    assert conversation.model == SONNET_4_6.id


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_before_shutdown_the_model_is_used_as_chosen(
    upstream: FakeUpstream, user: Any, monkeypatch
) -> None:
    on_day(monkeypatch, datetime.date(2026, 11, 29))
    conversation = await conversation_on(user, SONNET_4_5.id)

    frames = await send_and_finish(user, conversation, {**SEND, "model": SONNET_4_5.id})

    assert upstream.streamed_requests[0].json["model"] == SONNET_4_5.id
    assert "was retired" not in frames


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_gateway_refusing_the_model_switches_once_with_the_note(
    upstream: FakeUpstream, user: Any, monkeypatch
) -> None:
    on_day(monkeypatch, datetime.date(2026, 12, 1))
    conversation = await conversation_on(user, SONNET_4_5.id)
    # The turn was planned before the shutdown (say, the site's clock was late): the gateway
    # is the one that says the model is gone.
    started = await database_sync_to_async(services.turn_start)(
        conversation_id=conversation.id,
        owner=user,
        content="Hello",
        settings=turn_settings(),
        model=SONNET_4_5.id,
    )
    await Message.objects.filter(id=started.reply.id).aupdate(
        model=SONNET_4_5.id, model_note="", request_params={"max_tokens": 1000}
    )
    upstream.enqueue(
        ErrorReply(
            404,
            {"error": {"message": "model: anthropic/claude-sonnet-4.5 not found", "code": 404}},
        ),
        Stream(gateway_chunks(["From the successor"])),
    )
    running = await generation.reply_generate(reply_id=started.reply.id)
    await running.task

    bodies = [r.json["model"] for r in upstream.streamed_requests]
    assert bodies == [SONNET_4_5.id, SONNET_4_6.id]
    reply = await Message.objects.aget(id=started.reply.id)
    assert reply.status == Message.Status.COMPLETE
    assert reply.content == "From the successor"
    assert (reply.model, reply.model_note) == (SONNET_4_6.id, RETIRED_NOTE)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_the_switch_happens_once_then_the_error_stands(
    upstream: FakeUpstream, user: Any, monkeypatch
) -> None:
    on_day(monkeypatch, datetime.date(2026, 11, 26))
    conversation = await conversation_on(user, SONNET_4_6.id)
    started = await database_sync_to_async(services.turn_start)(
        conversation_id=conversation.id,
        owner=user,
        content="Hello",
        settings=turn_settings(),
        model="anthropic/claude-gone",
    )
    gone = ErrorReply(404, {"message": "Model not found", "statusCode": 404})
    upstream.enqueue(gone, gone, gone)
    running = await generation.reply_generate(reply_id=started.reply.id)
    await running.task

    reply = await Message.objects.aget(id=started.reply.id)
    assert [r.json["model"] for r in upstream.streamed_requests] == [
        "anthropic/claude-gone",
        # CHAT_MODEL, the last fallback.
        SONNET_4_5.id,
    ]
    assert reply.status == Message.Status.ERROR
    assert reply.model_note == (
        "The gateway no longer offers anthropic/claude-gone; this reply is from Claude Sonnet 4.5."
    )


@pytest.mark.django_db
def test_the_operator_fallback_takes_a_model_without_a_replacement(settings, tmp_path) -> None:
    settings.AIMLAPI_API_KEY = "sk-test"
    settings.CHAT_FALLBACK_MODEL = OPUS_4_5.id
    path = tmp_path / "models.json"
    path.write_text(json.dumps([{"id": SONNET_4_6.id, "shutdown_at": "2026-12-10"}]))
    settings.CHAT_MODELS_FILE = str(path)
    current = catalogue.catalogue_current()

    plan = catalogue.turn_plan(
        settings=turn_settings(),
        chosen=SONNET_4_6.id,
        catalogue=current,
        on=datetime.date(2026, 12, 10),
    )

    assert plan.model == OPUS_4_5.id
    assert plan.note == (
        "Claude Sonnet 4.6 was retired on 10 Dec 2026; this reply is from Claude Opus 4.5."
    )


@pytest.mark.django_db
def test_a_retried_reply_after_shutdown_goes_to_the_replacement(
    settings, user, monkeypatch
) -> None:
    settings.AIMLAPI_API_KEY = "sk-test"
    on_day(monkeypatch, datetime.date(2026, 11, 20))
    conversation = services.conversation_create(owner=user)
    started = services.turn_start(
        conversation_id=conversation.id,
        owner=user,
        content="Hi",
        settings=turn_settings(sampling="top_p", top_p=0.9),
        model=SONNET_4_5.id,
    )
    finish(started.reply, "", status=Message.Status.ERROR, error="Overloaded")
    on_day(monkeypatch, datetime.date(2026, 12, 2))

    _, retry = services.reply_retry(
        conversation_id=conversation.id, message_id=started.reply.id, owner=user, model=""
    )

    assert (retry.model, retry.model_note) == (SONNET_4_6.id, RETIRED_NOTE)
    assert retry.request_params == {"max_tokens": 1000, "top_p": 0.9}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("day", "notice"),
    [
        (datetime.date(2026, 11, 15), None),
        (
            datetime.date(2026, 11, 16),
            "Claude Sonnet 4.5 retires on 30 Nov 2026; from then on replies come from "
            "Claude Sonnet 4.6.",
        ),
        (
            datetime.date(2026, 12, 1),
            "Claude Sonnet 4.5 was retired on 30 Nov 2026; your next reply will come from "
            "Claude Sonnet 4.6.",
        ),
    ],
)
def test_the_page_warns_from_14_days_before_shutdown(
    settings, owner_client, user, monkeypatch, day, notice
) -> None:
    settings.AIMLAPI_API_KEY = "sk-test"
    settings.CHAT_MODELS_REFRESH_SECONDS = 0
    on_day(monkeypatch, day)
    conversation = services.conversation_create(owner=user)
    Conversation.objects.filter(id=conversation.id).update(model=SONNET_4_5.id)

    page = owner_client.get(reverse("conversation", args=[conversation.id])).content.decode()

    if notice is None:
        assert 'id="model-notice"' not in page
    else:
        assert notice in page


@pytest.mark.django_db
def test_cost_is_estimated_only_when_the_gateway_gives_none(settings, user) -> None:
    settings.AIMLAPI_API_KEY = "sk-test"
    conversation = services.conversation_create(owner=user)

    def reply_with(**outcome: Any) -> Message:
        started = services.turn_start(
            conversation_id=conversation.id,
            owner=user,
            content="Hi",
            settings=turn_settings(),
            model=OPUS_4_5.id,
        )
        return finish(started.reply, "Hello", prompt_tokens=1000, completion_tokens=2000, **outcome)

    estimated = reply_with()
    reported = reply_with(cost_usd=Decimal("0.01"))

    assert (estimated.cost_usd, estimated.cost_estimated) == (Decimal("0.055"), True)
    assert (reported.cost_usd, reported.cost_estimated) == (Decimal("0.01"), False)
    html = render_to_string("chat/_message.html", {"message": estimated})
    assert "$0.0550 estimated" in html
    assert "estimated" not in render_to_string("chat/_message.html", {"message": reported})


@pytest.mark.django_db
def test_the_transcript_names_the_model_when_it_changes(settings, user) -> None:
    settings.AIMLAPI_API_KEY = "sk-test"
    conversation = services.conversation_create(owner=user)
    for model in (SONNET_4_6.id, SONNET_4_6.id, OPUS_4_5.id):
        started = services.turn_start(
            conversation_id=conversation.id,
            owner=user,
            content="Hi",
            settings=turn_settings(),
            model=model,
        )
        finish(started.reply, "Hello")
    conversation.refresh_from_db()
    replies = [
        m
        for m in selectors.thread_window(conversation=conversation).messages
        if m.role == "assistant"
    ]

    assert [m.model_changed for m in replies] == [False, False, True]
    assert replies[2].model_label == "Claude Opus 4.5"
    page = "".join(render_to_string("chat/_message.html", {"message": m}) for m in replies)
    assert page.count('class="message-model"') == 1
    # Rendered alone (the frame that replaces a finished reply), it still says so.
    alone = render_to_string(
        "chat/_message.html", {"message": Message.objects.get(id=replies[2].id)}
    )
    assert f'<p class="message-model" data-model="{OPUS_4_5.id}">{OPUS_4_5.id}</p>' in alone


@pytest.mark.django_db
def test_staff_filter_conversations_on_a_retiring_model(
    settings, make_user, monkeypatch, fast_password_hashing
) -> None:
    settings.AIMLAPI_API_KEY = "sk-test"
    on_day(monkeypatch, datetime.date(2026, 11, 20))
    owner = make_user("alice")
    Conversation.objects.create(owner=owner, title="On Sonnet 4.5", model=SONNET_4_5.id)
    Conversation.objects.create(owner=owner, title="On its alias", model="claude-sonnet-4-5")
    Conversation.objects.create(owner=owner, title="On Sonnet 4.6", model=SONNET_4_6.id)
    staff = make_user("staff", is_staff=True)
    staff.user_permissions.set(Permission.objects.filter(codename="view_conversation"))
    client = Client()
    client.force_login(staff)

    def titles(query: str) -> set[str]:
        # These conversations have no messages: the list hides empty ones unless asked.
        response = client.get(f"/admin/conversations/conversation/?empty=include&{query}")
        return {c.title for c in response.context["cl"].result_list}

    assert titles("model_retiring=yes") == {"On Sonnet 4.5", "On its alias"}
    assert titles("model_retiring=no") == {"On Sonnet 4.6"}


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_titles_use_the_replacement_of_a_retired_site_model(
    upstream: FakeUpstream, user: Any, monkeypatch
) -> None:
    on_day(monkeypatch, datetime.date(2026, 12, 1))
    upstream.enqueue(completion_reply("Capital of France"))
    conversation = await conversation_on(user, SONNET_4_6.id)
    await database_sync_to_async(exchange)(conversation, "Capital of France?", "Paris.")

    assert await titles.title_generate(conversation_id=conversation.id, owner_id=user.pk)

    assert upstream.requests[0].json["model"] == SONNET_4_6.id


@pytest.fixture
def retires_to_adaptive(settings, tmp_path) -> None:
    """The operator sends Sonnet 4.5's conversations to an adaptive model when it retires."""
    path = tmp_path / "models.json"
    path.write_text(
        json.dumps(
            {
                "models": [
                    {"id": SONNET_5, "kind": "adaptive", "display_name": "Claude Sonnet 5"},
                    {"id": SONNET_4_5.id, "replaced_by": SONNET_5},
                ]
            }
        )
    )
    settings.CHAT_MODELS_FILE = str(path)


@pytest.mark.django_db
def test_settings_the_replacement_does_not_take_are_named_on_the_reply(
    settings, user, owner_client, monkeypatch, retires_to_adaptive
) -> None:
    settings.AIMLAPI_API_KEY = "sk-test"
    settings.CHAT_MODELS_REFRESH_SECONDS = 0
    on_day(monkeypatch, datetime.date(2026, 12, 1))
    conversation = services.conversation_create(owner=user)

    started = services.turn_start(
        conversation_id=conversation.id,
        owner=user,
        content="Hi",
        settings=turn_settings(sampling="temperature", temperature=0.4, reasoning_effort="low"),
        model=SONNET_4_5.id,
    )

    reply = started.reply
    assert reply.model == SONNET_5
    assert reply.request_params == {"max_tokens": 1000}
    assert reply.request_notes == [
        "Temperature was not sent as set: Claude Sonnet 5 chooses its own sampling.",
        "Thinking was not sent as set: Claude Sonnet 5 decides for itself how much to think.",
    ]
    finish(reply, "Bonjour")
    page = owner_client.get(reverse("conversation", args=[conversation.id])).content.decode()
    assert "Temperature was not sent as set: Claude Sonnet 5 chooses its own sampling." in page
