"""End to end: the Model picker in headless Chromium, the controls following the profile."""

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from conversations.models import GatewayModel, Message
from tests.conftest import DaphneServer, sign_in
from tests.upstream_server import FakeUpstream

pytestmark = pytest.mark.browser

SONNET_5 = "anthropic/claude-sonnet-5"


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
    temperature = page.get_by_label("Temperature")
    expect(picker).to_have_value("anthropic/claude-sonnet-4.5")
    expect(temperature).to_be_visible()
    expect(page.get_by_label("Max tokens")).to_have_attribute("max", "64000")

    page.get_by_label("Top P").fill("0.8")
    picker.select_option(label="Claude Sonnet 5")

    expect(temperature).to_be_hidden()
    expect(page.get_by_label("Top P")).to_be_hidden()
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
    expect(temperature).to_be_visible()
    expect(temperature).to_have_attribute("max", "1")
    expect(page.get_by_text("Claude Sonnet 5 chooses its own sampling.")).to_be_hidden()

    # The choice is the conversation's: a reload keeps the model of the last turn.
    page.reload()
    expect(page.get_by_label("Model")).to_have_value(SONNET_5)
    expect(page.get_by_label("Temperature")).to_be_hidden()
