"""End to end: the Model picker in headless Chromium, the controls following the profile."""

import re

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from conversations.catalogue.context import SUMMARY_NOTE
from conversations.models import Conversation, GatewayModel, Message
from tests.conftest import DaphneServer, sign_in
from tests.support.transcripts import add_turn
from tests.support.upstream_server import ErrorReply, FakeUpstream, completion_reply

pytestmark = pytest.mark.browser

SONNET_5 = "anthropic/claude-sonnet-5"
SONNET_4_6 = "anthropic/claude-sonnet-4.6"
# About 57k tokens each by the page's estimate.
LONG = "word " * 40_000


def test_picking_a_model_changes_the_controls_and_the_request(
    browser_page: Page, live: DaphneServer, upstream: FakeUpstream, user
) -> None:
    # What the models list said about a model the built-ins do not know (fresh, so the
    # server does not refresh it again while the test runs).
    GatewayModel.objects.create(
        model_id=SONNET_5,
        display_name="Claude Sonnet 5",
        kind="adaptive",
        max_output_tokens=128_000,
        listed=True,
        refreshed_at=timezone.now(),
    )
    page = browser_page
    sign_in(page, username=user.username)
    picker = page.get_by_label("Model")
    sampling = page.get_by_role("group", name="Sampling")
    temperature = page.get_by_role("slider", name=re.compile("^Temperature"))
    top_p = page.get_by_role("slider", name=re.compile("^Top P"))
    expect(picker).to_have_value("anthropic/claude-sonnet-4.5")
    sampling.get_by_text("temperature").click()
    expect(temperature).to_be_visible()
    expect(page.get_by_label("Max tokens")).to_have_attribute("max", "64000")

    sampling.get_by_text("top P").click()
    top_p.fill("0.8")
    picker.select_option(label="Claude Sonnet 5")

    # The segmented choice offers only what the model takes: nothing, here.
    expect(sampling).to_be_hidden()
    expect(temperature).to_be_hidden()
    expect(top_p).to_be_hidden()
    expect(page.get_by_label("Reasoning effort")).to_be_hidden()
    expect(page.get_by_text("Claude Sonnet 5 chooses its own sampling.")).to_be_visible()
    expect(
        page.get_by_text("Claude Sonnet 5 decides for itself how much to think.")
    ).to_be_visible()
    expect(page.get_by_label("Max tokens")).to_have_attribute("max", "128000")

    page.get_by_label("Message").fill("Which model are you?")
    page.get_by_role("button", name="Send").click()
    expect(page.locator('article[data-role="assistant"]')).to_have_attribute(
        "data-status", "complete"
    )
    body = upstream.streamed_requests[-1].json
    assert body["model"] == SONNET_5
    assert "top_p" not in body and "temperature" not in body
    assert Message.objects.get(role=Message.Role.ASSISTANT).model == SONNET_5

    # Back to a Claude 4 model: its sampling controls return, in its ranges.
    picker.select_option(label="Claude Sonnet 4.6")
    expect(sampling).to_be_visible()
    expect(sampling.get_by_role("radio", name="default")).to_be_checked()
    sampling.get_by_text("temperature").click()
    expect(temperature).to_be_visible()
    expect(temperature).to_have_attribute("max", "1")
    expect(page.get_by_text("Claude Sonnet 5 chooses its own sampling.")).to_be_hidden()

    # The choice is the conversation's: a reload keeps the model of the last turn.
    page.reload()
    expect(page.get_by_label("Model")).to_have_value(SONNET_5)
    expect(page.get_by_role("group", name="Sampling")).to_be_hidden()


def _near_the_limit(user) -> Conversation:
    conversation = Conversation.objects.create(owner=user, model=SONNET_4_6, title="Long one")
    for question, answer in (("First question", LONG), ("Second question", LONG)):
        reply = add_turn(conversation, question, answer)
    Message.objects.filter(id=reply.id).update(
        model=SONNET_4_6, prompt_tokens=199_000, completion_tokens=300
    )
    return conversation


def test_a_turn_that_would_not_fit_offers_to_leave_the_oldest_turns_out(
    browser_page: Page, live: DaphneServer, upstream: FakeUpstream, user
) -> None:
    conversation = _near_the_limit(user)
    page = browser_page
    sign_in(page, username=user.username)
    page.goto(f"/c/{conversation.id}/")
    meter = page.locator("#context-meter")
    expect(meter).to_contain_text("199k of 200k")

    page.get_by_label("Message").fill("z" * 7000)
    expect(meter).to_contain_text("201k of 200k")
    page.get_by_label("Message").fill("Third question")
    page.get_by_role("button", name="Send").click()

    offers = page.locator("#context-offers")
    expect(offers).to_contain_text("This conversation no longer fits in the model's context")
    assert upstream.streamed_requests == []
    offers.get_by_role("button", name="Leave the oldest turns out").click()
    expect(offers).to_contain_text("The first 2 messages of this conversation are now left out")
    expect(page.get_by_text("The messages before this one are left out")).to_be_visible()
    expect(page.get_by_label("Message")).to_have_value("Third question")

    page.get_by_role("button", name="Send").click()
    replies = page.locator('article[data-role="assistant"]')
    expect(replies).to_have_count(3)
    expect(replies.last).to_have_attribute("data-status", "complete")
    sent = [m["content"] for m in upstream.streamed_requests[-1].json["messages"]]
    assert sent == ["Second question", LONG, "Third question"]


def test_the_gateways_prompt_too_long_offers_a_new_conversation_from_a_summary(
    browser_page: Page, live: DaphneServer, upstream: FakeUpstream, user
) -> None:
    conversation = Conversation.objects.create(owner=user, model=SONNET_4_6, title="Trip")
    add_turn(conversation, "Plan a trip to Lisbon", "Day 1: Alfama.")
    too_long = ErrorReply(
        400,
        {"error": {"message": "prompt is too long: 212000 tokens > 200000 maximum"}},
    )
    upstream.enqueue(too_long, completion_reply("Lisbon trip: day 1 in Alfama."))
    page = browser_page
    sign_in(page, username=user.username)
    page.goto(f"/c/{conversation.id}/")

    page.get_by_label("Message").fill("And day 2?")
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("alert").filter(has_text="too long for the model")).to_be_visible()
    offers = page.locator("#context-offers")
    offers.get_by_role("button", name="Continue in a new conversation from a summary").click()
    summary = page.get_by_label("Summary to start the new conversation from")
    expect(summary).to_have_value("Lisbon trip: day 1 in Alfama.")
    summary.fill("Lisbon trip: day 1 in Alfama. Next: Belém.")
    page.get_by_role("button", name="Start the new conversation").click()

    page.wait_for_url(lambda url: str(conversation.id) not in url)
    expect(page.get_by_label("System prompt")).to_have_value(
        f"{SUMMARY_NOTE}\nLisbon trip: day 1 in Alfama. Next: Belém."
    )
    assert Message.objects.filter(conversation=conversation).count() == 4
