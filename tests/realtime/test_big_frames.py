"""No frame over the websocket's message limit: a huge reply and a regenerate in a thread of
large replies keep every socket open, on a real Daphne (whose limit is 1 MiB) with a real
websocket client that enforces the same limit."""

import asyncio
import html
import json
import re
from typing import Any

import httpx
import pytest
import websockets
from django.conf import settings as django_settings
from playwright.sync_api import Page, expect

from conversations.chat import frames
from conversations.chat.services import conversation_create
from conversations.models import Conversation, Message
from tests.conftest import DaphneServer, sign_in
from tests.support.factories import exchange
from tests.support.sockets import (
    SEND,
)
from tests.support.upstream_server import FakeUpstream, Stream, gateway_chunks
from tests.support.ws import session_cookie

# Daphne's default --websocket-max-message-size, which the app's own limit must not exceed.
DAPHNE_LIMIT = 1024 * 1024
# Generous: megabytes stream through a small, shared CI machine.
TIMEOUT = 120
CONTROLS = {k: v for k, v in SEND.items() if k not in ("action", "message")}


class Socket:
    """A websocket client that refuses messages over the limit, as a browser at 1 MiB would
    not, so that the test notices any frame the server should not have sent."""

    def __init__(self, server: DaphneServer, cookie: str, conversation: Conversation) -> None:
        self.url = f"ws://127.0.0.1:{server.port}/ws/c/{conversation.id}/"
        self.headers = {
            "Cookie": f"{django_settings.SESSION_COOKIE_NAME}={cookie}",
            "Origin": server.url,
        }
        self.largest = 0
        # Characters of reply text appended to the screen by deltas.
        self.appended = 0
        self.connection: Any = None

    async def __aenter__(self) -> "Socket":
        self.connection = await websockets.connect(
            self.url, additional_headers=self.headers, max_size=DAPHNE_LIMIT
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.connection.close()

    async def until(self, *needles: str) -> str:
        """The first frame that holds every one of `needles`."""
        async with asyncio.timeout(TIMEOUT):
            while True:
                frame = str(await self.connection.recv())
                self.largest = max(self.largest, len(frame.encode()))
                for shown in re.findall(r'beforeend:#msg-[^"]*-tail">([^<]*)</span>', frame):
                    self.appended += len(html.unescape(shown))
                if all(needle in frame for needle in needles):
                    return frame

    async def still_open(self, tag: str) -> None:
        """An unknown action is answered on the same socket: it still reads and writes."""
        await self.connection.send(json.dumps({"action": f"probe-{tag}"}))
        await self.until(f"probe-{tag}")


@pytest.mark.browser
def test_a_5_mb_reply_streams_and_keeps_every_socket_open(
    live: DaphneServer, upstream: FakeUpstream, user: Any
) -> None:
    piece = "All work and no play makes a very long reply. " * 200  # 9.4 KB
    pieces = [piece] * 560  # ≈ 5.2 MB
    upstream.enqueue(Stream(gateway_chunks(pieces)))
    conversation = conversation_create(owner=user)
    cookie = session_cookie(user)

    async def run() -> tuple[int, int, str, str, int]:
        async with Socket(live, cookie, conversation) as sender:
            await sender.connection.send(json.dumps(SEND))
            # The finished reply is shown windowed: its final frame fits in one message.
            final = await sender.until('data-status="complete"', "data-windowed")
            await sender.still_open("sender")
            # A socket opened after the reply gets the same window.
            async with Socket(live, cookie, conversation) as late:
                restated = await late.until('data-status="complete"', "data-windowed")
                await late.still_open("late")
            return sender.largest, late.largest, final, restated, sender.appended

    largest_sender, largest_late, final, restated, appended = asyncio.run(run())

    reply = Message.objects.get(conversation=conversation, role="assistant")
    assert reply.status == Message.Status.COMPLETE
    whole = piece * len(pieces)
    assert reply.content == whole and len(whole) > 5_000_000
    assert largest_sender <= DAPHNE_LIMIT and largest_late <= DAPHNE_LIMIT
    # The screen holds one window of the reply, never the megabytes, while it streams too.
    window = django_settings.CHAT_MESSAGE_WINDOW_CHARS
    assert 0 < appended <= window
    for frame in (final, restated):
        assert len(frame) < 3 * window
        assert "transcript-fetch" not in frame
    # The rest is reachable: window after window over HTTP, and whole as a download.
    url = re.search(r'data-url="([^"]+)"', final)
    assert url, final
    pieces_read = [whole[:window]]
    next_url = html.unescape(url.group(1))
    with httpx.Client(
        base_url=live.url, cookies={django_settings.SESSION_COOKIE_NAME: cookie}, timeout=TIMEOUT
    ) as http:
        while True:
            part = http.get(next_url).json()
            assert len(part["text"]) <= window
            pieces_read.append(part["text"])
            if part["shown"] >= part["total"]:
                break
            next_url = re.sub(r"start=\d+", f"start={part['shown']}", next_url)
        download = http.get(re.sub(r"\?.*", "?download=1", next_url))
    assert "".join(pieces_read) == whole
    assert download.status_code == 200 and download.text == whole
    assert "attachment" in download.headers["content-disposition"]


@pytest.mark.browser
def test_a_3_mb_regenerate_arrives_in_pieces_and_keeps_the_socket_open(
    live: DaphneServer, upstream: FakeUpstream, user: Any
) -> None:
    conversation = conversation_create(owner=user)
    for turn in range(12):
        _, last = exchange(conversation, f"Question {turn}", f"Answer {turn}: " + "word " * 25_000)
    upstream.enqueue(Stream(gateway_chunks(["A short ", "new version."])))
    cookie = session_cookie(user)

    async def run() -> tuple[int, str]:
        async with Socket(live, cookie, conversation) as socket:
            await socket.until('hx-swap-oob="true"')  # the last reply, restated on connect
            frame = {**CONTROLS, "action": "regenerate", "message_id": str(last.id)}
            await socket.connection.send(json.dumps(frame))
            await socket.until('data-role="assistant" data-status="complete"', "new version.")
            await socket.still_open("after")
            return socket.largest, ""

    largest, _ = asyncio.run(run())

    rendered_thread = sum(
        len(m.content_html or m.content) * 2
        for m in Message.objects.filter(conversation=conversation)
    )
    assert rendered_thread > 3_000_000, (
        "the thread must be larger than a frame for the test to mean anything"
    )
    assert largest <= DAPHNE_LIMIT
    newest = Message.objects.filter(conversation=conversation, role="assistant").latest(
        "created_at"
    )
    assert newest.content == "A short new version."


@pytest.mark.browser
def test_the_page_shows_a_huge_reply_in_windows_and_reaches_the_rest(
    browser_page: Page, live: DaphneServer, upstream: FakeUpstream, user: Any
) -> None:
    line = "Another line of a reply far larger than a websocket message. "
    piece = line * 100
    upstream.enqueue(Stream(gateway_chunks([piece] * 300)))  # ≈ 1.9 MB
    upstream.enqueue(Stream(gateway_chunks(["Still ", "talking."])))
    page = browser_page
    sign_in(page, username=user.username)
    window = django_settings.CHAT_MESSAGE_WINDOW_CHARS

    page.get_by_label("Message").fill("Write at length")
    page.get_by_role("button", name="Send").click()
    replies = page.locator('article[data-role="assistant"]')
    expect(replies.first).to_have_attribute("data-status", "complete", timeout=60_000)
    expect(page.locator("body")).not_to_have_class(re.compile("socket-closed"))
    body = replies.first.locator(".message-body")
    # One window on screen, not the megabytes: the page stays light.
    assert len(body.inner_text()) == window
    more = replies.first.get_by_role("button", name="Show more")
    more.click()
    expect(body).to_have_js_property("textContent", (piece * 300)[: 2 * window])
    expect(replies.first.locator(".message-window-label")).to_contain_text(
        f"first {2 * window} of {len(piece) * 300}"
    )
    download = replies.first.get_by_role("link", name="Download the whole reply")
    response = page.request.get(download.get_attribute("href") or "")
    assert response.text() == piece * 300

    # The socket still carries turns.
    page.get_by_label("Message").fill("And briefly?")
    page.get_by_role("button", name="Send").click()
    expect(replies.nth(1)).to_have_attribute("data-status", "complete", timeout=60_000)
    expect(replies.nth(1)).to_contain_text("Still talking.")


@pytest.mark.parametrize("reasoning", ["", 'Thinking "aloud" & <at> length. ' * 20_000])
def test_slices_of_a_huge_delta_or_snapshot_each_fit_and_add_up(reasoning: str) -> None:
    # Escaping multiplies characters like these by up to six.
    text = '<b>"Quoted" & escaped</b> ünïcödé 😀 ' * 60_000
    for build in (frames.text_appended_pieces, frames.text_replaced_pieces):
        pieces = build(message_id="m", text=text, reasoning=reasoning)
        assert len(pieces) > 1
        assert all(len(piece.encode()) <= DAPHNE_LIMIT for piece in pieces)
        # Text goes to the streaming tail (appended, or the tail inside a replaced body).
        shown = "".join(re.findall(r"-(?:content|tail)\"[^>]*>([^<]*)<", "".join(pieces)))
        assert html.unescape(shown) == text
        thought = "".join(re.findall(r"-reasoning\">([^<]*)<", "".join(pieces)))
        assert html.unescape(thought) == reasoning
