"""What the chat page does per websocket frame, in Chromium: no forced synchronous layout
(no read of the transcript's geometry outside an animation frame) while a reply streams, and
still following the stream to its end."""

import re

import pytest
from playwright.sync_api import Page, expect

from conversations.chat import services
from tests.conftest import DaphneServer, sign_in
from tests.support.factories import exchange
from tests.support.upstream_server import FakeUpstream, Pause, Stream, gateway_chunks

pytestmark = pytest.mark.browser

# Counts reads of the geometry a page reads to follow a stream, split by whether they happen
# inside an animation frame callback (where layout is due anyway) or outside (forcing one).
COUNT_LAYOUT_READS = """
(() => {
  const reads = { inFrame: 0, outside: 0, frames: 0 };
  window.__layoutReads = reads;
  let inFrame = false;
  const raf = window.requestAnimationFrame.bind(window);
  window.requestAnimationFrame = (callback) => raf((time) => {
    inFrame = true;
    try { callback(time); } finally { inFrame = false; }
  });
  for (const name of ["scrollHeight", "scrollTop", "clientHeight"]) {
    const descriptor = Object.getOwnPropertyDescriptor(Element.prototype, name);
    Object.defineProperty(Element.prototype, name, {
      configurable: true,
      get() {
        if (inFrame) reads.inFrame++; else reads.outside++;
        return descriptor.get.call(this);
      },
      set: descriptor.set,
    });
  }
  document.addEventListener("htmx:wsAfterMessage", () => { reads.frames++; });
})();
"""
TRANSCRIPT_DISTANCE_FROM_END = (
    "(t => t.scrollHeight - t.scrollTop - t.clientHeight)(document.getElementById('transcript'))"
)


def test_streaming_frames_force_no_layout_and_the_page_follows_the_stream(
    browser_page: Page, live: DaphneServer, upstream: FakeUpstream, user
) -> None:
    lines = [f"Line {n} of a reply long enough to scroll.\n\n" for n in range(60)]
    chunks = gateway_chunks(lines)
    steps: list[object] = [chunks[0]]
    for chunk in chunks[1 : len(lines)]:
        # Apart enough for each line to be its own frame (the flush interval is 50 ms).
        steps += [Pause(0.08), chunk]
    steps += chunks[len(lines) :]
    upstream.enqueue(Stream(steps))  # type: ignore[arg-type]
    page = browser_page
    page.set_viewport_size({"width": 1000, "height": 600})
    page.add_init_script(COUNT_LAYOUT_READS)
    sign_in(page, username=user.username)

    page.get_by_label("Message").fill("Stream a while")
    page.get_by_role("button", name="Send").click()
    reply = page.locator('article[data-role="assistant"]')
    expect(reply).to_contain_text("Line 0 of")
    # From the first text on: only deltas, then the end of the reply.
    page.evaluate("window.__layoutReads.inFrame = window.__layoutReads.outside = 0")
    page.evaluate("window.__layoutReads.frames = 0")
    expect(reply).to_have_attribute("data-status", "complete", timeout=60_000)
    reads = page.evaluate("window.__layoutReads")

    assert reads["frames"] >= 20, reads
    assert reads["outside"] == 0, reads
    # It followed the stream: the end of the reply is in view.
    expect(page.locator(".message-body").last).to_contain_text("Line 59 of")
    page.wait_for_function(f"{TRANSCRIPT_DISTANCE_FROM_END} < 80")


def test_a_turn_start_forces_no_layout_and_the_composer_shrinks_back(
    browser_page: Page, live: DaphneServer, upstream: FakeUpstream, user
) -> None:
    """The frames before the first words (the composer's acknowledgement, the turn's articles,
    the first delta) arrive together: a forced layout in any of them delays the words."""
    upstream.enqueue(Stream(gateway_chunks(["Hello there."])))
    page = browser_page
    page.add_init_script(COUNT_LAYOUT_READS)
    sign_in(page, username=user.username)
    composer = page.get_by_label("Message")
    one_row = composer.evaluate("element => element.getBoundingClientRect().height")
    composer.fill("A question\nwritten\nover\nfive\nlines")
    assert composer.evaluate("element => element.getBoundingClientRect().height") > one_row

    page.evaluate("window.__layoutReads.inFrame = window.__layoutReads.outside = 0")
    page.get_by_role("button", name="Send").click()
    expect(page.locator(".message-body").last).to_contain_text("Hello there.")
    reads = page.evaluate("window.__layoutReads")

    assert reads["outside"] == 0, reads
    expect(composer).to_have_value("")
    page.wait_for_function(
        f"document.getElementById('message').getBoundingClientRect().height <= {one_row}"
    )


# Holds the page's socket "opening" (its open event) until the test lets it through.
HOLD_SOCKET_OPEN = """
(() => {
  const Real = window.WebSocket;
  let release;
  const gate = new Promise((resolve) => { release = resolve; });
  window.__openSockets = () => release();
  const Held = function (url, protocols) {
    const real = new Real(url, protocols);
    return new Proxy(real, {
      get(target, name) {
        const value = target[name];
        return typeof value === "function" ? value.bind(target) : value;
      },
      set(target, name, value) {
        if (name === "onopen") {
          target.onopen = (event) => gate.then(() => value.call(target, event));
        } else {
          target[name] = value;
        }
        return true;
      },
    });
  };
  Object.assign(Held, { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 });
  window.WebSocket = Held;
})();
"""


def test_an_edit_sent_before_the_socket_opens_is_sent_once_it_does(
    browser_page: Page, live: DaphneServer, upstream: FakeUpstream, user
) -> None:
    conversation = services.conversation_create(owner=user)
    exchange(conversation, "Name a colour", "Blue.")
    upstream.enqueue(Stream(gateway_chunks(["Green."])))
    page = browser_page
    sign_in(page, username=user.username)
    page.add_init_script(HOLD_SOCKET_OPEN)
    page.goto(f"/c/{conversation.id}/")
    asked = page.locator('article[data-role="user"]')

    asked.get_by_role("button", name=re.compile("Edit")).click()
    page.get_by_label("Edited text").fill("Name another colour")
    page.get_by_role("button", name="Send edit").click()
    expect(page.locator("#composer-error")).to_contain_text("Connecting")
    page.evaluate("window.__openSockets()")

    expect(page.locator('article[data-role="assistant"]')).to_contain_text("Green.")
    expect(asked).to_contain_text("Name another colour")
    expect(page.locator("#composer-error")).to_have_text("")
