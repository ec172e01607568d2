"""The usage ledger: quotas and totals that deleting cannot reset, reservations that hold under
concurrency, copies that cost nothing, and stopped replies that are charged."""

import json
import threading
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import Permission
from django.db import OperationalError
from django.test import Client
from django.urls import reverse

from conversations.accounts import limits
from conversations.chat import services
from conversations.chat.services import conversation_create
from conversations.models import Conversation, Message, UsageRecord, UserQuota
from conversations.sharing import services as sharing_services
from conversations.sharing.services import ShareOptions
from tests.support.sockets import (
    SEND,
    communicator_for,
    finished,
    receive_until,
)
from tests.support.threads import race
from tests.support.transcripts import add_turn
from tests.support.upstream_server import FakeUpstream, Gate, Hold, Stream, gateway_chunks

TURN = services.TurnSettings(
    sampling="default", temperature=1.0, top_p=1.0, reasoning_effort="off", max_tokens=15
)


def send_and_finish(user: Any, *, prompt_tokens: int = 5, completion_tokens: int = 10) -> Message:
    conversation = conversation_create(owner=user)
    reply = services.turn_start(
        conversation_id=conversation.id, owner=user, content="hi", settings=TURN, model="m"
    ).reply
    services.reply_finish(
        message_id=reply.id,
        outcome=services.ReplyOutcome(
            status="complete",
            content="ok",
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        ),
    )
    return reply


@pytest.mark.django_db
def test_deleting_conversations_does_not_reset_the_daily_quota(user: Any, settings: Any) -> None:
    settings.CHAT_DAILY_MESSAGE_QUOTA = 3
    for _ in range(3):
        reply = send_and_finish(user)
        services.conversation_delete(conversation_id=reply.conversation_id, owner=user)

    # Before the ledger, every round of send-three-then-delete was accepted.
    with pytest.raises(services.TurnRefused, match="You have used all 3 messages for today"):
        send_and_finish(user)
    assert limits.quota_usage_for_user(user=user).messages_today == 3


@pytest.mark.django_db
def test_deleting_conversations_does_not_reset_the_token_quota(user: Any, settings: Any) -> None:
    settings.CHAT_DAILY_TOKEN_QUOTA = 30
    for _ in range(2):
        reply = send_and_finish(user, prompt_tokens=5, completion_tokens=10)
        services.conversation_delete(conversation_id=reply.conversation_id, owner=user)

    with pytest.raises(services.TurnRefused, match="used all 30 tokens"):
        send_and_finish(user)


@pytest.mark.django_db
def test_admin_totals_keep_deleted_conversations_and_deleted_users(
    make_user: Any, fast_password_hashing: None
) -> None:
    leaver = make_user("leaver")
    reply = send_and_finish(leaver, prompt_tokens=100, completion_tokens=23)
    services.conversation_delete(conversation_id=reply.conversation_id, owner=leaver)
    leaver.delete()
    staff = make_user("staff", is_staff=True)
    staff.user_permissions.set(Permission.objects.filter(codename="view_conversation"))
    client = Client()
    client.force_login(staff)

    page = client.get(reverse("admin:conversations_conversation_usage"))

    (row,) = page.context["per_user"]
    assert (row["username"], row["deleted"], row["tokens"], row["replies"]) == (
        "leaver",
        True,
        123,
        1,
    )
    assert "leaver <em>(deleted user)</em>" in page.content.decode()
    assert page.context["points"][-1][1] == 123


@pytest.mark.django_db(transaction=True)
def test_concurrent_replies_cannot_overrun_the_token_quota(user: Any, settings: Any) -> None:
    """20 replies started at the same instant against a 100-token quota, each writing its
    full 15 tokens: before reservations all 20 started and used 300 tokens."""
    settings.CHAT_DAILY_TOKEN_QUOTA = 100
    settings.CHAT_RATE_LIMIT_PER_MINUTE = 0
    settings.CHAT_DAILY_MESSAGE_QUOTA = 0
    conversations = [conversation_create(owner=user) for _ in range(20)]
    targets = iter(conversations)
    pick = threading.Lock()
    started: list[Message] = []

    def start() -> None:
        with pick:
            conversation = next(targets)
        reply = services.turn_start(
            conversation_id=conversation.id, owner=user, content="go", settings=TURN, model="m"
        ).reply
        started.append(reply)

    outcomes = race(start, 20)
    # Only now do the replies finish, each using all it may.
    for reply in started:
        services.reply_finish(
            message_id=reply.id,
            outcome=services.ReplyOutcome(
                status="complete", content="x", prompt_tokens=0, completion_tokens=15
            ),
        )

    assert all(
        isinstance(o, services.TurnRefused | OperationalError) for o in outcomes if o is not None
    )
    used = limits.quota_usage_for_user(user=user).tokens_today
    # All that is allowed past the quota is one reply's max_tokens.
    assert used <= 100 + TURN.max_tokens
    assert len(started) >= 1
    assert UsageRecord.objects.filter(settled_at__isnull=True).count() == 0


@pytest.mark.django_db
def test_a_second_reply_waits_while_the_first_holds_the_rest_of_the_quota(
    user: Any, settings: Any
) -> None:
    settings.CHAT_DAILY_TOKEN_QUOTA = 20
    first = conversation_create(owner=user)
    services.turn_start(conversation_id=first.id, owner=user, content="a", settings=TURN, model="m")
    second = conversation_create(owner=user)

    with pytest.raises(services.TurnRefused, match="still being written"):
        services.turn_start(
            conversation_id=second.id, owner=user, content="b", settings=TURN, model="m"
        )
    assert limits.quota_usage_for_user(user=user).tokens_reserved == 15


@pytest.mark.django_db
def test_a_reply_that_stopped_streaming_without_settling_holds_no_reservation(
    user: Any, settings: Any
) -> None:
    settings.CHAT_DAILY_TOKEN_QUOTA = 20
    first = conversation_create(owner=user)
    reply = services.turn_start(
        conversation_id=first.id, owner=user, content="a", settings=TURN, model="m"
    ).reply
    # What the recovery sweep does to a reply whose process died.
    Message.objects.filter(id=reply.id).update(status=Message.Status.INTERRUPTED)

    assert limits.quota_usage_for_user(user=user).tokens_reserved == 0
    second = conversation_create(owner=user)
    services.turn_start(
        conversation_id=second.id, owner=user, content="b", settings=TURN, model="m"
    )


@pytest.mark.django_db
def test_continuing_a_shared_conversation_is_not_a_sent_message(
    make_user: Any, settings: Any
) -> None:
    settings.CHAT_RATE_LIMIT_PER_MINUTE = 2
    settings.CHAT_DAILY_MESSAGE_QUOTA = 500
    author, reader = make_user("author"), make_user("reader")
    shared = Conversation.objects.create(owner=author, title="Recipes")
    for i in range(8):
        add_turn(shared, f"question {i}", f"answer {i}")
    link, _ = sharing_services.share_link_create(
        conversation_id=shared.id, user=author, options=ShareOptions()
    )

    for _ in range(3):
        sharing_services.conversation_create_from_share(link=link, owner=reader)

    usage = limits.quota_usage_for_user(user=reader)
    assert (usage.messages_today, usage.messages_last_minute) == (0, 0)
    # Her own first message is not "too quick".
    send_and_finish(reader)
    assert limits.quota_usage_for_user(user=reader).messages_left_today == 499


@pytest.mark.django_db
def test_staff_can_add_a_quota_for_someone_who_has_chatted(
    make_user: Any, user: Any, fast_password_hashing: None
) -> None:
    send_and_finish(user)
    # Before: the first message created a blank quota row, so Add failed as a duplicate.
    assert not UserQuota.objects.filter(user=user).exists()
    boss = make_user("boss", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(boss)

    response = client.post(
        "/admin/conversations/userquota/add/",
        {"user": user.pk, "messages_per_day": 50, "tokens_per_day": "", "note": "trial"},
    )

    assert response.status_code == 302
    assert UserQuota.objects.get(user=user).messages_per_day == 50


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_stopped_reply_is_charged_an_estimate_marked_as_such(
    upstream: FakeUpstream, user: Any
) -> None:
    gate = Gate()
    upstream.enqueue(Stream([*gateway_chunks(["partial text "])[:1], Hold(gate)]))
    conversation = await database_sync_to_async(conversation_create)(owner=user)
    comm = communicator_for(user, conversation)
    await comm.connect()
    await comm.send_to(text_data=json.dumps(SEND))
    await receive_until(comm, "partial")

    await comm.send_to(text_data=json.dumps({"action": "stop"}))
    await receive_until(comm, 'data-status="stopped"')
    gate.release()
    reply = await finished(conversation)

    assert reply.status == Message.Status.STOPPED
    # Before: no tokens at all, so a stopped reply cost the quota nothing.
    assert reply.usage_estimated is True
    assert reply.completion_tokens and reply.completion_tokens >= 1
    assert reply.prompt_tokens and reply.prompt_tokens >= 1
    record = await UsageRecord.objects.aget(message_uuid=reply.id)
    assert record.estimated is True
    assert record.settled_at is not None
    assert record.completion_tokens == reply.completion_tokens
    usage = await database_sync_to_async(limits.quota_usage_for_user)(user=user)
    assert usage.tokens_today == reply.prompt_tokens + reply.completion_tokens
    await comm.disconnect()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_reply_with_reported_usage_is_not_marked_estimated(
    upstream: FakeUpstream, user: Any
) -> None:
    upstream.enqueue(Stream(gateway_chunks(["all of it"])))
    conversation = await database_sync_to_async(conversation_create)(owner=user)
    comm = communicator_for(user, conversation)
    await comm.connect()
    await comm.send_to(text_data=json.dumps(SEND))
    await receive_until(comm, 'data-status="complete"')
    reply = await finished(conversation)

    record = await UsageRecord.objects.aget(message_uuid=reply.id)
    assert (reply.usage_estimated, record.estimated) == (False, False)
    assert record.prompt_tokens == reply.prompt_tokens is not None
    await comm.disconnect()
