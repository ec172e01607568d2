"""End to end in headless Chromium: what a daily user trips over (layout, streaming, links)."""

import re

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from conversations.chat import services
from conversations.models import Conversation, ConversationReview, UserQuota
from conversations.sharing import services as sharing_services
from tests.conftest import PASSWORD, DaphneServer, sign_in
from tests.support.factories import MODEL, exchange, finish, regenerated, turn_settings
from tests.support.upstream_server import FakeUpstream, Gate, Hold, Stream, gateway_chunks

pytestmark = pytest.mark.browser

ASSISTANT = 'article[data-role="assistant"]'
PHONE = {"width": 375, "height": 740}
DESKTOP = {"width": 1280, "height": 800}
TRANSCRIPT_DISTANCE_FROM_END = (
    "(t => t.scrollHeight - t.scrollTop - t.clientHeight)(document.getElementById('transcript'))"
)


def _long_conversation(user, turns: int = 8) -> Conversation:
    conversation = services.conversation_create(owner=user)
    for turn in range(turns):
        exchange(conversation, f"question {turn}", "A long answer.\n\n" * 12)
    return conversation


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_settings_page_opens_at_its_heading(
    browser_page: Page, live: DaphneServer, user, viewport: dict[str, int]
) -> None:
    page = browser_page
    page.set_viewport_size(viewport)
    sign_in(page, username=user.username)

    page.goto("/settings/")

    expect(page.get_by_role("heading", name="Settings")).to_be_in_viewport()
    assert page.evaluate("window.scrollY") == 0


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_only_the_transcript_starts_at_its_end(
    browser_page: Page, live: DaphneServer, user, viewport: dict[str, int]
) -> None:
    conversation = _long_conversation(user)
    page = browser_page
    page.set_viewport_size(viewport)
    sign_in(page, username=user.username)

    page.goto(f"/c/{conversation.id}/")

    expect(page.locator(ASSISTANT).last).to_be_in_viewport()
    assert page.evaluate("window.scrollY") == 0
    assert page.evaluate(TRANSCRIPT_DISTANCE_FROM_END) < 2
    expect(page.get_by_role("heading", level=1)).to_be_in_viewport()
    if viewport == DESKTOP:
        expect(page.get_by_role("button", name="Sign out")).to_be_in_viewport()


def test_no_thinking_section_while_streaming_without_reasoning(
    browser_page: Page, live: DaphneServer, upstream: FakeUpstream, user
) -> None:
    gate = Gate()
    chunks = gateway_chunks(["Plain", " answer"])
    upstream.enqueue(Stream([chunks[0], Hold(gate), *chunks[1:]]))
    page = browser_page
    sign_in(page, username=user.username)
    page.get_by_label("Message").fill("No thinking please")
    page.get_by_role("button", name="Send").click()
    reply = page.locator(ASSISTANT)

    expect(reply).to_have_attribute("data-status", "streaming")
    expect(reply).to_contain_text("Plain")
    expect(reply.locator("details.thinking")).to_be_hidden()
    gate.release()
    expect(reply).to_have_attribute("data-status", "complete")
    expect(reply.locator("details.thinking")).to_be_hidden()


def test_a_reply_is_announced_once_when_it_completes(
    browser_page: Page, live: DaphneServer, upstream: FakeUpstream, user
) -> None:
    gate = Gate()
    chunks = gateway_chunks(["Half of it", " and the rest."])
    upstream.enqueue(Stream([chunks[0], Hold(gate), *chunks[1:]]))
    page = browser_page
    sign_in(page, username=user.username)
    announcer = page.locator("#reply-announcer")
    page.get_by_label("Message").fill("Say something")
    page.get_by_role("button", name="Send").click()
    reply = page.locator(ASSISTANT)

    expect(reply).to_contain_text("Half of it")
    # The transcript itself is not live: fragments are not read out as they arrive.
    expect(page.get_by_role("log")).to_have_attribute("aria-live", "off")
    expect(announcer).to_have_attribute("role", "status")
    expect(announcer).to_have_text("")
    gate.release()
    expect(reply).to_have_attribute("data-status", "complete")
    expect(announcer).to_have_text("Claude replied: Half of it and the rest.")


def test_streaming_tail_continues_the_rendered_paragraph(
    browser_page: Page, live: DaphneServer, upstream: FakeUpstream, user
) -> None:
    rendered, more = Gate(), Gate()
    chunks = gateway_chunks(["Set `AIMLAPI_API_KEY` to", " talk to Claude", "."])
    upstream.enqueue(Stream([chunks[0], Hold(rendered), chunks[1], Hold(more), *chunks[2:]]))
    page = browser_page
    sign_in(page, username=user.username)
    page.get_by_label("Message").fill("How do I start?")
    page.get_by_role("button", name="Send").click()
    reply = page.locator(ASSISTANT)

    code = reply.locator("p code")
    expect(code).to_have_text("AIMLAPI_API_KEY")
    # The not-yet-rendered text lives inside the paragraph, so it flows on the same line.
    expect(reply.locator("p > .stream-tail")).to_have_count(1)
    rendered.release()
    expect(reply).to_contain_text("to talk to Claude")
    paragraph = reply.locator("p", has=page.locator("code"))
    expect(paragraph).to_contain_text("to talk to Claude")
    # Measured in the page as it is at each poll: a re-render may replace the paragraph between
    # two reads from here. Fails by timing out if the text never flows on the code's line.
    page.wait_for_function(
        """() => {
            const code = document.querySelector('article[data-role="assistant"] p code');
            const paragraph = code && code.closest("p");
            if (!paragraph || !paragraph.textContent.includes("to talk to Claude")) return false;
            const oneLine = code.getBoundingClientRect().height * 1.6;
            return paragraph.getBoundingClientRect().height < oneLine;
        }"""
    )
    more.release()
    expect(reply).to_have_attribute("data-status", "complete")


def test_shared_links_fit_a_phone(browser_page: Page, live: DaphneServer, user) -> None:
    conversation = _long_conversation(user, turns=1)
    sharing_services.share_link_publish(
        conversation_id=conversation.id,
        user=user,
        options=sharing_services.ShareOptions(
            include_system_prompt=False, include_thinking=False, visibility="anyone", expiry_days=7
        ),
    )
    page = browser_page
    page.set_viewport_size(PHONE)
    sign_in(page, username=user.username)

    page.goto("/share-links/")

    expect(page.get_by_role("button", name=re.compile("^Revoke"))).to_be_in_viewport()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


def test_message_buttons_say_which_message_they_act_on(
    browser_page: Page, live: DaphneServer, upstream: FakeUpstream, user
) -> None:
    conversation = services.conversation_create(owner=user)
    exchange(conversation, "First question", "```python\nx = 1\n```\n\n```sh\nls\n```")
    exchange(conversation, "Second question", "Second answer")
    page = browser_page
    sign_in(page, username=user.username)
    page.goto(f"/c/{conversation.id}/")
    log = page.get_by_role("log")

    for name in (
        "Copy your prompt 1",
        "Edit your prompt 2",
        "Copy Claude's reply 1",
        "Copy Claude's reply 2",
        "Copy code from Claude's reply 1 (block 2)",
        "Regenerate Claude's reply 2",
    ):
        expect(log.get_by_role("button", name=name, exact=True)).to_have_count(1)

    gate = Gate()
    chunks = gateway_chunks(["Third", " answer"])
    upstream.enqueue(Stream([chunks[0], Hold(gate), *chunks[1:]]))
    page.get_by_label("Message").fill("Third question")
    page.get_by_role("button", name="Send").click()
    streaming = page.locator(ASSISTANT).last
    # The log does not read out every fragment: the reply is announced once it is complete.
    expect(streaming).to_have_attribute("aria-busy", "true")
    gate.release()
    expect(streaming).to_have_attribute("data-status", "complete")
    expect(streaming).not_to_have_attribute("aria-busy", re.compile(".*"))
    expect(log.get_by_role("button", name="Copy Claude's reply 3", exact=True)).to_have_count(1)


def test_sampling_is_one_choice_with_one_slider_in_chat_and_settings(
    browser_page: Page, live: DaphneServer, user
) -> None:
    page = browser_page
    sign_in(page, username=user.username)

    for where in ("chat", "settings"):
        if where == "settings":
            page.goto("/settings/")
        sampling = page.get_by_role("group", name="Sampling")
        temperature = page.get_by_role("slider", name=re.compile("^Temperature"))
        top_p = page.get_by_role("slider", name=re.compile("^Top P"))
        expect(sampling.get_by_role("radio", name="default")).to_be_checked()
        expect(temperature).to_be_hidden()
        expect(top_p).to_be_hidden()

        sampling.get_by_text("temperature").click()
        expect(temperature).to_be_visible()
        expect(top_p).to_be_hidden()
        expect(temperature).to_have_accessible_description(
            "Sending temperature; Top P is not sent."
        )
        sampling.get_by_text("top P").click()
        expect(top_p).to_be_visible()
        expect(temperature).to_be_hidden()
    expect(page.locator('input[type="number"][name="temperature"]')).to_have_count(0)


def test_phone_header_is_one_row_and_the_transcript_gets_most_of_the_screen(
    browser_page: Page, live: DaphneServer, user, make_user
) -> None:
    conversation = _long_conversation(user, turns=3)
    ConversationReview.objects.create(
        conversation=conversation,
        note="Checked.",
        reviewed_at=timezone.now(),
        reviewed_by=make_user("moderator", is_staff=True),
    )
    page = browser_page
    page.set_viewport_size(PHONE)
    sign_in(page, username=user.username)
    page.goto(f"/c/{conversation.id}/")
    header = page.locator(".chat-header")
    notice = page.get_by_role("note", name="Staff review")

    tops = {
        round(header.locator(selector).bounding_box()["y"] / 10)
        for selector in ("#menu-toggle", "#chat-title", "#share-open", ".chat-menu > summary")
    }
    assert len(tops) == 1
    expect(notice).to_be_visible()
    notice.get_by_role("button", name="Dismiss the staff review notice").click()
    expect(notice).to_be_hidden()
    page.reload()
    expect(page.get_by_role("log")).to_be_visible()
    expect(notice).to_be_hidden()
    assert header.bounding_box()["height"] < 60
    expect(page.locator("#quota-status")).not_to_be_in_viewport()
    assert page.get_by_role("log").bounding_box()["height"] >= 0.65 * PHONE["height"]


def test_quota_line_shows_when_little_is_left_or_on_its_indicator(
    browser_page: Page, live: DaphneServer, user
) -> None:
    page = browser_page
    sign_in(page, username=user.username)
    quota = page.locator("#quota-status")

    expect(quota).not_to_be_in_viewport()
    page.get_by_role("button", name="Today's quota").hover()
    expect(quota).to_be_in_viewport()
    expect(quota).to_contain_text("500 of 500 messages left today")

    UserQuota.objects.update_or_create(user=user, defaults={"messages_per_day": 4})
    page.reload()
    expect(page.get_by_label("Message")).to_be_visible()
    expect(quota).to_be_visible()
    expect(quota).to_contain_text("4 of 4 messages left today")


def test_quota_line_counts_a_send_while_its_reply_streams_in_every_tab(
    browser_page: Page, live: DaphneServer, upstream: FakeUpstream, user
) -> None:
    gate = Gate()
    chunks = gateway_chunks(["First words", " and the rest"])
    upstream.enqueue(Stream([chunks[0], Hold(gate), *chunks[1:]]))
    UserQuota.objects.update_or_create(user=user, defaults={"messages_per_day": 4})
    page = browser_page
    sign_in(page, username=user.username)
    other_tab = page.context.new_page()
    # The quota frame is sent once: the other tab's socket must be open before the send.
    other_tab.add_init_script(
        "window.socketOpened = new Promise("
        "(resolve) => document.addEventListener('htmx:wsOpen', resolve, {once: true}))"
    )
    other_tab.goto(page.url)
    other_tab.evaluate("window.socketOpened.then(() => true)")
    page.goto(f"/c/{services.conversation_create(owner=user).id}/")
    expect(page.locator("#quota-status")).to_contain_text("4 of 4 messages left today")

    page.get_by_label("Message").fill("Count me")
    page.get_by_label("Message").press("Enter")

    reply = page.locator('article[data-role="assistant"]')
    expect(reply).to_contain_text("First words")
    expect(reply).to_have_attribute("data-status", "streaming")
    expect(page.locator("#quota-status")).to_contain_text("3 of 4 messages left today")
    expect(other_tab.locator("#quota-status")).to_contain_text("3 of 4 messages left today")
    gate.release()
    expect(reply).to_have_attribute("data-status", "complete")
    other_tab.close()


def test_rename_and_delete_live_in_more(browser_page: Page, live: DaphneServer, user) -> None:
    conversation = _long_conversation(user, turns=1)
    page = browser_page
    sign_in(page, username=user.username)
    page.goto(f"/c/{conversation.id}/")
    header = page.locator(".chat-header")

    expect(header.get_by_role("button", name="Rename", exact=True)).to_have_count(0)
    expect(header.get_by_role("button", name="Delete", exact=True)).to_have_count(0)
    page.get_by_text("More", exact=True).click()
    page.get_by_role("button", name="Delete…").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("shared links stop working")
    dialog.get_by_role("button", name="Delete for good").click()
    # Until the next page has loaded: its URL changes as soon as the navigation commits.
    page.wait_for_url(lambda url: str(conversation.id) not in url, wait_until="load")
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    assert not Conversation.objects.filter(id=conversation.id).exists()


def test_search_snippet_is_plain_text_and_opens_at_the_message(
    browser_page: Page, live: DaphneServer, user
) -> None:
    target = services.conversation_create(owner=user)
    exchange(target, "Tell me about birds", "Birds.")
    for turn in range(8):
        exchange(target, f"question {turn}", "A long answer.\n\n" * 12)
    exchange(target, "last", "The end.")
    reply = target.messages.get(content="Birds.")
    reply.content = "The **kiwi** is `flightless` and [lives](https://nz.example) in NZ."
    reply.save()
    page = browser_page
    sign_in(page, username=user.username)

    page.get_by_label("Search conversations").fill("flightless")

    result = page.get_by_role("list", name="Search results").get_by_role("link")
    expect(result).to_contain_text("The kiwi is flightless and lives in NZ.")
    result.click()
    article = page.locator(f"#msg-{reply.id}")
    expect(article).to_be_in_viewport()
    expect(article).to_have_class(re.compile("is-highlighted"))


def test_a_continued_reply_reads_as_one_with_a_larger_version_switcher(
    browser_page: Page, live: DaphneServer, user
) -> None:
    conversation = services.conversation_create(owner=user)
    _, cut = exchange(conversation, "Write a poem", "Roses are red,", finish_reason="length")
    continuation = finish(
        services.reply_redo(
            how=services.Redo.CONTINUE,
            conversation_id=conversation.id,
            owner=user,
            reply_id=cut.id,
            settings=turn_settings(),
            model=MODEL,
        ),
        " violets are blue.",
    )
    regenerated(conversation, continuation, " violets are purple.")
    page = browser_page
    sign_in(page, username=user.username)
    page.goto(f"/c/{conversation.id}/")
    first, second = page.locator(ASSISTANT).first, page.locator(ASSISTANT).last

    expect(first.locator(".message-footer")).to_be_hidden()
    expect(first.locator(".message-note")).to_be_hidden()
    expect(second.locator(".message-role")).to_be_hidden()
    expect(second.locator(".message-footer")).to_be_visible()
    expect(second.get_by_role("button", name="Previous version")).to_be_visible()
    # When the socket joins, the finished reply's article is swapped for a fresh copy, so a
    # measurement of the element found earlier can read a detached (0 px) button: measure the
    # button on the page now, on each poll, until its laid-out height is there (or time out).
    height = page.wait_for_function(
        """selector => {
            const replies = document.querySelectorAll(selector);
            const reply = replies[replies.length - 1];
            const button = reply && reply.querySelector('button[aria-label="Previous version"]');
            const height = button ? button.getBoundingClientRect().height : 0;
            return height >= 28 ? height : false;
        }""",
        arg=ASSISTANT,
    ).json_value()
    assert height >= 28


def test_admin_conversation_list_fits_a_1280_screen(
    browser_page: Page, live: DaphneServer, user, make_user
) -> None:
    exchange(services.conversation_create(owner=user), "A question", "An answer")
    make_user("moderator", is_staff=True, is_superuser=True)
    page = browser_page
    page.set_viewport_size(DESKTOP)
    page.goto("/admin/login/?next=/admin/")
    page.get_by_label("Username").fill("moderator")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/admin/")

    page.goto("/admin/conversations/conversation/")

    for column in ("Cost (USD)", "Shared", "Flagged", "Reviewed", "Transcript"):
        expect(page.get_by_role("columnheader", name=column)).to_be_in_viewport(ratio=1)
    assert page.evaluate("document.documentElement.scrollWidth") <= DESKTOP["width"]


@pytest.mark.parametrize("system", ["light", "dark"])
def test_one_palette_follows_the_system_unless_the_theme_is_pinned(
    browser_page: Page, live: DaphneServer, user, system: str
) -> None:
    page = browser_page
    page.emulate_media(color_scheme=system)
    sign_in(page, username=user.username)
    background = "getComputedStyle(document.body).backgroundColor"
    light, dark = "rgb(247, 247, 245)", "rgb(27, 27, 26)"
    theme = page.locator("#theme-toggle")

    assert page.evaluate(background) == (light if system == "light" else dark)
    theme.click()  # pinned light
    expect(page.locator("html")).to_have_attribute("data-theme", "light")
    assert page.evaluate(background) == light
    theme.click()  # pinned dark
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    assert page.evaluate(background) == dark
