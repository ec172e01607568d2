"""End to end in headless Chromium: pin and archive (live in every tab), feedback on a reply
(keyboard and screen-reader state included), and Copy as Markdown of the whole thread; axe-core
on every state these add, and no CSP violation."""

import pytest
from playwright.sync_api import Page, expect

from conversations.chat import services
from conversations.models import Conversation, MessageFeedback
from tests.conftest import DaphneServer, sign_in
from tests.support.browser_audit import assert_accessible, watch_csp
from tests.support.factories import exchange
from tests.support.upstream_server import FakeUpstream

pytestmark = pytest.mark.browser

ASSISTANT = 'article[data-role="assistant"]'


def _conversation(user, question: str, answer: str) -> Conversation:
    conversation = services.conversation_create(owner=user)
    exchange(conversation, question, answer)
    return conversation


def _more(page: Page) -> None:
    menu = page.locator(".chat-menu")
    if menu.get_attribute("open") is None:
        menu.locator("summary").click()


def test_pin_and_archive_update_every_tab_and_archived_ones_leave_search(
    chromium_browser, live: DaphneServer, upstream: FakeUpstream, user
) -> None:
    otters = _conversation(user, "About otters", "Otters hold hands.")
    owls = _conversation(user, "About owls", "Owls turn their heads.")
    context = chromium_browser.new_context(base_url=live.url)
    context.set_default_timeout(15_000)
    csp_violations = watch_csp(context)
    page = context.new_page()
    sign_in(page, username=user.username)
    page.goto(f"/c/{otters.id}/")
    other_tab = context.new_page()
    other_tab.goto(f"/c/{owls.id}/")
    expect(other_tab.locator("body:not(.socket-closed) main.chat")).to_be_visible()
    elsewhere = other_tab.get_by_role("navigation", name="Conversations")
    pinned_list = elsewhere.get_by_role("list", name="Pinned")

    _more(page)
    page.get_by_role("button", name="Pin to the top").click()

    # The other tab hears it over its socket: a Pinned section, with otters in it.
    expect(pinned_list.get_by_role("link", name="About otters")).to_be_visible()
    expect(elsewhere.get_by_role("heading", name="Recent")).to_be_visible()
    _more(page)
    expect(page.get_by_role("button", name="Unpin")).to_be_visible()
    assert_accessible(page, "More open on a pinned conversation")
    assert_accessible(other_tab, "a sidebar with a Pinned section")

    page.get_by_role("button", name="Archive", exact=True).click()

    expect(page.get_by_role("note")).to_contain_text("This conversation is archived")
    expect(elsewhere.get_by_role("link", name="About otters")).to_have_count(0)
    expect(pinned_list).to_have_count(0)
    conversation = Conversation.objects.get(id=otters.id)
    assert conversation.archived_at is not None and conversation.pinned_at is None
    assert_accessible(page, "an archived conversation")

    other_tab.get_by_label("Search conversations").fill("otters")
    results = other_tab.locator("#search-results")
    expect(results).to_contain_text("No conversations match")
    results.get_by_role("button", name="Search archived conversations too").click()
    expect(results.get_by_role("link")).to_contain_text("About otters (archived)")
    assert_accessible(other_tab, "search results with archived matches")

    # The archived list brings it back, without scripts needed.
    other_tab.get_by_role("link", name="Archived conversations").click()
    expect(other_tab.get_by_role("heading", level=1)).to_have_text("Archived conversations")
    assert_accessible(other_tab, "the archived list")
    other_tab.get_by_role("button", name="Unarchive About otters").click()
    expect(other_tab.get_by_text("Nothing is archived")).to_be_visible()
    # The first tab, still on the conversation, drops its archived note live.
    expect(page.locator(".archived-notice")).to_have_count(0)
    sidebar = page.get_by_role("navigation", name="Conversations")
    expect(sidebar.get_by_role("link", name="About otters")).to_be_visible()
    context.close()
    assert csp_violations == []


def test_thumbs_and_comment_by_keyboard_then_taken_back(
    browser_page: Page, live: DaphneServer, upstream: FakeUpstream, user
) -> None:
    conversation = _conversation(user, "What is 2+2?", "Five.")
    page = browser_page
    sign_in(page, username=user.username)
    page.goto(f"/c/{conversation.id}/")
    reply = page.locator(ASSISTANT)
    down = reply.get_by_role("button", name="Thumbs down for Claude's reply 1")
    up = reply.get_by_role("button", name="Thumbs up for Claude's reply 1")
    expect(down).to_have_attribute("aria-pressed", "false")

    down.focus()
    page.keyboard.press("Enter")

    expect(down).to_have_attribute("aria-pressed", "true")
    expect(up).to_have_attribute("aria-pressed", "false")
    expect(reply.get_by_role("status")).to_have_text("Rated bad")
    # Focus stays on the button the reader pressed, in the re-rendered widget.
    expect(down).to_be_focused()
    comment = reply.get_by_label("What went wrong?")
    comment.fill("2+2 is 4, not five")
    reply.get_by_role("button", name="Save comment").click()
    expect(reply.get_by_text("Your comment")).to_be_visible()
    assert_accessible(page, "a reply rated down with a comment")
    feedback = MessageFeedback.objects.get()
    assert (feedback.rating, feedback.comment) == ("down", "2+2 is 4, not five")

    page.reload()
    expect(down).to_have_attribute("aria-pressed", "true")
    expect(comment).to_have_value("2+2 is 4, not five")

    down.click()
    expect(down).to_have_attribute("aria-pressed", "false")
    expect(reply.get_by_label("What went wrong?")).to_have_count(0)
    assert not MessageFeedback.objects.exists()


def test_copy_as_markdown_copies_the_whole_thread_including_a_reply_just_streamed(
    chromium_browser, live: DaphneServer, upstream: FakeUpstream, user
) -> None:
    conversation = _conversation(user, "First question", "First **answer**.")
    context = chromium_browser.new_context(base_url=live.url)
    context.set_default_timeout(15_000)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live.url)
    csp_violations = watch_csp(context)
    page = context.new_page()
    sign_in(page, username=user.username)
    page.goto(f"/c/{conversation.id}/")
    page.get_by_label("Message").fill("Second question")
    page.get_by_label("Message").press("Enter")
    expect(page.locator(ASSISTANT).nth(1)).to_have_attribute("data-status", "complete")
    # The reply that arrived over the socket has thumbs that say which reply they rate.
    expect(
        page.locator(ASSISTANT).nth(1).get_by_role("button", name="Thumbs up for Claude's reply 2")
    ).to_be_visible()

    _more(page)
    page.get_by_role("button", name="Copy as Markdown").click()

    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    text = page.evaluate("navigator.clipboard.readText()")
    assert text.startswith("# First question")
    assert "## You\n\nFirst question\n\n## Claude\n\nFirst **answer**." in text
    assert "## You\n\nSecond question\n\n## Claude\n\nHello from the fake upstream." in text
    context.close()
    assert csp_violations == []
