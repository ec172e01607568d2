"""Two Daphne processes behind no balancer at all, sharing PostgreSQL and Redis.

Runs on the PostgreSQL + Redis leg (`make test-postgres`, and CI). On the SQLite leg it is
skipped with the reason: several processes need a shared database and a shared channel layer,
which SQLite and the in-memory layer are not.
"""

import pytest
from django.conf import settings as django_settings
from playwright.sync_api import expect

from conversations.models import Message
from tests.conftest import sign_in
from tests.support.upstream_server import FakeUpstream, Gate, Hold, Stream, gateway_chunks

# Generous: the shared Redis of a busy CI machine can stall for seconds.
LIVE_TIMEOUT = 20_000
ON_POSTGRES = django_settings.DATABASES["default"]["ENGINE"].endswith("postgresql")

pytestmark = [
    pytest.mark.scaleout,
    pytest.mark.browser,
    pytest.mark.skipif(
        not ON_POSTGRES,
        reason="scale-out needs a shared database and channel layer: runs on the "
        "PostgreSQL + Redis leg (DATABASE_URL=postgres://..., REDIS_URL=redis://...)",
    ),
]


def test_a_reply_made_on_one_process_streams_to_and_stops_from_the_other(
    two_processes, page_on, upstream: FakeUpstream, user
) -> None:
    a, b = two_processes
    first_gate = Gate()
    chunks = gateway_chunks(["Made on A, ", "seen on B. "])
    upstream.enqueue(Stream([chunks[0], Hold(first_gate), chunks[1], Hold(Gate())]))

    page_a = page_on(a)
    sign_in(page_a, username=user.username)
    page_a.get_by_label("Message").fill("Stream across processes")
    page_a.get_by_role("button", name="Send").click()
    on_a = page_a.locator('article[data-role="assistant"]')
    expect(on_a).to_contain_text("Made on A,", timeout=LIVE_TIMEOUT)
    reply = Message.objects.get(role=Message.Role.ASSISTANT)
    assert reply.worker_id.split(":")[1] == str(a.process.pid)

    # A tab on B joins mid-reply: the text so far comes from A, then live deltas.
    page_b = page_on(b)
    sign_in(page_b, username=user.username)
    page_b.goto(f"/c/{reply.conversation_id}/")
    on_b = page_b.locator('article[data-role="assistant"]')
    expect(on_b).to_have_attribute("data-status", "streaming", timeout=LIVE_TIMEOUT)
    expect(on_b).to_contain_text("Made on A, ", timeout=LIVE_TIMEOUT)
    first_gate.release()
    expect(on_b).to_contain_text("Made on A, seen on B. ", timeout=LIVE_TIMEOUT)

    # Stop pressed on B stops the generation on A.
    page_b.get_by_role("button", name="Stop").click()
    expect(on_b).to_have_attribute("data-status", "stopped", timeout=LIVE_TIMEOUT)
    expect(on_a).to_have_attribute("data-status", "stopped", timeout=LIVE_TIMEOUT)
    reply.refresh_from_db()
    assert reply.status == Message.Status.STOPPED
    assert reply.content == "Made on A, seen on B. "
    assert len(upstream.requests) == 1


def test_a_reload_landing_on_the_other_process_resumes_the_stream(
    two_processes, page_on, upstream: FakeUpstream, user
) -> None:
    a, b = two_processes
    gate = Gate()
    chunks = gateway_chunks(["Before ", "the reload, ", "after it."])
    upstream.enqueue(Stream([*chunks[:2], Hold(gate), *chunks[2:]]))

    page = page_on(a)
    sign_in(page, username=user.username)
    page.get_by_label("Message").fill("Keep going")
    page.get_by_role("button", name="Send").click()
    reply_on_page = page.locator('article[data-role="assistant"]')
    expect(reply_on_page).to_contain_text("Before the reload,", timeout=LIVE_TIMEOUT)
    conversation_url = page.url.replace(a.url, b.url)

    # The balancer sends the reload to B (the session is in the shared database).
    page.goto(conversation_url)
    expect(reply_on_page).to_have_attribute("data-status", "streaming", timeout=LIVE_TIMEOUT)
    expect(reply_on_page).to_contain_text("Before the reload, ", timeout=LIVE_TIMEOUT)
    gate.release()

    expect(reply_on_page).to_have_attribute("data-status", "complete", timeout=LIVE_TIMEOUT)
    expect(reply_on_page).to_contain_text("Before the reload, after it.", timeout=LIVE_TIMEOUT)
    reply = Message.objects.get(role=Message.Role.ASSISTANT)
    assert reply.content == "Before the reload, after it."
    assert reply.worker_id.split(":")[1] == str(a.process.pid)
