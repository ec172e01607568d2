"""The context meter, and the two ways on when a conversation outgrows its model's context."""

import json
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.urls import reverse

from conversations.attachments import services as attachment_services
from conversations.catalogue import context
from conversations.chat import selectors as chat_selectors
from conversations.chat import services
from conversations.gateway.profiles import SONNET_4_6
from conversations.models import Conversation, Message
from conversations.realtime import runtime
from tests.support import attachment_files as files
from tests.support.sockets import (
    SEND,
    communicator_for,
    receive_until,
)
from tests.support.transcripts import add_turn
from tests.support.upstream_server import ErrorReply, FakeUpstream, completion_reply

# About 57k tokens each by the page's estimate (3.5 characters a token).
LONG = "word " * 40_000


@pytest.fixture
def keyed(settings) -> None:
    settings.AIMLAPI_API_KEY = "sk-test-context"
    settings.CHAT_MODELS_REFRESH_SECONDS = 0


def conversation_with(user: Any, *turns: tuple[str, str], prompt_tokens: int) -> Conversation:
    conversation = Conversation.objects.create(owner=user, model=SONNET_4_6.id)
    for question, answer in turns:
        reply = add_turn(conversation, question, answer)
    Message.objects.filter(id=reply.id).update(
        model=SONNET_4_6.id, prompt_tokens=prompt_tokens, completion_tokens=300
    )
    conversation.refresh_from_db()
    return conversation


@pytest.mark.django_db
def test_the_page_shows_how_much_context_the_next_turn_uses(keyed, user, owner_client) -> None:
    conversation = conversation_with(user, ("Hi", "Hello"), prompt_tokens=141_500)

    page = owner_client.get(reverse("conversation", args=[conversation.id])).content.decode()

    # The last reply's prompt and answer: 141,800 of Sonnet 4.6's 200,000.
    assert '<span id="context-meter-label">142k of 200k</span>' in page
    meter = owner_client.get(reverse("conversation_context", args=[conversation.id]))
    assert 'data-used="141800" data-window="200000"' in meter.content.decode()


@pytest.mark.django_db
def test_the_meter_follows_the_picked_model(keyed, user, owner_client, settings, tmp_path) -> None:
    path = tmp_path / "models.json"
    path.write_text(json.dumps([{"id": "anthropic/claude-sonnet-5", "kind": "adaptive"}]))
    settings.CHAT_MODELS_FILE = str(path)
    conversation = conversation_with(user, ("Hi", "Hello"), prompt_tokens=141_500)

    meter = owner_client.get(
        reverse("conversation_context", args=[conversation.id]),
        {"model": "anthropic/claude-sonnet-5"},
    )

    assert "142k of 1M" in meter.content.decode()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_turn_that_would_not_fit_is_not_sent_and_the_two_ways_on_are_offered(
    keyed, upstream: FakeUpstream, user: Any
) -> None:
    conversation = await database_sync_to_async(conversation_with)(
        user, ("Hi", "Hello"), prompt_tokens=199_000
    )
    comm = communicator_for(user, conversation)
    await comm.connect()

    await comm.send_to(text_data=json.dumps({**SEND, "model": SONNET_4_6.id}))
    frame = await receive_until(comm, "context-offers")

    assert "This conversation no longer fits in the model&#x27;s context (199k of 200k" in frame
    assert "Continue in a new conversation from a summary" in frame
    assert "Leave the oldest turns out" in frame
    assert upstream.requests == []
    assert await Message.objects.filter(conversation=conversation).acount() == 2
    await comm.disconnect()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_turn_whose_files_would_not_fit_gets_the_two_ways_on_not_a_gateway_error(
    keyed, upstream: FakeUpstream, user: Any, settings: Any, tmp_path: Any
) -> None:
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": tmp_path / "media", "base_url": None},
        },
    }
    # 150,300 tokens used: the words of the message fit, its 17 PDF pages (about 51k) do not.
    conversation = await database_sync_to_async(conversation_with)(
        user, ("Hi", "Hello"), prompt_tokens=150_000
    )
    report = await database_sync_to_async(attachment_services.attachment_upload)(
        owner=user, data=files.pdf(pages=17), filename="report.pdf"
    )
    comm = communicator_for(user, conversation)
    await comm.connect()

    await comm.send_to(
        text_data=json.dumps({**SEND, "model": SONNET_4_6.id, "attachments": [str(report.id)]})
    )
    frame = await receive_until(comm, "context-offers")

    assert "This conversation no longer fits in the model&#x27;s context (150k of 200k" in frame
    assert upstream.requests == []
    assert await Message.objects.filter(conversation=conversation).acount() == 2
    await comm.disconnect()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_leaving_the_oldest_turns_out_is_marked_and_sent_without_them(
    keyed, upstream: FakeUpstream, user: Any, client
) -> None:
    conversation = await database_sync_to_async(conversation_with)(
        user,
        ("First question", LONG),
        ("Second question", LONG),
        ("Third question", "Short answer"),
        prompt_tokens=199_000,
    )
    await database_sync_to_async(client.force_login)(user)

    response = await database_sync_to_async(client.post)(
        reverse("conversation_context_trim", args=[conversation.id]),
        {"message": "Fourth question", "max_tokens": "4096"},
    )

    body = response.content.decode()
    assert "The first 2 messages of this conversation are now left out" in body
    page = await database_sync_to_async(client.get)(reverse("conversation", args=[conversation.id]))
    transcript = page.content.decode()
    note = transcript.index("The messages before this one are left out of what the model sees")
    assert transcript.index("First question") < note < transcript.index("Second question")

    comm = communicator_for(user, conversation)
    await comm.connect()
    await comm.send_to(
        text_data=json.dumps({**SEND, "message": "Fourth question", "model": SONNET_4_6.id})
    )
    await receive_until(comm, 'data-status="streaming"')
    for task in runtime.current().generation_tasks():
        await task
    await comm.disconnect()

    sent = [m["content"] for m in upstream.streamed_requests[0].json["messages"]]
    assert sent == ["Second question", LONG, "Third question", "Short answer", "Fourth question"]


@pytest.mark.django_db(transaction=True)
def test_a_new_conversation_starts_from_the_edited_summary(
    keyed, upstream: FakeUpstream, user, owner_client
) -> None:
    conversation = conversation_with(
        user, ("Plan a trip to Lisbon", "Day 1: Alfama."), prompt_tokens=199_000
    )
    conversation.system_prompt = "Answer briefly."
    conversation.save()
    upstream.enqueue(completion_reply("- Trip to Lisbon, day 1 planned (Alfama)."))

    offered = owner_client.post(reverse("conversation_context_summary", args=[conversation.id]))

    assert "- Trip to Lisbon, day 1 planned (Alfama)." in offered.content.decode()
    request = upstream.requests[0].json
    assert request["stream"] is False
    assert request["model"] == SONNET_4_6.id
    assert "Plan a trip to Lisbon" in request["messages"][-1]["content"]

    started = owner_client.post(
        reverse("conversation_context_continue", args=[conversation.id]),
        {"summary": "Lisbon trip: day 1 in Alfama; next, Belém."},
    )

    created = Conversation.objects.exclude(id=conversation.id).get(owner=user)
    assert started["HX-Redirect"] == reverse("conversation", args=[created.id])
    assert created.model == SONNET_4_6.id
    assert created.system_prompt == (
        f"Answer briefly.\n\n{context.SUMMARY_NOTE}\nLisbon trip: day 1 in Alfama; next, Belém."
    )
    assert not created.messages.exists()
    # The old conversation is untouched: nothing is dropped.
    assert conversation.messages.count() == 2


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_the_gateways_prompt_too_long_leads_to_the_same_offers(
    keyed, upstream: FakeUpstream, user: Any, client
) -> None:
    conversation = await database_sync_to_async(conversation_with)(
        user, ("Hi", "Hello"), prompt_tokens=100
    )
    upstream.enqueue(
        ErrorReply(
            400,
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": "prompt is too long: 212000 tokens > 200000 maximum",
                },
            },
        )
    )
    comm = communicator_for(user, conversation)
    await comm.connect()
    await comm.send_to(text_data=json.dumps({**SEND, "model": SONNET_4_6.id}))
    frames = await receive_until(comm, 'data-status="error"')
    await comm.disconnect()

    assert "the prompt is 212,000 tokens and the model reads at most 200,000" in frames
    assert "data-context-overflow" in frames
    await database_sync_to_async(client.force_login)(user)
    offers = await database_sync_to_async(client.get)(
        reverse("conversation_context_offers", args=[conversation.id])
    )
    assert "Leave the oldest turns out" in offers.content.decode()


def _send(conversation: Conversation, user: Any, content: str) -> None:
    services.turn_start(
        conversation_id=conversation.id,
        owner=user,
        content=content,
        settings=services.TurnSettings(max_tokens=100),
        model=SONNET_4_6.id,
    )
    conversation.refresh_from_db()


@pytest.mark.django_db
def test_the_meter_counts_what_is_new_after_the_last_measured_reply(keyed, user) -> None:
    conversation = conversation_with(user, ("Hi", "Hello"), prompt_tokens=1000)
    _send(conversation, user, "x" * 3500)

    usage = context.context_usage_for(conversation=conversation)

    # 1000 prompt + 300 answer, then the new 3,500-character message, about 1000 tokens.
    assert usage.used == 2300
    assert usage.fits(new_text="", max_tokens=200_000 - 2300)
    assert not usage.fits(new_text="y", max_tokens=200_000 - 2300)


@pytest.mark.django_db
def test_the_meter_reads_back_only_to_the_newest_measured_reply(keyed, user) -> None:
    turns = [(f"Question {n}", f"Answer {n}") for n in range(30)]
    conversation = conversation_with(user, *turns, prompt_tokens=1000)
    _send(conversation, user, "x" * 35)

    tail = chat_selectors.context_tail(conversation=conversation)

    # The new message and its empty streaming reply, not the 60 messages before them.
    assert (tail.measured_prompt_tokens, tail.measured_completion_tokens) == (1000, 300)
    assert tail.lengths == [35, 0]
    assert context.context_usage_for(conversation=conversation).used == 1000 + 300 + 10


@pytest.mark.django_db
def test_without_a_measured_reply_the_meter_estimates_the_whole_branch(keyed, user) -> None:
    conversation = Conversation.objects.create(owner=user, model=SONNET_4_6.id, system_prompt="s")
    for n in range(30):
        add_turn(conversation, f"Question {n:02}", "A" * 7)
    # As from a gateway that reports no usage.
    conversation.messages.update(prompt_tokens=None, completion_tokens=None)
    conversation.refresh_from_db()

    tail = chat_selectors.context_tail(conversation=conversation)

    assert tail.measured_prompt_tokens is None
    assert tail.lengths == [11, 7] * 30
    # 1 for the system prompt, then 4 + 2 tokens a turn.
    assert context.context_usage_for(conversation=conversation).used == 1 + 30 * 6
