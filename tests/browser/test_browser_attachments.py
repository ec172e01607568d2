"""Attachments end to end: real uploads in Chromium (file input, drop, paste) through to the
request body the loopback gateway receives, and the transcript after a reload."""

import base64
import re
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from conversations.attachments import selectors
from conversations.attachments.models import Attachment
from tests.conftest import DaphneServer, sign_in
from tests.support import attachment_files as files
from tests.support.browser_audit import assert_accessible
from tests.support.upstream_server import FakeUpstream, Stream, gateway_chunks

pytestmark = pytest.mark.browser

COMPLETE = 'article[data-role="assistant"][data-status="complete"]'


@pytest.fixture(autouse=True)
def _remove_stored_files(live: DaphneServer) -> Any:
    """Daphne stores into the default media folder; leave nothing there after a test."""
    yield
    for attachment in Attachment.objects.all():
        for name in (attachment.storage_name, attachment.thumbnail_name):
            if name and selectors.storage().exists(name):
                selectors.storage().delete(name)


def _request_parts(upstream: FakeUpstream) -> list[dict[str, Any]]:
    body = upstream.streamed_requests[-1].json
    return [m for m in body["messages"] if m["role"] == "user"][-1]["content"]


def _b64_of(part: dict[str, Any]) -> bytes:
    if part["type"] == "image_url":
        return base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
    return base64.b64decode(part["file"]["file_data"])


def test_photo_and_pdf_through_the_attach_button(
    browser_page: Page, live: DaphneServer, upstream: FakeUpstream, user: Any
) -> None:
    upstream.enqueue(Stream(gateway_chunks(["A photo and a report."])))
    page = browser_page
    sign_in(page, username=user.username)
    expect(page.locator("#attachment-limits")).to_contain_text("up to 20 per message")

    page.get_by_label("Attach").set_input_files(
        [
            {
                "name": "photo.jpg",
                "mimeType": "image/jpeg",
                "buffer": files.jpeg_with_exif(2000, 1000),
            },
            {"name": "report.pdf", "mimeType": "application/pdf", "buffer": files.pdf(pages=4)},
        ]
    )
    chips = page.locator("#attachment-chips li.is-done")
    expect(chips).to_have_count(2)
    expect(page.locator("#attachment-chips img.attachment-chip-thumb")).to_have_count(1)
    expect(page.get_by_role("button", name="Remove report.pdf")).to_be_visible()
    page.get_by_label("Message").fill("What are these?")
    page.get_by_role("button", name="Send").click()

    expect(page.locator(COMPLETE)).to_contain_text("A photo and a report.")
    expect(page.locator("#attachment-chips li")).to_have_count(0)
    user_article = page.locator('article[data-role="user"]')
    expect(user_article.locator(".attachment-thumb img")).to_have_count(1)
    expect(user_article.locator(".attachment-file")).to_contain_text("PDF · 4 pages")

    parts = _request_parts(upstream)
    image, pdf = Attachment.objects.get(kind="image"), Attachment.objects.get(kind="pdf")
    assert (image.width, image.height) == (1568, 784)
    assert [p["type"] for p in parts] == ["image_url", "file", "text", "text"]
    assert parts[0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert _b64_of(parts[0]) == selectors.attachment_read(attachment=image)
    assert _b64_of(parts[1]) == selectors.attachment_read(attachment=pdf) == files.pdf(pages=4)
    assert parts[-1]["text"] == "What are these?"

    page.reload()
    user_article = page.locator('article[data-role="user"]')
    expect(user_article.locator(".attachment-thumb img")).to_have_count(1)
    thumbnail = user_article.locator(".attachment-thumb img")
    expect(thumbnail).to_have_js_property("naturalWidth", 320)
    user_article.locator(".attachment-thumb").click()
    viewer = page.locator("#attachment-lightbox")
    expect(viewer).to_be_visible()
    expect(viewer.locator("img")).to_have_js_property("naturalWidth", 1568)
    page.keyboard.press("Escape")
    expect(viewer).to_be_hidden()


def test_a_file_goes_without_words(
    browser_page: Page, live: DaphneServer, upstream: FakeUpstream, user: Any
) -> None:
    upstream.enqueue(Stream(gateway_chunks(["A small square."])))
    page = browser_page
    sign_in(page, username=user.username)
    message = page.get_by_label("Message")
    expect(message).to_have_attribute("required", "")

    page.get_by_label("Attach").set_input_files(
        [{"name": "square.png", "mimeType": "image/png", "buffer": files.png(40, 40)}]
    )
    expect(page.locator("#attachment-chips li.is-done")).to_have_count(1)
    expect(message).not_to_have_attribute("required", "")
    message.press("Enter")

    expect(page.locator(COMPLETE)).to_contain_text("A small square.")
    parts = _request_parts(upstream)
    assert [p["type"] for p in parts] == ["image_url", "text"]
    assert parts[-1]["text"].startswith("Attached files: square.png")
    # With the files gone the text is required again.
    expect(message).to_have_attribute("required", "")


DROP_AND_PASTE = """
async ([kind, name, type, bytes]) => {
  const file = new File([new Uint8Array(bytes)], name, { type });
  const data = new DataTransfer();
  data.items.add(file);
  if (kind === "drop") {
    const target = document.querySelector("#transcript");
    const init = { dataTransfer: data, bubbles: true, cancelable: true };
    target.dispatchEvent(new DragEvent("dragover", init));
    target.dispatchEvent(new DragEvent("drop", init));
  } else {
    document.querySelector("#message").dispatchEvent(
      new ClipboardEvent("paste", { clipboardData: data, bubbles: true, cancelable: true })
    );
  }
}
"""


@pytest.mark.parametrize("style", ["openai", "anthropic"])
def test_drop_and_paste_reach_the_gateway(
    browser_page: Page,
    live: DaphneServer,
    upstream: FakeUpstream,
    user: Any,
    style: str,
    page_on: Any,
) -> None:
    server = DaphneServer(upstream=upstream, extra_env={"CHAT_REQUEST_STYLE": style})
    server.start()
    try:
        page = page_on(server)
        upstream.enqueue(Stream(gateway_chunks(["Two images."])))
        sign_in(page, username=user.username)
        dropped = files.png(50, 40, (0, 200, 0))
        pasted = files.png(30, 20, (0, 0, 200))
        page.evaluate(DROP_AND_PASTE, ["drop", "dropped.png", "image/png", list(dropped)])
        page.evaluate(DROP_AND_PASTE, ["paste", "image.png", "image/png", list(pasted)])
        expect(page.locator("#attachment-chips li")).to_have_count(2)
        expect(page.locator("#attachment-chips li.is-done")).to_have_count(2)
        page.get_by_label("Message").fill("Compare them")
        page.get_by_label("Message").press("Enter")
        expect(page.locator(COMPLETE)).to_contain_text("Two images.")

        parts = _request_parts(upstream)
        images = [p for p in parts if p["type"] in ("image_url", "image")]
        assert len(images) == 2
        if style == "anthropic":
            assert {p["source"]["media_type"] for p in images} == {"image/png"}
            decoded = [base64.b64decode(p["source"]["data"]) for p in images]
        else:
            decoded = [_b64_of(p) for p in images]
        stored = [
            selectors.attachment_read(attachment=a)
            for a in Attachment.objects.order_by("created_at")
        ]
        assert sorted(decoded) == sorted(stored)
        assert "dropped.png (image, 50×40 px)" in parts[-2]["text"]
    finally:
        server.stop()


def test_bad_file_gets_its_message_and_send_waits_for_uploads(
    browser_page: Page, live: DaphneServer, upstream: FakeUpstream, user: Any
) -> None:
    page = browser_page
    sign_in(page, username=user.username)
    page.get_by_label("Attach").set_input_files(
        {"name": "locked.pdf", "mimeType": "application/pdf", "buffer": files.pdf(password="pw")}
    )
    failed = page.locator("#attachment-chips li.is-failed")
    expect(failed).to_contain_text("encrypted or password-protected")
    page.get_by_role("button", name="Remove locked.pdf").click()
    expect(page.locator("#attachment-chips li")).to_have_count(0)
    assert not Attachment.objects.exists()

    # Hold the next upload until the message has been sent.
    held: list[Any] = []
    page.route(re.compile(r".*/attachments/$"), lambda route: held.append(route))
    page.get_by_label("Attach").set_input_files(
        {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"remember the milk"}
    )
    page.get_by_label("Message").fill("Read my notes")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#attachment-status")).to_have_text("Sending once the uploads finish…")
    expect(page.locator('article[data-role="user"]')).to_have_count(0)
    upstream.enqueue(Stream(gateway_chunks(["Milk noted."])))
    assert len(held) == 1
    held[0].continue_()
    expect(page.locator(COMPLETE)).to_contain_text("Milk noted.")
    parts = _request_parts(upstream)
    assert parts[0] == {
        "type": "text",
        "text": '<file name="notes.txt">\nremember the milk\n</file>',
    }


def test_editing_a_message_can_drop_one_of_its_attachments(
    browser_page: Page, live: DaphneServer, upstream: FakeUpstream, user: Any
) -> None:
    from conversations.attachments import services
    from conversations.chat import services as chat_services
    from tests.support.factories import finish, turn_with_attachments

    image = services.attachment_upload(owner=user, data=files.png(), filename="cat.png")
    document = services.attachment_upload(owner=user, data=files.pdf(), filename="notes.pdf")
    conversation = chat_services.conversation_create(owner=user)
    started = turn_with_attachments(conversation, "Look at these", [image, document])
    finish(started.reply, "Seen.")
    upstream.enqueue(Stream(gateway_chunks(["Only the PDF now."])))
    page = browser_page
    sign_in(page, username=user.username)
    page.goto(f"/c/{conversation.id}/")
    user_article = page.locator('article[data-role="user"]')
    expect(user_article.locator(".message-attachment")).to_have_count(2)

    user_article.get_by_role("button", name="Edit").click()
    page.get_by_label("Keep cat.png").uncheck()
    expect(page.get_by_label("Keep notes.pdf")).to_be_checked()
    page.get_by_role("button", name="Send edit").click()

    expect(page.locator(COMPLETE)).to_contain_text("Only the PDF now.")
    expect(page.locator('article[data-role="user"] .message-attachment')).to_have_count(1)
    expect(page.locator('article[data-role="user"] .attachment-file')).to_contain_text("notes.pdf")
    parts = _request_parts(upstream)
    assert [p["type"] for p in parts] == ["file", "text", "text"]
    assert parts[-1]["text"] == "Look at these"
    # The first version still has both: the branch shares the rows, nothing was copied.
    assert Attachment.objects.count() == 2


def _edited_user_message_files(original_id: Any) -> list[str]:
    """The filenames the edit's new user message was saved with, in order."""
    from conversations.models import Message

    edited = Message.objects.filter(role=Message.Role.USER).exclude(id=original_id).get()
    return [
        a.filename for a in selectors.attachments_by_message(message_ids=[edited.id])[edited.id]
    ]


def test_the_edit_form_sends_the_kept_file_and_not_the_removed_one(
    browser_page: Page, live: DaphneServer, upstream: FakeUpstream, user: Any
) -> None:
    """The ws-send edit form: new text and the ticked box reach the server as the edit frame,
    so the saved new version carries exactly the kept file (sent with Enter, from the keyboard)."""
    from conversations.attachments import services
    from conversations.chat import services as chat_services
    from tests.support.factories import finish, turn_with_attachments

    image = services.attachment_upload(owner=user, data=files.png(), filename="cat.png")
    document = services.attachment_upload(owner=user, data=files.pdf(), filename="notes.pdf")
    conversation = chat_services.conversation_create(owner=user)
    started = turn_with_attachments(conversation, "Look at these", [image, document])
    finish(started.reply, "Seen.")
    upstream.enqueue(Stream(gateway_chunks(["Just the cat."])))
    page = browser_page
    sign_in(page, username=user.username)
    page.goto(f"/c/{conversation.id}/")
    user_article = page.locator('article[data-role="user"]')
    expect(user_article.locator(".message-attachment")).to_have_count(2)

    user_article.get_by_role("button", name=re.compile("^Edit")).click()
    page.get_by_label("Keep notes.pdf").uncheck()
    expect(page.get_by_label("Keep cat.png")).to_be_checked()
    assert_accessible(page, "editing a message with attachments")
    page.get_by_label("Edited text").fill("Only the cat")
    page.get_by_label("Edited text").press("Enter")

    expect(page.locator(COMPLETE)).to_contain_text("Just the cat.")
    expect(user_article).to_contain_text("Only the cat")
    assert _edited_user_message_files(started.user_message.id) == ["cat.png"]
    parts = _request_parts(upstream)
    assert [p["type"] for p in parts] == ["image_url", "text", "text"]
    assert parts[-1]["text"] == "Only the cat"
    # The first version keeps both.
    first = selectors.attachments_by_message(message_ids=[started.user_message.id])
    assert [a.filename for a in first[started.user_message.id]] == ["cat.png", "notes.pdf"]


def test_the_edit_form_with_every_file_unticked_keeps_none(
    browser_page: Page, live: DaphneServer, upstream: FakeUpstream, user: Any
) -> None:
    from conversations.attachments import services
    from conversations.chat import services as chat_services
    from tests.support.factories import finish, turn_with_attachments

    image = services.attachment_upload(owner=user, data=files.png(), filename="cat.png")
    conversation = chat_services.conversation_create(owner=user)
    started = turn_with_attachments(conversation, "Look", [image])
    finish(started.reply, "Seen.")
    upstream.enqueue(Stream(gateway_chunks(["No picture now."])))
    page = browser_page
    sign_in(page, username=user.username)
    page.goto(f"/c/{conversation.id}/")

    page.locator('article[data-role="user"]').get_by_role(
        "button", name=re.compile("^Edit")
    ).click()
    page.get_by_label("Keep cat.png").uncheck()
    page.get_by_role("button", name="Send edit").click()

    expect(page.locator(COMPLETE)).to_contain_text("No picture now.")
    assert _edited_user_message_files(started.user_message.id) == []
    assert upstream.requests[-1].json["messages"][-1]["content"] == "Look"
