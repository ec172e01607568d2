"""End to end: the real page in headless Chromium against a real Daphne process."""

import re

import pytest
from playwright.sync_api import Page, expect

from conversations.models import Message
from tests.conftest import DaphneServer, sign_in
from tests.support.upstream_server import FakeUpstream, Gate, Hold, Stream, gateway_chunks

pytestmark = pytest.mark.browser


def test_sign_up_then_chat_with_a_streamed_reply(
    browser_page: Page, live: DaphneServer, upstream: FakeUpstream
) -> None:
    gate = Gate()
    chunks = gateway_chunks(["Hello", " from", " **Claude**"])
    upstream.enqueue(Stream([*chunks[:2], Hold(gate), *chunks[2:]]))
    page = browser_page

    page.goto("/accounts/signup/")
    page.get_by_label("Username").fill("newcomer")
    page.get_by_label("Password", exact=True).fill("a long and unusual passphrase")
    page.get_by_label("Password confirmation").fill("a long and unusual passphrase")
    page.get_by_role("button", name="Sign up").click()
    page.wait_for_url(re.compile(r"/c/[0-9a-f-]+/$"))
    page.get_by_label("Message").fill("Say hello")
    page.get_by_label("Message").press("Enter")

    reply = page.locator('article[data-role="assistant"]')
    expect(reply).to_have_attribute("data-status", "streaming")
    expect(reply).to_contain_text("Hello from")
    expect(page.get_by_role("button", name="Stop")).to_be_visible()
    gate.release()
    expect(reply).to_have_attribute("data-status", "complete")
    expect(reply.locator("strong")).to_have_text("Claude")
    expect(page.get_by_label("Message")).to_have_value("")

    page.reload()
    expect(page.locator('article[data-role="user"]')).to_contain_text("Say hello")
    expect(page.locator('article[data-role="assistant"] strong')).to_have_text("Claude")


def test_reply_keeps_streaming_through_a_reload_and_stop_keeps_it(
    browser_page: Page, live: DaphneServer, upstream: FakeUpstream, user
) -> None:
    gate = Gate()
    chunks = gateway_chunks(["before ", "reload "])
    upstream.enqueue(Stream([*chunks[:3], Hold(gate)]))
    page = browser_page
    sign_in(page, username=user.username)
    page.get_by_label("Message").fill("Tell me a long story")
    page.get_by_role("button", name="Send").click()
    reply = page.locator('article[data-role="assistant"]')
    expect(reply).to_contain_text("before reload")

    page.reload()
    expect(reply).to_have_attribute("data-status", "streaming")
    expect(reply).to_contain_text("before reload")
    page.get_by_role("button", name="Stop").click()

    expect(reply).to_have_attribute("data-status", "stopped")
    expect(reply).to_contain_text("before reload")
    gate.release()
    saved = Message.objects.get(role=Message.Role.ASSISTANT)
    assert saved.status == Message.Status.STOPPED
    assert saved.content == "before reload "


def test_sliders_choose_what_is_sent(
    browser_page: Page, live: DaphneServer, upstream: FakeUpstream, user
) -> None:
    page = browser_page
    sign_in(page, username=user.username)

    page.get_by_role("radio", name="top P").check()
    page.get_by_role("slider", name=re.compile("^Top P")).fill("0.5")
    page.get_by_label("Reasoning effort").select_option("low")
    page.get_by_label("Max tokens").fill("2048")
    page.get_by_label("Message").fill("Parameters please")
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("alert")).to_contain_text("Top P from 0.95 to 1")
    expect(page.get_by_label("Message")).to_have_value("Parameters please")
    assert upstream.requests == []

    page.get_by_role("slider", name=re.compile("^Top P")).fill("0.97")
    page.get_by_role("button", name="Send").click()
    expect(page.locator('article[data-role="assistant"]')).to_have_attribute(
        "data-status", "complete"
    )

    # The last streamed request: a title request (not streamed) may follow the first reply.
    body = [r.json for r in upstream.requests if r.json.get("stream")][-1]
    assert body["top_p"] == 0.97
    assert "temperature" not in body
    assert body["max_tokens"] == 2048
    assert body["reasoning_effort"] == "low"
