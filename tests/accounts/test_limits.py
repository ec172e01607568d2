"""Abuse and bad input: length limits, malformed frames, rate limit, daily quotas, races."""

import asyncio
import datetime
import html
import json
import threading
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.db import OperationalError
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from playwright.sync_api import Page, expect

from conversations.accounts import limits
from conversations.chat import services
from conversations.chat.frames_in import FRAME_OVERHEAD_CHARS
from conversations.chat.services import conversation_create
from conversations.models import Conversation, Message, UsageRecord, UserQuota
from tests.conftest import DaphneServer, sign_in
from tests.support.sockets import (
    SEND,
    SOCKET_TIMEOUT,
    communicator_for,
    receive_until,
    wait_generations,
)
from tests.support.strategies import JSON_VALUES
from tests.support.threads import race
from tests.support.upstream_server import FakeUpstream, Gate, Hold, Stream, gateway_chunks

TURN_SETTINGS = services.TurnSettings(
    sampling="default", temperature=1.0, top_p=1.0, reasoning_effort="off", max_tokens=100
)


def start_turn(user: Any, conversation: Conversation | None = None) -> Message:
    conversation = conversation or conversation_create(owner=user)
    started = services.turn_start(
        conversation_id=conversation.id,
        owner=user,
        content="hi",
        settings=TURN_SETTINGS,
        model="m",
    )
    reply = started.reply
    # Finished, so that the one-reply-at-a-time rule does not interfere.
    services.reply_finish(
        message_id=reply.id, outcome=services.ReplyOutcome(status="complete", content="ok")
    )
    return reply


# Message length and frame size.


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_over_long_message_is_refused_clearly_and_nothing_saved(
    upstream: FakeUpstream, user: Any, settings: Any
) -> None:
    conversation = await database_sync_to_async(conversation_create)(owner=user)
    comm = communicator_for(user, conversation)
    await comm.connect(timeout=SOCKET_TIMEOUT)

    await comm.send_to(text_data=json.dumps({**SEND, "message": "x" * 100_001}))
    frame = html.unescape(await comm.receive_from(timeout=SOCKET_TIMEOUT))

    assert settings.CHAT_MAX_MESSAGE_CHARS == 100_000
    assert "That message is 100,001 characters long; the limit is 100,000." in frame
    assert await Message.objects.filter(conversation=conversation).acount() == 0
    assert upstream.requests == []
    await comm.disconnect()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_over_large_frame_is_refused_before_parsing(
    upstream: FakeUpstream, user: Any
) -> None:
    conversation = await database_sync_to_async(conversation_create)(owner=user)
    comm = communicator_for(user, conversation)
    await comm.connect(timeout=SOCKET_TIMEOUT)

    padding = "y" * (100_000 + FRAME_OVERHEAD_CHARS)
    await comm.send_to(text_data=json.dumps({**SEND, "client_token": padding}))
    frame = html.unescape(await comm.receive_from(timeout=SOCKET_TIMEOUT))

    assert "That message is too long: the limit is 100,000 characters. Nothing was sent." in frame
    assert await Message.objects.filter(conversation=conversation).acount() == 0
    await comm.send_to(text_data=json.dumps(SEND))
    await receive_until(comm, 'data-role="assistant" data-status="complete"')
    await comm.disconnect()


# Malformed frames: a property test.

KNOWN_KEYS = st.sampled_from(
    [
        "action",
        "message",
        "message_id",
        "sampling",
        "temperature",
        "top_p",
        "reasoning_effort",
        "max_tokens",
        "client_token",
    ]
)
ACTIONS = st.sampled_from(["send", "stop", "retry", "dance", "", "SEND", "__init__"]) | JSON_VALUES
FRAME_OBJECTS = st.dictionaries(KNOWN_KEYS | st.text(max_size=10), JSON_VALUES, max_size=6).flatmap(
    lambda extra: st.fixed_dictionaries({"action": ACTIONS}).map(lambda base: {**base, **extra})
)
# Near-valid sends, so the form's own validation is exercised field by field.
NEAR_SENDS = st.dictionaries(KNOWN_KEYS, JSON_VALUES, max_size=3).map(
    lambda override: {**SEND, **override}
)
RAW_FRAMES = (
    FRAME_OBJECTS.map(json.dumps)
    | NEAR_SENDS.map(json.dumps)
    | JSON_VALUES.map(json.dumps)
    | st.text(min_size=1, max_size=200)
    | st.binary(min_size=1, max_size=64)
)


@pytest.mark.django_db(transaction=True)
@hypothesis_settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(frames=st.lists(RAW_FRAMES, min_size=1, max_size=6))
def test_random_frames_never_break_the_socket_or_the_database(
    upstream: FakeUpstream, user: Any, frames: list[str | bytes]
) -> None:
    async def exchange() -> None:
        conversation = await database_sync_to_async(conversation_create)(owner=user)
        comm = communicator_for(user, conversation)
        assert (await comm.connect(timeout=SOCKET_TIMEOUT))[0]
        for index, frame in enumerate(frames):
            if isinstance(frame, bytes):
                await comm.send_to(bytes_data=frame)
            else:
                await comm.send_to(text_data=frame)
            # A sentinel after each frame: its answer proves the socket still reads frames.
            await comm.send_to(text_data=json.dumps({"action": f"sentinel-{index}"}))
            await receive_until(comm, f"sentinel-{index}")
        await wait_generations()
        await comm.disconnect()

        messages = [m async for m in Message.objects.filter(conversation=conversation)]
        users = [m for m in messages if m.role == Message.Role.USER]
        replies = [m for m in messages if m.role == Message.Role.ASSISTANT]
        # Each accepted send is one user message and one finished reply; nothing half-saved.
        assert len(users) == len(replies)
        assert all(r.status != Message.Status.STREAMING for r in replies)
        assert all(r.parent_id in {u.id for u in users} for r in replies)

    async_to_sync(exchange)()


# One generation at a time per conversation.


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_two_sends_at_once_from_two_sockets_make_exactly_one_reply(
    upstream: FakeUpstream, user: Any
) -> None:
    gate = Gate()
    upstream.enqueue(Stream([*gateway_chunks(["only one"])[:1], Hold(gate)]))
    conversation = await database_sync_to_async(conversation_create)(owner=user)
    first, second = communicator_for(user, conversation), communicator_for(user, conversation)
    await first.connect(timeout=SOCKET_TIMEOUT)
    await second.connect(timeout=SOCKET_TIMEOUT)

    await asyncio.gather(
        first.send_to(text_data=json.dumps({**SEND, "message": "from tab one"})),
        second.send_to(text_data=json.dumps({**SEND, "message": "from tab two"})),
    )
    answers = await asyncio.gather(
        receive_until(first, "composer-"), receive_until(second, "composer-")
    )

    refused = [a for a in answers if "still being written" in a]
    assert len(refused) == 1
    await asyncio.to_thread(gate.wait_reached)
    gate.release()
    for comm in (first, second):
        await receive_until(comm, 'data-role="assistant" data-status="complete"')
    await wait_generations()
    assert await Message.objects.filter(conversation=conversation).acount() == 2
    assert len(upstream.streamed_requests) == 1
    await first.disconnect()
    await second.disconnect()


@pytest.mark.django_db(transaction=True)
def test_concurrent_turns_in_one_conversation_start_exactly_one_reply(user: Any) -> None:
    conversation = conversation_create(owner=user)

    def send() -> None:
        services.turn_start(
            conversation_id=conversation.id,
            owner=user,
            content="race",
            settings=TURN_SETTINGS,
            model="m",
        )

    outcomes = race(send, 4)

    assert Message.objects.filter(role=Message.Role.ASSISTANT).count() == 1
    assert Message.objects.filter(role=Message.Role.USER).count() == 1
    # PostgreSQL refuses the losers cleanly; SQLite may report its lock instead.
    assert all(
        isinstance(o, services.TurnRefused | OperationalError) for o in outcomes if o is not None
    )
    assert sum(o is None for o in outcomes) == 1


@pytest.mark.django_db(transaction=True)
def test_rate_limit_holds_across_concurrent_sends_in_different_conversations(
    user: Any, settings: Any
) -> None:
    settings.CHAT_RATE_LIMIT_PER_MINUTE = 2
    conversations = [conversation_create(owner=user) for _ in range(5)]
    targets = iter(conversations)
    lock = threading.Lock()

    def send() -> None:
        with lock:
            conversation = next(targets)
        services.turn_start(
            conversation_id=conversation.id,
            owner=user,
            content="race",
            settings=TURN_SETTINGS,
            model="m",
        )

    race(send, 5)

    assert Message.objects.filter(role=Message.Role.ASSISTANT).count() <= 2


# Rate limit and quotas.


@pytest.mark.django_db
def test_rate_limit_per_minute(user: Any, settings: Any) -> None:
    settings.CHAT_RATE_LIMIT_PER_MINUTE = 2
    start_turn(user)
    start_turn(user)

    with pytest.raises(
        services.TurnRefused, match=r"too quickly: the limit is 2 messages per minute"
    ):
        start_turn(user)
    assert Message.objects.count() == 4

    # A minute later the window has moved on.
    UsageRecord.objects.update(started_at=timezone.now() - datetime.timedelta(seconds=61))
    start_turn(user)


@pytest.mark.django_db
def test_daily_message_quota_and_what_the_page_says(user: Any, settings: Any, client: Any) -> None:
    settings.CHAT_DAILY_MESSAGE_QUOTA = 3
    settings.CHAT_DAILY_TOKEN_QUOTA = 0
    client.force_login(user)
    conversation = conversation_create(owner=user)
    start_turn(user, conversation)

    page = client.get(f"/c/{conversation.id}/").content.decode()
    assert "2 of 3 messages left today" in page

    start_turn(user, conversation)
    start_turn(user, conversation)
    with pytest.raises(services.TurnRefused, match=r"You have used all 3 messages for today"):
        start_turn(user, conversation)
    page = client.get(f"/c/{conversation.id}/").content.decode()
    assert "0 of 3 messages left today" in page
    assert "quota-status--exhausted" in page

    # Yesterday's messages do not count.
    UsageRecord.objects.update(started_at=timezone.now() - datetime.timedelta(days=1))
    start_turn(user, conversation)


@pytest.mark.django_db
def test_daily_token_quota(user: Any, settings: Any) -> None:
    settings.CHAT_DAILY_TOKEN_QUOTA = 100
    reply = start_turn(user)
    UsageRecord.objects.filter(message_uuid=reply.id).update(prompt_tokens=80, completion_tokens=19)
    assert limits.quota_usage_for_user(user=user).tokens_left_today == 1
    start_turn(user)

    UsageRecord.objects.filter(message_uuid=reply.id).update(completion_tokens=20)
    with pytest.raises(services.TurnRefused, match=r"used all 100 tokens of today's quota"):
        start_turn(user)


@pytest.mark.django_db
def test_staff_override_raises_one_users_quota(make_user: Any, settings: Any) -> None:
    settings.CHAT_DAILY_MESSAGE_QUOTA = 1
    favoured, other = make_user("favoured"), make_user("other")
    UserQuota.objects.create(user=favoured, messages_per_day=3)

    for _ in range(3):
        start_turn(favoured)
    start_turn(other)
    with pytest.raises(services.TurnRefused):
        start_turn(favoured)
    with pytest.raises(services.TurnRefused):
        start_turn(other)


@pytest.mark.django_db
def test_zero_means_no_limit(user: Any, settings: Any) -> None:
    settings.CHAT_RATE_LIMIT_PER_MINUTE = 0
    settings.CHAT_DAILY_MESSAGE_QUOTA = 0
    settings.CHAT_DAILY_TOKEN_QUOTA = 0
    for _ in range(5):
        start_turn(user)
    assert limits.quota_usage_for_user(user=user).summary == ""


@pytest.mark.django_db
def test_staff_can_raise_a_quota_in_the_admin(make_user: Any, client: Any) -> None:
    admin = make_user("boss", is_staff=True, is_superuser=True)
    member = make_user("member")
    client.force_login(admin)

    assert client.get("/admin/conversations/userquota/add/").status_code == 200
    response = client.post(
        "/admin/conversations/userquota/add/",
        {"user": member.pk, "messages_per_day": 1000, "tokens_per_day": "", "note": "pilot"},
    )

    assert response.status_code == 302
    quota = UserQuota.objects.get(user=member)
    assert quota.messages_per_day == 1000
    assert quota.tokens_per_day is None
    assert limits.limits_for_user(user=member).per_day == 1000


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_exhausted_quota_is_explained_on_the_socket_and_nothing_sent(
    upstream: FakeUpstream, user: Any, settings: Any
) -> None:
    settings.CHAT_DAILY_MESSAGE_QUOTA = 1
    conversation = await database_sync_to_async(conversation_create)(owner=user)
    comm = communicator_for(user, conversation)
    await comm.connect(timeout=SOCKET_TIMEOUT)
    await comm.send_to(text_data=json.dumps(SEND))
    frames = await receive_until(comm, 'data-role="assistant" data-status="complete"')
    assert "0 of 1 message left today" in frames

    await comm.send_to(text_data=json.dumps({**SEND, "message": "one more"}))
    frame = html.unescape(await receive_until(comm, "composer-error"))

    assert "You have used your 1 message for today" in frame
    assert await Message.objects.filter(conversation=conversation).acount() == 2
    assert len(upstream.streamed_requests) == 1
    await comm.disconnect()


# Browser last: the module-scoped Playwright loop would upset the async tests after it.


@pytest.mark.browser
def test_page_refuses_an_over_long_paste_and_daphne_caps_frames(
    browser_page: Page, live: DaphneServer, upstream: FakeUpstream, user: Any, settings: Any
) -> None:
    page = browser_page
    sign_in(page, username=user.username)

    page.get_by_label("Message").fill("z" * 100_001)
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("alert").first).to_contain_text(
        "That message is 100,001 characters long; the limit is 100,000"
    )
    expect(page.get_by_label("Message")).to_have_value("z" * 100_001)

    # A client that skips the page's check still meets Daphne's 1 MiB message cap: the socket
    # is closed (1009 "message too big", or 1006 when the server drops it mid-upload) before
    # the application reads a byte of it.
    close_code = page.evaluate(
        """() => new Promise((resolve) => {
            const url = location.href.replace(/^http/, "ws").replace("/c/", "/ws/c/");
            const ws = new WebSocket(url);
            const huge = "w".repeat(2 * 1024 * 1024);
            ws.onopen = () => ws.send(JSON.stringify({action: "send", message: huge}));
            ws.onclose = (event) => resolve(event.code);
        })"""
    )
    assert close_code in (1006, 1009)
    assert upstream.requests == []
    assert Message.objects.count() == 0
