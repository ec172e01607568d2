"""A server process dies or is restarted mid-reply: real Daphne processes, real signals."""

import datetime
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.utils import timezone
from playwright.sync_api import Page, expect

from conversations.chat.services import conversation_create
from conversations.models import Message
from conversations.realtime import recovery, runtime
from tests.conftest import DaphneServer, sign_in
from tests.support.upstream_server import FakeUpstream, Gate, Hold, Stream, gateway_chunks

pytestmark = pytest.mark.browser

CHECKPOINT_INTERVAL = 0.2


def wait_for(predicate: Callable[[], object], *, timeout: float = 15.0, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what or predicate}")


@pytest.fixture
def servers(
    _sync_orm_beside_playwright: None, transactional_db: None, upstream: FakeUpstream
) -> Iterator[Callable[..., DaphneServer]]:
    started: list[DaphneServer] = []
    prefix = f"chatsite-crash-{uuid.uuid4().hex[:8]}"

    def start(**env: str) -> DaphneServer:
        server = DaphneServer(
            upstream=upstream,
            extra_env={
                "CHANNELS_REDIS_PREFIX": prefix,
                "CHAT_CHECKPOINT_INTERVAL": str(CHECKPOINT_INTERVAL),
                "CHAT_HEARTBEAT_INTERVAL": "0.3",
                **env,
            },
        )
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


# The sweep's rules, without processes (first: Playwright's loop must not be running yet).


def streaming_reply(user, *, worker: str, heartbeat_age: float | None) -> Message:
    conversation = conversation_create(owner=user)
    reply = Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        content="so far",
        worker_id=worker,
    )
    if heartbeat_age is not None:
        Message.objects.filter(id=reply.id).update(
            heartbeat_at=timezone.now() - datetime.timedelta(seconds=heartbeat_age)
        )
    return reply


@pytest.mark.django_db
def test_sweep_marks_only_dead_processes_replies(user, settings) -> None:
    settings.CHAT_HEARTBEAT_STALE_AFTER = 15
    host = socket.gethostname()
    dead_pid = _exited_pid()
    elsewhere_fresh = streaming_reply(user, worker="other-host:12:abcd", heartbeat_age=1)
    elsewhere_stale = streaming_reply(user, worker="other-host:13:abcd", heartbeat_age=60)
    here_dead = streaming_reply(user, worker=f"{host}:{dead_pid}:abcd", heartbeat_age=0)
    here_alive = streaming_reply(user, worker=f"{host}:{os.getppid()}:abcd", heartbeat_age=1)
    mine = streaming_reply(user, worker=recovery.worker_id(), heartbeat_age=1)

    interrupted = recovery.replies_orphaned_interrupt()

    assert {message_id for _, message_id in interrupted} == {elsewhere_stale.id, here_dead.id}
    for reply, status in [
        (elsewhere_fresh, Message.Status.STREAMING),
        (elsewhere_stale, Message.Status.INTERRUPTED),
        (here_dead, Message.Status.INTERRUPTED),
        (here_alive, Message.Status.STREAMING),
        (mine, Message.Status.STREAMING),
    ]:
        reply.refresh_from_db()
        assert reply.status == status, reply.worker_id
    here_dead.refresh_from_db()
    assert here_dead.content == "so far"
    assert "so far" in here_dead.content_html


@pytest.mark.django_db(transaction=True)
def test_sweep_spares_a_reply_that_started_here_while_it_waited(
    user, settings, monkeypatch
) -> None:
    # Under overload the sweep waits for the ORM thread longer than a heartbeat stays fresh:
    # a reply that registered meanwhile is alive, and interrupting it would cut its saved text.
    settings.CHAT_HEARTBEAT_STALE_AFTER = 15
    mine = streaming_reply(user, worker=recovery.worker_id(), heartbeat_age=60)
    live = runtime.Runtime()
    generating: dict[uuid.UUID, object] = live.generations  # type: ignore[assignment]

    def registered_meanwhile(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        generating[mine.id] = object()
        return execute(sql, params, many, context)

    with connection.execute_wrapper(registered_meanwhile):
        interrupted = async_to_sync(recovery.sweep_once)(live=live)

    mine.refresh_from_db()
    assert interrupted == 0
    assert mine.status == Message.Status.STREAMING


def _exited_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def start_held_reply(page: Page, upstream: FakeUpstream, username: str) -> Gate:
    gate = Gate()
    chunks = gateway_chunks(["Once upon ", "a time "])
    upstream.enqueue(Stream([*chunks[:2], Hold(gate), *chunks[2:]]))
    sign_in(page, username=username)
    page.get_by_label("Message").fill("Tell me a story")
    page.get_by_role("button", name="Send").click()
    expect(page.locator('article[data-role="assistant"]')).to_contain_text("Once upon a time")
    return gate


def test_sigkill_mid_reply_loses_at_most_a_checkpoint_and_restart_marks_it_interrupted(
    servers, page_on, upstream: FakeUpstream, user
) -> None:
    first = servers()
    page = page_on(first)
    gate = start_held_reply(page, upstream, user.username)
    # What reached the screen is in the database within one checkpoint interval.
    wait_for(
        lambda: Message.objects.filter(
            role=Message.Role.ASSISTANT, content="Once upon a time "
        ).exists(),
        timeout=CHECKPOINT_INTERVAL + 5,
        what="the checkpoint",
    )
    reply = Message.objects.get(role=Message.Role.ASSISTANT)
    assert reply.status == Message.Status.STREAMING
    assert reply.worker_id.split(":")[1] == str(first.process.pid)

    first.process.send_signal(signal.SIGKILL)
    first.process.wait(timeout=10)
    gate.release()
    second = servers()

    # The new process's start-up sweep sees the owner's pid is gone.
    wait_for(
        lambda: Message.objects.get(id=reply.id).status == Message.Status.INTERRUPTED,
        what="the orphaned reply to be marked interrupted",
    )
    reply.refresh_from_db()
    assert reply.content == "Once upon a time "

    page = page_on(second)
    sign_in(page, username=user.username)
    page.goto(f"/c/{reply.conversation_id}/")
    article = page.locator('article[data-role="assistant"]')
    expect(article).to_have_attribute("data-status", "interrupted")
    expect(article).to_contain_text("Once upon a time")
    expect(article).to_contain_text("Interrupted")
    upstream.enqueue(Stream(gateway_chunks(["A fresh ", "story."])))
    article.get_by_role("button", name="Retry").click()
    expect(article).to_have_attribute("data-status", "complete")
    expect(article).to_contain_text("A fresh story.")
    assert Message.objects.filter(role=Message.Role.USER).count() == 1
    assert Message.objects.filter(role=Message.Role.ASSISTANT).count() == 2


def test_sigterm_mid_reply_saves_the_text_within_seconds(
    servers, page_on, upstream: FakeUpstream, user
) -> None:
    # No checkpoint would ever happen: whatever is saved, the shutdown saved.
    server = servers(CHAT_CHECKPOINT_INTERVAL="600", CHAT_SHUTDOWN_GRACE="1")
    page = page_on(server)
    gate = start_held_reply(page, upstream, user.username)
    reply = Message.objects.get(role=Message.Role.ASSISTANT)
    assert reply.content == ""

    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(timeout=10)
    elapsed = time.monotonic() - started
    gate.release()

    reply.refresh_from_db()
    assert elapsed < 6, f"shutdown took {elapsed:.1f} s"
    assert reply.status == Message.Status.INTERRUPTED
    assert reply.content == "Once upon a time "


def test_sigterm_lets_a_reply_that_is_about_to_end_finish(
    servers, page_on, upstream: FakeUpstream, user
) -> None:
    server = servers(CHAT_CHECKPOINT_INTERVAL="600", CHAT_SHUTDOWN_GRACE="5")
    page = page_on(server)
    gate = start_held_reply(page, upstream, user.username)

    server.process.send_signal(signal.SIGTERM)
    gate.release()

    reply = Message.objects.get(role=Message.Role.ASSISTANT)
    wait_for(
        lambda: (
            Message.objects.filter(id=reply.id).exclude(status=Message.Status.STREAMING).exists()
        ),
        timeout=30,
        what="the reply to be saved after SIGTERM",
    )
    reply.refresh_from_db()
    assert reply.status == Message.Status.COMPLETE
    assert reply.content == "Once upon a time "
    # The reply was the only thing keeping it: the process goes too. On a loaded machine
    # Daphne's own shutdown (pool, layer reader) outlasts the 5 s grace, which is no part of
    # what this test checks, so the wait for the exit is a generous one.
    server.process.wait(timeout=60)


def test_a_live_process_replies_are_left_alone_by_another_process(
    servers, page_on, upstream: FakeUpstream, user
) -> None:
    first = servers()
    page = page_on(first)
    gate = start_held_reply(page, upstream, user.username)
    servers()  # sweeps at start-up and every 0.3 s

    # Several of the second process's sweeps pass while the first keeps its heartbeat fresh.
    reply = Message.objects.get(role=Message.Role.ASSISTANT)
    beats = {reply.heartbeat_at}

    def beat() -> bool:
        beats.add(Message.objects.get(id=reply.id).heartbeat_at)
        return len(beats) >= 4

    wait_for(beat, what="heartbeats")
    assert Message.objects.get(id=reply.id).status == Message.Status.STREAMING
    gate.release()
    expect(page.locator('article[data-role="assistant"]')).to_have_attribute(
        "data-status", "complete"
    )
