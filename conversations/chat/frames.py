"""The HTML fragments that websocket frames carry: htmx swaps each one out of band by id.

Deltas are the hot path, so they are built with plain escaping rather than a template.
"""

import re
from html import escape
from typing import Any

from django.conf import settings
from django.template.loader import render_to_string
from django.urls import reverse

from conversations.chat import selectors
from conversations.models import Conversation, Message


def message_dom_id(message_id: str) -> str:
    return f"msg-{message_id}"


def stream_tail(*, message_id: str, text: str) -> str:
    """The not-yet-rendered end of a streaming reply: deltas append here, inline."""
    return f'<span id="msg-{message_id}-tail" class="stream-tail">{escape(text)}</span>'


# The block closing tags that end a rendered document (`</p>`, `</li></ul>`,
# `</code></pre></div>`); inline ones (`</strong>`) stay after the tail.
_TRAILING_CLOSING_TAGS = re.compile(
    r"(?:(?:</(?:p|li|ul|ol|blockquote|pre|div|h[1-6]|td|th|tr|tbody|thead|table)>"
    r"|</code>(?=</pre>))\s*)+\Z"
)


def _tail_inside_last_block(html: str, tail: str) -> str:
    """The tail continues the last paragraph (or list item, or code) rather than start a line of
    its own, so the text does not jump when the next render takes it in."""
    match = _TRAILING_CLOSING_TAGS.search(html)
    if match is None:
        return html + tail
    return html[: match.start()] + tail + html[match.start() :]


def turn_started(*, messages: list[Message]) -> str:
    articles = "".join(message_article(message=message) for message in messages)
    return f'<div hx-swap-oob="beforeend:#transcript">{articles}</div>'


# Out-of-band partials are marked one way: the template writes hx-swap-oob from its `oob`
# value (True, or a swap spec such as "outerHTML:#msg-…").


def message_article(*, message: Message, oob: bool | str = False) -> str:
    return render_to_string("chat/_message.html", {"message": message, "oob": oob})


def message_replaced(*, message: Message) -> str:
    # The article keeps its id, so an outerHTML swap replaces the streaming one in place.
    return message_article(message=message, oob=True)


def message_swapped(*, replaced_id: str, message: Message) -> str:
    """A retried reply takes the place of the failed one on screen."""
    return message_article(message=message, oob=f"outerHTML:#msg-{replaced_id}")


def quota_status(*, usage: Any) -> str:
    return render_to_string("chat/_quota.html", {"quota": usage, "oob": True})


def text_appended(*, message_id: str, text: str, reasoning: str) -> str:
    parts = []
    if reasoning:
        parts.append(
            f'<span hx-swap-oob="beforeend:#msg-{message_id}-reasoning">{escape(reasoning)}</span>'
        )
    if text:
        parts.append(f'<span hx-swap-oob="beforeend:#msg-{message_id}-tail">{escape(text)}</span>')
    return "".join(parts)


def text_replaced(*, message_id: str, text: str, reasoning: str) -> str:
    return (
        f'<div hx-swap-oob="innerHTML:#msg-{message_id}-reasoning">{escape(reasoning)}</div>'
        f'<div hx-swap-oob="innerHTML:#msg-{message_id}-content">'
        f"{stream_tail(message_id=message_id, text=text)}</div>"
    )


# Escaping turns a character into at most 6 (`&quot;`), each at most 4 bytes of UTF-8: a
# slice of frame limit / 32 characters always fits, with room for the markup around it.
SLICE_BYTES_PER_CHAR = 32


def _slice_chars() -> int:
    return max(1, settings.CHAT_WS_FRAME_MAX_BYTES // SLICE_BYTES_PER_CHAR)


def _slices(text: str) -> list[str]:
    step = _slice_chars()
    return [text[start : start + step] for start in range(0, len(text), step)]


def text_appended_pieces(*, message_id: str, text: str, reasoning: str) -> list[str]:
    """A delta as frames that each fit in a websocket message, in order (a fast gateway can
    bring megabytes within one flush interval)."""
    whole = text_appended(message_id=message_id, text=text, reasoning=reasoning)
    if frame_fits(whole):
        return [whole]
    return [
        text_appended(message_id=message_id, text="", reasoning=piece)
        for piece in _slices(reasoning)
    ] + [text_appended(message_id=message_id, text=piece, reasoning="") for piece in _slices(text)]


def text_replaced_pieces(*, message_id: str, text: str, reasoning: str) -> list[str]:
    """A snapshot as frames that each fit: the first replaces, the rest append."""
    whole = text_replaced(message_id=message_id, text=text, reasoning=reasoning)
    if frame_fits(whole):
        return [whole]
    step = _slice_chars()
    first = text_replaced(message_id=message_id, text=text[:step], reasoning=reasoning[:step])
    rest = text_appended_pieces(message_id=message_id, text=text[step:], reasoning=reasoning[step:])
    return [first, *rest]


def notice(*, message_id: str, text: str) -> str:
    return f'<p hx-swap-oob="innerHTML:#msg-{message_id}-notice">{escape(text)}</p>'


def window_notice(*, message_id: str, shown: int, received: int) -> str:
    return notice(
        message_id=message_id,
        text=(
            f"This reply is long: the first {shown:,} characters are shown; {received:,} "
            "received so far. The rest can be opened in parts when it ends."
        ),
    )


COMPOSER_ERROR = (
    '<p id="composer-error" class="composer-error" role="alert" hx-swap-oob="true">{}</p>'
)


def composer_error(*, text: str) -> str:
    return COMPOSER_ERROR.format(escape(text))


def composer_accepted(*, client_token: str) -> str:
    """Tells the sending tab its message was saved, so it may clear the composer."""
    ack = f'<div id="composer-ack" hidden data-token="{escape(client_token)}" hx-swap-oob="true">'
    return COMPOSER_ERROR.format("") + ack + "</div>"


SIDEBAR_SIZE = 100


def text_rendered(*, message_id: str, html: str, tail: str) -> str:
    """The Markdown of a streaming reply so far (`html`, already sanitised by rendering) and
    the text that arrived while it was rendered, as plain text inside the last block."""
    body = _tail_inside_last_block(html, stream_tail(message_id=message_id, text=tail))
    return (
        f'<div id="msg-{message_id}-content" class="message-body markdown" '
        f'hx-swap-oob="true">{body}</div>'
    )


def transcript(*, window: selectors.ThreadWindow) -> str:
    inner = render_to_string("chat/_thread.html", {"window": window})
    return f'<div hx-swap-oob="innerHTML:#transcript">{inner}</div>'


def frame_fits(text: str) -> bool:
    """Whether `text` fits in one websocket message (a larger one would close the socket)."""
    limit = settings.CHAT_WS_FRAME_MAX_BYTES
    # UTF-8 takes at most 4 bytes a character: most frames are decided without encoding them.
    return len(text) * 4 <= limit or len(text.encode()) <= limit


# Room for the wrapping div of a piece.
PIECE_OVERHEAD_BYTES = 128


def transcript_pieces(*, window: selectors.ThreadWindow) -> list[str] | None:
    """The transcript as frames that each fit in a websocket message: the first replaces the
    transcript, the others append to it, in order (deltas sent after them land on the
    messages they bring). None when a single message is too large for one frame."""
    whole = transcript(window=window)
    if frame_fits(whole):
        return [whole]
    limit = settings.CHAT_WS_FRAME_MAX_BYTES - PIECE_OVERHEAD_BYTES
    parts: list[str] = [render_to_string("chat/_older.html", {"window": window})]
    parts += [message_article(message=message) for message in window.messages]
    pieces: list[list[str]] = [[]]
    size = 0
    for part in parts:
        part_size = len(part.encode())
        if part_size > limit:
            return None
        if size + part_size > limit:
            pieces.append([])
            size = 0
        pieces[-1].append(part)
        size += part_size
    first, *rest = ("".join(piece) for piece in pieces)
    return [f'<div hx-swap-oob="innerHTML:#transcript">{first}</div>'] + [
        f'<div hx-swap-oob="beforeend:#transcript">{piece}</div>' for piece in rest
    ]


def transcript_fetch(*, conversation_id: object) -> str:
    """Makes the page load the transcript window over HTTP, which has no message size limit:
    sent instead of a frame too large for the socket."""
    url = reverse("conversation_older", args=[conversation_id])
    return (
        f'<div id="transcript-fetch" hidden hx-swap-oob="true" hx-get="{escape(url)}" '
        'hx-trigger="load" hx-target="#transcript" hx-swap="innerHTML"></div>'
    )


def sidebar(*, conversations: list[Conversation], current: Conversation | None) -> str:
    parts = [
        render_to_string(
            "chat/_conversation_list.html",
            {"conversations": conversations, "current": current, "oob": True},
        )
    ]
    if current is not None:
        context = {"conversation": current, "oob": True}
        parts.append(render_to_string("chat/_title.html", context))
        # Pin and archive show their state on the page too (the More menu, the archived note).
        parts.append(render_to_string("chat/_conversation_state.html", context))
        parts.append(render_to_string("chat/_archived_notice.html", context))
    return "".join(parts)
