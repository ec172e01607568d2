"""End to end in headless Chromium: the workspace around the chat."""

import re

import pytest
from playwright.sync_api import Page, expect

from conversations.chat import services
from conversations.models import Conversation, Message
from tests.conftest import DaphneServer, sign_in
from tests.support.factories import exchange
from tests.support.upstream_server import FakeUpstream, Gate, Hold, Stream, gateway_chunks

pytestmark = pytest.mark.browser

ASSISTANT = 'article[data-role="assistant"]'
TRANSCRIPT_DISTANCE_FROM_END = (
    "(t => t.scrollHeight - t.scrollTop - t.clientHeight)(document.getElementById('transcript'))"
)


def _conversation(user, question: str, answer: str, **outcome) -> Conversation:
    conversation = services.conversation_create(owner=user)
    exchange(conversation, question, answer, **outcome)
    return conversation


def _open(page: Page, user, conversation: Conversation) -> None:
    sign_in(page, username=user.username)
    page.goto(f"/c/{conversation.id}/")


def test_sidebar_navigates_and_updates_live(
    browser_page: Page, live: DaphneServer, upstream: FakeUpstream, user
) -> None:
    first = _conversation(user, "About otters", "Otters hold hands.")
    _conversation(user, "About owls", "Owls turn their heads.")
    page = browser_page
    _open(page, user, first)
    sidebar = page.get_by_role("navigation", name="Conversations")

    sidebar.get_by_role("link", name="About owls").click()

    expect(page).to_have_url(re.compile(r"/c/[0-9a-f-]+/$"))
    expect(page.get_by_role("log")).to_contain_text("Owls turn their heads.")
    expect(sidebar.get_by_role("link", name="About owls")).to_have_attribute("aria-current", "page")

    owls_url = page.url
    sidebar.get_by_role("link", name="New chat").click()
    # Typing before the new page has loaded would type into the page being left.
    page.wait_for_url(lambda url: url != owls_url)
    page.get_by_label("Message").fill("Tell me about foxes")
    page.get_by_label("Message").press("Enter")
    expect(page.locator(ASSISTANT)).to_have_attribute("data-status", "complete")
    # The model's title arrives over the socket, without a reload.
    expect(sidebar.get_by_role("link", name="A short title")).to_be_visible()
    expect(page.get_by_role("heading", level=1)).to_have_text("A short title")


def test_rename_and_delete_with_confirmation(
    browser_page: Page, live: DaphneServer, upstream: FakeUpstream, user
) -> None:
    conversation = _conversation(user, "Untitled thoughts", "Fine.")
    page = browser_page
    _open(page, user, conversation)
    sidebar = page.get_by_role("navigation", name="Conversations")

    page.get_by_text("More", exact=True).click()
    page.get_by_role("button", name="Rename…").click()
    page.get_by_label("Title").fill("Garden plans")
    page.get_by_role("button", name="Save").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Garden plans")
    expect(sidebar.get_by_role("link", name="Garden plans")).to_be_visible()
    page.reload()
    expect(page.get_by_role("heading", level=1)).to_have_text("Garden plans")

    page.get_by_text("More", exact=True).click()
    page.get_by_role("button", name="Delete…").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("cannot be undone")
    dialog.get_by_role("button", name="Cancel").click()
    assert Conversation.objects.filter(id=conversation.id).exists()

    page.get_by_text("More", exact=True).click()
    page.get_by_role("button", name="Delete…").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete for good").click()

    expect(page).not_to_have_url(re.compile(str(conversation.id)))
    expect(sidebar.get_by_role("link", name="Garden plans")).to_have_count(0)
    assert not Conversation.objects.filter(id=conversation.id).exists()


def test_search_as_you_type_and_ctrl_k(
    browser_page: Page, live: DaphneServer, upstream: FakeUpstream, user, make_user
) -> None:
    start = _conversation(user, "Hello", "Hi.")
    _conversation(user, "Recipe for bread", "Use a sourdough starter and patience.")
    _conversation(make_user("bob"), "Bob's bread", "Sourdough too.")
    page = browser_page
    _open(page, user, start)

    page.keyboard.press("Control+k")
    expect(page.get_by_label("Search conversations")).to_be_focused()
    page.keyboard.type("sourdough")

    results = page.get_by_role("list", name="Search results")
    expect(results.get_by_role("link")).to_have_count(1)
    expect(results).to_contain_text("Recipe for bread")
    results.get_by_role("link", name=re.compile("Recipe for bread")).click()
    expect(page.get_by_role("log")).to_contain_text("sourdough starter")


def test_regenerate_then_page_between_versions(
    browser_page: Page, live: DaphneServer, upstream: FakeUpstream, user
) -> None:
    conversation = _conversation(user, "Name a colour", "Blue.")
    upstream.enqueue(Stream(gateway_chunks(["Green."])))
    page = browser_page
    _open(page, user, conversation)
    reply = page.locator(ASSISTANT)

    page.get_by_role("button", name="Regenerate").click()

    expect(reply).to_contain_text("Green.")
    expect(reply).to_have_attribute("data-status", "complete")
    expect(reply.locator(".version-label")).to_have_text("2/2")
    reply.get_by_role("button", name="Previous version").click()
    expect(reply).to_contain_text("Blue.")
    expect(reply.locator(".version-label")).to_have_text("1/2")
    page.reload()
    expect(page.locator(ASSISTANT)).to_contain_text("Blue.")
    page.locator(ASSISTANT).get_by_role("button", name="Next version").click()
    expect(page.locator(ASSISTANT)).to_contain_text("Green.")
    assert Message.objects.filter(role=Message.Role.USER).count() == 1


def test_edit_a_message_branches_and_the_old_branch_stays(
    browser_page: Page, live: DaphneServer, upstream: FakeUpstream, user
) -> None:
    conversation = _conversation(user, "Capital of Spain?", "Madrid.")
    upstream.enqueue(Stream(gateway_chunks(["Rome."])))
    page = browser_page
    _open(page, user, conversation)
    question = page.locator('article[data-role="user"]')

    question.get_by_role("button", name="Edit").click()
    page.get_by_label("Edited text").fill("Capital of Italy?")
    page.get_by_role("button", name="Send edit").click()

    expect(page.locator(ASSISTANT)).to_contain_text("Rome.")
    expect(question).to_contain_text("Capital of Italy?")
    expect(question.locator(".version-label")).to_have_text("2/2")
    assert upstream.requests[0].json["messages"][-1]["content"] == "Capital of Italy?"
    question.get_by_role("button", name="Previous version").click()
    expect(question).to_contain_text("Capital of Spain?")
    expect(page.locator(ASSISTANT)).to_contain_text("Madrid.")


def test_stop_then_continue(
    browser_page: Page, live: DaphneServer, upstream: FakeUpstream, user
) -> None:
    gate = Gate()
    chunks = gateway_chunks(["Once upon ", "a time"])
    upstream.enqueue(
        Stream([*chunks[:1], Hold(gate), *chunks[1:]]),
        Stream(gateway_chunks([" there was a fox."])),
    )
    page = browser_page
    sign_in(page, username=user.username)
    page.get_by_label("Message").fill("Tell a story")
    page.get_by_label("Message").press("Enter")
    expect(page.locator(ASSISTANT)).to_contain_text("Once upon")

    page.keyboard.press("Escape")

    expect(page.locator(ASSISTANT)).to_have_attribute("data-status", "stopped")
    gate.release()
    page.get_by_role("button", name="Continue").click()
    expect(page.locator(ASSISTANT).last).to_contain_text("there was a fox.")
    expect(page.locator(ASSISTANT).last).to_have_attribute("data-status", "complete")
    assert upstream.requests[-1].json["messages"][-1] == {
        "role": "assistant",
        "content": "Once upon",
    }
    expect(page.get_by_role("button", name="Continue")).to_be_hidden()


def test_streaming_markdown_is_rendered_before_the_end(
    browser_page: Page, live: DaphneServer, upstream: FakeUpstream, user
) -> None:
    gate = Gate()
    chunks = gateway_chunks(["This is ", "**important**", " news"])
    upstream.enqueue(Stream([*chunks[:2], Hold(gate), *chunks[2:]]))
    page = browser_page
    sign_in(page, username=user.username)
    page.get_by_label("Message").fill("News?")
    page.get_by_role("button", name="Send").click()

    reply = page.locator(ASSISTANT)
    expect(reply.locator("strong")).to_have_text("important")
    expect(reply).to_have_attribute("data-status", "streaming")
    gate.release()
    expect(reply).to_have_attribute("data-status", "complete")
    expect(reply).to_contain_text("This is important news")


def test_theme_toggle_is_remembered(
    browser_page: Page, live: DaphneServer, upstream: FakeUpstream, user
) -> None:
    page = browser_page
    page.emulate_media(color_scheme="light")
    sign_in(page, username=user.username)
    html = page.locator("html")
    light_bg = page.evaluate("getComputedStyle(document.body).backgroundColor")

    page.get_by_role("button", name=re.compile("^Theme")).click()
    expect(html).to_have_attribute("data-theme", "light")
    page.get_by_role("button", name=re.compile("^Theme")).click()
    expect(html).to_have_attribute("data-theme", "dark")

    dark_bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert dark_bg != light_bg
    page.reload()
    expect(html).to_have_attribute("data-theme", "dark")
    page.get_by_role("button", name=re.compile("^Theme")).click()
    expect(html).not_to_have_attribute("data-theme", re.compile("."))


def test_phone_layout_has_a_menu_and_no_sideways_scroll(
    chromium_browser, live: DaphneServer, upstream: FakeUpstream, user
) -> None:
    other = _conversation(user, "Phone chat", "Small screens work.")
    context = chromium_browser.new_context(
        base_url=live.url, viewport={"width": 375, "height": 740}, has_touch=True
    )
    page = context.new_page()
    sign_in(page, username=user.username)
    sidebar = page.get_by_role("navigation", name="Conversations")
    menu = page.get_by_role("button", name="Menu", exact=True)

    expect(sidebar).to_be_hidden()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    menu.click()
    expect(menu).to_have_attribute("aria-expanded", "true")
    sidebar.get_by_role("link", name="Phone chat").click()
    expect(page).to_have_url(re.compile(str(other.id)))
    expect(page.get_by_role("log")).to_contain_text("Small screens work.")
    expect(sidebar).to_be_hidden()

    page.get_by_label("Message").fill("Hello from a phone")
    page.get_by_role("button", name="Send").click()
    expect(page.locator(ASSISTANT).last).to_have_attribute("data-status", "complete")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    context.close()


def test_keyboard_slash_focuses_the_composer_and_it_grows(
    browser_page: Page, live: DaphneServer, upstream: FakeUpstream, user
) -> None:
    page = browser_page
    sign_in(page, username=user.username)
    composer = page.get_by_label("Message")
    page.locator("body").click(position={"x": 5, "y": 5})

    page.keyboard.press("/")

    expect(composer).to_be_focused()
    before = composer.bounding_box()["height"]
    page.keyboard.type("line one")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("line two")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("line three")
    assert composer.bounding_box()["height"] > before
    expect(composer).to_have_value("line one\nline two\nline three")


def test_copy_puts_the_raw_markdown_on_the_clipboard(
    chromium_browser, live: DaphneServer, upstream: FakeUpstream, user
) -> None:
    conversation = _conversation(user, "Code?", "Use **bold** and `code`.")
    context = chromium_browser.new_context(base_url=live.url)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live.url)
    page = context.new_page()
    _open(page, user, conversation)

    page.locator(ASSISTANT).get_by_role("button", name="Copy Claude's reply 1").click()

    expect(
        page.locator(ASSISTANT).get_by_role("button", name="Copy Claude's reply 1")
    ).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == "Use **bold** and `code`."
    context.close()


def test_older_messages_load_when_scrolled_up(
    browser_page: Page, live: DaphneServer, upstream: FakeUpstream, user
) -> None:
    conversation = services.conversation_create(owner=user)
    for turn in range(40):
        exchange(conversation, f"question {turn:02d}", f"answer {turn:02d}")
    page = browser_page
    _open(page, user, conversation)
    articles = page.locator("#transcript article")
    expect(articles).to_have_count(50)
    expect(page.get_by_role("button", name=re.compile("Jump to latest"))).to_be_hidden()

    page.locator(".older-messages").scroll_into_view_if_needed()

    expect(articles).to_have_count(80)
    expect(articles.first).to_contain_text("question 00")


def test_thinking_folds_away_once_the_answer_starts(
    browser_page: Page, live: DaphneServer, upstream: FakeUpstream, user
) -> None:
    thinking, answering = Gate(), Gate()
    chunks = gateway_chunks(["The answer", " is 42."], reasoning_pieces=["Let me think…"])
    upstream.enqueue(Stream([chunks[0], Hold(thinking), chunks[1], Hold(answering), *chunks[2:]]))
    page = browser_page
    sign_in(page, username=user.username)
    page.get_by_label("Message").fill("Meaning of life?")
    page.get_by_role("button", name="Send").click()
    details = page.locator(f"{ASSISTANT} details.thinking")

    expect(details).to_contain_text("Let me think…")
    expect(details).to_have_attribute("open", "")
    thinking.release()
    expect(page.locator(ASSISTANT)).to_contain_text("The answer")
    expect(details).not_to_have_attribute("open", re.compile(".*"))
    answering.release()
    expect(page.locator(ASSISTANT)).to_have_attribute("data-status", "complete")
    expect(details.locator("summary")).to_have_text("Thinking")


def test_jump_to_latest_appears_when_scrolled_up_during_a_reply(
    browser_page: Page, live: DaphneServer, upstream: FakeUpstream, user
) -> None:
    conversation = services.conversation_create(owner=user)
    for turn in range(8):
        exchange(conversation, f"question {turn}", "A long answer.\n\n" * 12)
    gate = Gate()
    chunks = gateway_chunks(["First part. ", "Second part."])
    upstream.enqueue(Stream([chunks[0], Hold(gate), *chunks[1:]]))
    page = browser_page
    page.set_viewport_size({"width": 1000, "height": 600})
    _open(page, user, conversation)
    jump = page.get_by_role("button", name=re.compile("Jump to latest"))
    page.get_by_label("Message").fill("More please")
    page.get_by_role("button", name="Send").click()
    expect(page.locator(ASSISTANT).last).to_contain_text("First part.")

    page.evaluate("document.getElementById('transcript').scrollTo(0, 0)")
    gate.release()

    expect(jump).to_be_visible()
    assert page.evaluate("document.getElementById('transcript').scrollTop") == 0
    jump.click()
    expect(jump).to_be_hidden()
    assert page.evaluate(TRANSCRIPT_DISTANCE_FROM_END) < 80
