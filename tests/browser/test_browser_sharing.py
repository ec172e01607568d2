"""End to end in headless Chromium: share a conversation, open the link signed out, revoke it;
a staff member reviews a transcript and the owner sees the note."""

import re

import pytest
from playwright.sync_api import Page, expect

from conversations.models import Conversation, TranscriptAccess
from tests.conftest import ARTIFACTS, PASSWORD, DaphneServer, sign_in
from tests.support.transcripts import add_turn

pytestmark = pytest.mark.browser


@pytest.fixture
def conversation(user) -> Conversation:
    conversation = Conversation.objects.create(owner=user, title="Sourdough starter")
    add_turn(
        conversation,
        "How do I keep a starter alive?",
        "Feed it **daily**:\n\n1. Discard half\n2. Add flour and water\n\n"
        "```python\nratio = {'flour': 1, 'water': 1}\n```",
        reasoning="The user wants practical steps.",
    )
    add_turn(conversation, "And in the fridge?", "Once a *week* is enough.")
    conversation.messages.filter(role="assistant").update(
        request_params={"max_tokens": 4096, "temperature": 0.7}, duration_ms=1200
    )
    return conversation


def test_share_open_signed_out_then_revoke(
    browser_page: Page, chromium_browser, live: DaphneServer, conversation, user
) -> None:
    page = browser_page
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    sign_in(page, username=user.username)
    page.goto(f"/c/{conversation.id}/")

    page.get_by_role("button", name="Share").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    preview = dialog.get_by_label("Preview of what will be published")
    expect(preview.locator("article")).to_have_count(4)
    expect(preview).not_to_contain_text("The user wants practical steps.")
    dialog.get_by_label("Include thinking").check()
    expect(preview).to_contain_text("The user wants practical steps.")
    dialog.get_by_label("Include thinking").uncheck()
    expect(preview).not_to_contain_text("The user wants practical steps.")
    dialog.get_by_role("button", name="Create link").click()

    link_input = dialog.get_by_label("Share link")
    expect(link_input).to_have_value(re.compile(r"^http://127\.0\.0\.1:\d+/s/[\w-]{43}/$"))
    dialog.get_by_role("button", name="Copy link").click()
    expect(dialog.get_by_role("button", name="Copied")).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "share-dialog.png")
    url = link_input.input_value()

    visitor_context = chromium_browser.new_context()
    visitor_context.set_default_timeout(15_000)
    visitor = visitor_context.new_page()
    try:
        response = visitor.goto(url)
        assert response is not None
        assert response.status == 200
        assert response.headers["referrer-policy"] == "no-referrer"
        expect(visitor.get_by_role("heading", name="Sourdough starter")).to_be_visible()
        expect(visitor.locator("article strong").first).to_have_text("daily")
        expect(visitor.locator("textarea")).to_have_count(0)
        expect(visitor.get_by_text("The user wants practical steps.")).to_have_count(0)
        expect(visitor.get_by_role("button", name="Continue this conversation")).to_be_visible()
        visitor.screenshot(path=ARTIFACTS / "shared-page.png", full_page=True)

        dialog.get_by_role("button", name="Revoke link").click()
        expect(dialog.get_by_role("status")).to_contain_text("Link revoked")
        expect(dialog.get_by_label("Share link")).to_have_count(0)

        gone = visitor.reload()
        assert gone is not None
        assert gone.status == 404
        expect(visitor.get_by_role("heading", name="Not found")).to_be_visible()
        expect(visitor.locator("body")).not_to_contain_text("Sourdough")
    finally:
        visitor_context.close()

    page.goto("/share-links/")
    row = page.get_by_role("row", name=re.compile("Sourdough starter"))
    expect(row).to_contain_text("Revoked")
    expect(row).to_contain_text("1")
    page.screenshot(path=ARTIFACTS / "shared-links.png")


def test_continue_a_shared_conversation_after_signing_in(
    browser_page: Page, chromium_browser, live: DaphneServer, conversation, user, make_user
) -> None:
    page = browser_page
    sign_in(page, username=user.username)
    page.goto(f"/c/{conversation.id}/")
    page.get_by_role("button", name="Share").click()
    page.get_by_role("dialog").get_by_role("button", name="Create link").click()
    url = page.get_by_label("Share link").input_value()
    make_user("bob")

    visitor_context = chromium_browser.new_context(base_url=live.url)
    visitor_context.set_default_timeout(15_000)
    visitor = visitor_context.new_page()
    try:
        visitor.goto(url)
        visitor.get_by_role("button", name="Continue this conversation").click()
        visitor.get_by_label("Username").fill("bob")
        visitor.get_by_label("Password").fill(PASSWORD)
        visitor.get_by_role("button", name="Sign in").click()
        visitor.get_by_role("button", name="Continue this conversation").click()

        visitor.wait_for_url(re.compile(r"/c/[0-9a-f-]+/$"))
        expect(visitor.locator('article[data-role="assistant"]')).to_have_count(2)
        expect(visitor.get_by_label("Message")).to_be_visible()
        assert Conversation.objects.filter(owner__username="bob").count() >= 1
    finally:
        visitor_context.close()


def test_staff_reviews_a_transcript_and_the_owner_sees_the_note(
    browser_page: Page, chromium_browser, live: DaphneServer, conversation, user, make_user
) -> None:
    make_user("moderator", is_staff=True, is_superuser=True)
    page = browser_page
    page.goto("/admin/login/?next=/admin/")
    page.get_by_label("Username").fill("moderator")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.goto("/admin/conversations/conversation/")
    page.get_by_role("link", name="Open transcript (logged)").click()

    expect(page.get_by_text("How do I keep a starter alive?")).to_have_count(0)
    page.get_by_label("Why are you opening this transcript?").fill("Quality spot check")
    page.get_by_role("button", name="Open transcript").click()
    expect(page.get_by_text("How do I keep a starter alive?")).to_be_visible()
    expect(page.get_by_text("The user wants practical steps.")).to_be_visible()
    page.get_by_label("Review note (shown to the owner)").fill("Checked: all good.")
    page.get_by_role("button", name="Save and mark reviewed").click()
    expect(page.get_by_text("Review saved.")).to_be_visible()
    expect(page.get_by_text("How do I keep a starter alive?")).to_be_visible()
    page.screenshot(path=ARTIFACTS / "admin-transcript.png", full_page=True)
    assert TranscriptAccess.objects.get().reason == "Quality spot check"
    page.goto("/admin/conversations/conversation/usage/")
    expect(page.get_by_role("img", name=re.compile("Tokens per day"))).to_be_visible()
    page.screenshot(path=ARTIFACTS / "admin-usage.png", full_page=True)

    owner_context = chromium_browser.new_context(base_url=live.url)
    owner_context.set_default_timeout(15_000)
    owner = owner_context.new_page()
    try:
        sign_in(owner, username=user.username)
        owner.goto(f"/c/{conversation.id}/")
        notice = owner.get_by_role("note", name="Staff review")
        expect(notice).to_contain_text("Reviewed by moderator")
        expect(notice).to_contain_text("Checked: all good.")
        notice.scroll_into_view_if_needed()
        owner.screenshot(path=ARTIFACTS / "owner-review-notice.png")
    finally:
        owner_context.close()
