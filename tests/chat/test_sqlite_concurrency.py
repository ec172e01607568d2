"""The default embedded database under ordinary concurrency: ten people chatting at once on a
real Daphne while a second process renames conversations as fast as SQLite lets it write and
share links are published over HTTP. Every send must be saved and answered; no request may
fail because another one was writing."""

import asyncio
import html
import json
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets
from channels.db import database_sync_to_async
from django.conf import settings as django_settings
from django.db import connection

from conversations.chat import services
from conversations.chat.consumers import DATABASE_BUSY
from conversations.chat.services import conversation_create
from conversations.models import Conversation, Message
from tests.conftest import DaphneServer
from tests.support.sockets import (
    COMPLETE,
    RECEIVE_TIMEOUT,
    SEND,
    communicator_for,
    receive_until,
    wait_generations,
)
from tests.support.upstream_server import FakeUpstream
from tests.support.ws import session_cookie

SENDERS = 10
SENDS_EACH = 6
# Generous: ten replies stream at once on a small, shared CI machine.
TURN_TIMEOUT = 60
CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


async def _chat_loop(server: DaphneServer, cookie: str, conversation: Conversation) -> list[str]:
    """SENDS_EACH turns one after the other in one conversation; the sends that failed."""
    failed: list[str] = []
    url = f"ws://127.0.0.1:{server.port}/ws/c/{conversation.id}/"
    headers = {"Cookie": f"{django_settings.SESSION_COOKIE_NAME}={cookie}", "Origin": server.url}
    async with websockets.connect(url, additional_headers=headers, max_size=None) as socket:
        for turn in range(SENDS_EACH):
            await socket.send(json.dumps({**SEND, "message": f"turn {turn}", "client_token": "t"}))
            seen: list[str] = []
            try:
                async with asyncio.timeout(TURN_TIMEOUT):
                    while True:
                        frame = str(await socket.recv())
                        seen.append(frame[:300])
                        error = re.search(r'id="composer-error"[^>]*>([^<]+)<', frame)
                        if error:
                            failed.append(f"turn {turn}: {error.group(1)}")
                            break
                        if COMPLETE in frame:
                            break
            except TimeoutError:
                failed.append(f"turn {turn}: no reply in {TURN_TIMEOUT} s {seen[-3:]}")
                return failed
    return failed


def _rename_until(user: Any, conversations: list[Conversation], done: threading.Event) -> int:
    """Rename conversations as fast as the database lets a second process write."""
    count = 0
    try:
        while not done.is_set():
            conversation = conversations[count % len(conversations)]
            services.conversation_rename(
                conversation_id=conversation.id, owner=user, title=f"Renamed {count}"
            )
            count += 1
    finally:
        connection.close()
    return count


def _share_until(
    server: DaphneServer, cookie: str, conversations: list[Conversation], done: threading.Event
) -> list[int]:
    """Publish and update share links over HTTP, one after the other, while the rest runs."""
    statuses: list[int] = []
    cookies = {django_settings.SESSION_COOKIE_NAME: cookie}
    with httpx.Client(base_url=server.url, cookies=cookies, timeout=TURN_TIMEOUT) as http:
        page = http.get(f"/c/{conversations[0].id}/")
        token = CSRF_INPUT.search(page.text)
        assert token, page.text[:500]
        headers = {"X-CSRFToken": token.group(1), "Referer": server.url + "/", "HX-Request": "true"}
        while not done.is_set():
            conversation = conversations[len(statuses) % len(conversations)]
            response = http.post(
                f"/c/{conversation.id}/share/",
                data={"visibility": "anyone", "expiry_days": "0"},
                headers=headers,
            )
            statuses.append(response.status_code)
    return statuses


def _states(conversations: list[Conversation]) -> list[tuple[str, str, str]]:
    return list(
        Message.objects.filter(conversation__in=conversations)
        .order_by("conversation_id", "created_at")
        .values_list("conversation_id", "role", "status")
    )


@pytest.fixture
def server(
    _sync_orm_beside_playwright: None, transactional_db: None, upstream: FakeUpstream
) -> Iterator[DaphneServer]:
    """Its own Daphne: the per-minute limit would refuse these sends before the database could."""
    prefix = f"chatsite-sqlite-{uuid.uuid4().hex[:8]}"
    daphne = DaphneServer(
        upstream=upstream,
        extra_env={"CHANNELS_REDIS_PREFIX": prefix, "CHAT_RATE_LIMIT_PER_MINUTE": "0"},
    )
    daphne.start()
    yield daphne
    daphne.stop()


@pytest.mark.browser
def test_ten_senders_and_fast_renames_lose_no_send(server: DaphneServer, user: Any) -> None:
    conversations = [conversation_create(owner=user) for _ in range(SENDERS)]
    cookie = session_cookie(user)
    done = threading.Event()

    async def run() -> tuple[list[list[str]], int, list[int]]:
        renames = asyncio.create_task(asyncio.to_thread(_rename_until, user, conversations, done))
        shares = asyncio.create_task(
            asyncio.to_thread(_share_until, server, cookie, conversations, done)
        )
        try:
            loops = await asyncio.gather(
                *(_chat_loop(server, cookie, conversation) for conversation in conversations)
            )
        finally:
            done.set()
        return loops, await renames, await shares

    started = time.monotonic()
    loops, renamed, statuses = asyncio.run(run())
    elapsed = time.monotonic() - started

    failed = [problem for loop in loops for problem in loop]
    assert failed == [], (failed, _states(conversations))
    assert renamed > 100, "the renames did not run alongside the sends"
    assert statuses, "no share request ran alongside the sends"
    assert [status for status in statuses if status != 200] == [], statuses
    saved = Message.objects.filter(role=Message.Role.ASSISTANT, status=Message.Status.COMPLETE)
    assert saved.count() == SENDERS * SENDS_EACH
    print(
        f"{SENDERS * SENDS_EACH} turns, {renamed} renames and {len(statuses)} shares "
        f"in {elapsed:.1f} s"
    )


ON_SQLITE = django_settings.DATABASES["default"]["ENGINE"].endswith("sqlite3")


@pytest.mark.skipif(not ON_SQLITE, reason="holds SQLite's write lock from a second connection")
@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_turn_that_cannot_get_the_database_says_so_and_keeps_the_text(
    upstream: FakeUpstream, user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    conversation = await database_sync_to_async(conversation_create)(owner=user)
    # Every connection opened from here on waits only briefly for the lock.
    monkeypatch.setitem(connection.settings_dict["OPTIONS"], "timeout", 0.2)
    # The database thread's connection was opened before: the next hop opens a new one.
    await database_sync_to_async(lambda: connection.close())()
    comm = communicator_for(user, conversation)
    assert (await comm.connect(timeout=RECEIVE_TIMEOUT))[0]
    blocker = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        await comm.send_to(text_data=json.dumps({**SEND, "client_token": "kept"}))
        answer = html.unescape(await receive_until(comm, "composer-error"))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()

    assert DATABASE_BUSY in answer
    # No acknowledgement: the page keeps the text in the composer.
    assert "composer-ack" not in answer
    assert await Message.objects.filter(conversation=conversation).acount() == 0
    await comm.send_to(text_data=json.dumps(SEND))
    await receive_until(comm, COMPLETE)
    await wait_generations()
    await comm.disconnect(timeout=RECEIVE_TIMEOUT)
