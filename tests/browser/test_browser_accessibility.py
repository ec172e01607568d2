"""axe-core on every page state a user or a staff member meets, light and dark: zero
violations is the bar (tests/support/browser_audit.py injects the vendored axe-core)."""

import re

import pytest
from playwright.sync_api import Page, expect

from conversations.chat import services
from conversations.models import Conversation
from tests.conftest import PASSWORD, DaphneServer, sign_in
from tests.support.browser_audit import assert_accessible
from tests.support.transcripts import add_turn
from tests.support.upstream_server import FakeUpstream, Gate, Hold, Stream, gateway_chunks

pytestmark = pytest.mark.browser

ASSISTANT = 'article[data-role="assistant"]'
THEMES = ["light", "dark"]


@pytest.fixture
def conversation(user) -> Conversation:
    conversation = services.conversation_create(owner=user)
    add_turn(
        conversation,
        "How do I keep a starter alive?",
        "Feed it **daily**:\n\n1. Discard half\n2. Add flour and water\n\n"
        "```python\nratio = {'flour': 1, 'water': 1}\n```\n\n> Keep it warm.",
        reasoning="The user wants practical steps.",
    )
    add_turn(conversation, "And in the fridge?", "Once a *week* is enough.")
    return conversation


@pytest.mark.parametrize("theme", THEMES)
def test_chat_page_states(
    browser_page: Page,
    live: DaphneServer,
    upstream: FakeUpstream,
    user,
    conversation: Conversation,
    theme: str,
) -> None:
    page = browser_page
    page.emulate_media(color_scheme=theme)
    sign_in(page, username=user.username)
    assert_accessible(page, "a new chat")
    page.goto(f"/c/{conversation.id}/")
    assert_accessible(page, "chat idle")

    page.locator('article[data-role="user"]').last.get_by_role(
        "button", name=re.compile("^Edit")
    ).click()
    expect(page.locator(".edit-box textarea")).to_be_focused()
    assert_accessible(page, "editing a message")
    page.keyboard.press("Escape")
    # Closing the editor puts the keyboard back on the button that opened it.
    expect(page.locator(".edit-box")).to_have_count(0)
    expect(
        page.locator('article[data-role="user"]').last.get_by_role(
            "button", name=re.compile("^Edit")
        )
    ).to_be_focused()

    page.locator(".chat-menu > summary").click()
    assert_accessible(page, "More open")
    page.locator(".chat-menu > summary").click()

    gate = Gate()
    chunks = gateway_chunks(["Streaming **now**", " and more"])
    upstream.enqueue(Stream([chunks[0], Hold(gate), *chunks[1:]]))
    page.get_by_label("Message").fill("Keep going")
    page.get_by_role("button", name="Send").click()
    expect(page.locator(ASSISTANT).last).to_contain_text("Streaming")
    assert_accessible(page, "streaming")
    gate.release()
    expect(page.locator(ASSISTANT).last).to_have_attribute("data-status", "complete")

    page.get_by_role("button", name="Share").click()
    expect(page.get_by_role("dialog")).to_be_visible()
    assert_accessible(page, "share dialog")
    page.get_by_role("dialog").get_by_role("button", name="Create link").click()
    expect(page.get_by_label("Share link")).to_be_visible()
    assert_accessible(page, "share dialog with a link")
    shared_url = page.get_by_label("Share link").input_value()

    page.goto("/share-links/")
    assert_accessible(page, "share links")
    page.goto("/settings/")
    assert_accessible(page, "settings")
    page.goto(shared_url)
    assert_accessible(page, "shared page")


@pytest.mark.parametrize("theme", THEMES)
def test_phone_with_options_open(
    browser_page: Page, live: DaphneServer, user, conversation: Conversation, theme: str
) -> None:
    page = browser_page
    page.emulate_media(color_scheme=theme)
    page.set_viewport_size({"width": 375, "height": 740})
    sign_in(page, username=user.username)
    page.goto(f"/c/{conversation.id}/")

    page.get_by_role("button", name="Options").click()
    assert_accessible(page, "phone, Options open")
    page.get_by_role("button", name="Menu", exact=True).click()
    assert_accessible(page, "phone, menu open")


@pytest.mark.parametrize("theme", THEMES)
def test_sign_in_and_sign_up(browser_page: Page, live: DaphneServer, theme: str) -> None:
    page = browser_page
    page.emulate_media(color_scheme=theme)
    page.goto("/accounts/login/")
    assert_accessible(page, "sign in")
    page.get_by_label("Username").fill("nobody")
    page.get_by_label("Password").fill("wrong password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_be_visible()
    assert_accessible(page, "sign in refused")
    page.goto("/accounts/signup/")
    assert_accessible(page, "sign up")


@pytest.mark.parametrize("theme", THEMES)
def test_admin_list_and_transcript(
    browser_page: Page, live: DaphneServer, conversation: Conversation, make_user, theme: str
) -> None:
    make_user("moderator", is_staff=True, is_superuser=True)
    page = browser_page
    page.emulate_media(color_scheme=theme)
    page.goto("/admin/login/?next=/admin/")
    page.get_by_label("Username").fill("moderator")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/admin/")
    page.goto("/admin/conversations/conversation/")
    assert_accessible(page, "admin conversation list")
    page.get_by_role("link", name="Open transcript (logged)").click()
    expect(page.get_by_label("Why are you opening this transcript?")).to_be_visible()
    assert_accessible(page, "admin transcript reason")
    page.get_by_label("Why are you opening this transcript?").fill("Quality spot check")
    page.get_by_role("button", name="Open transcript").click()
    expect(page.get_by_text("The user wants practical steps.")).to_be_visible()
    assert_accessible(page, "admin transcript")
    page.goto("/admin/conversations/conversation/usage/")
    assert_accessible(page, "admin usage")
