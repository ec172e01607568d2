"""The HTML fragments that websocket frames carry: htmx swaps each one out of band by id.

Deltas are the hot path, so they are built with plain escaping rather than a template.
"""

import re
from html import escape
from typing import Any

from django.template.loader import render_to_string

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


def message_article(*, message: Message) -> str:
    return render_to_string("chat/_message.html", {"message": message})


def message_replaced(*, message: Message) -> str:
    article = message_article(message=message)
    # The article keeps its id, so an outerHTML swap replaces the streaming one in place.
    return article.replace("<article ", '<article hx-swap-oob="true" ', 1)


def message_swapped(*, replaced_id: str, message: Message) -> str:
    """A retried reply takes the place of the failed one on screen."""
    article = message_article(message=message)
    return article.replace("<article ", f'<article hx-swap-oob="outerHTML:#msg-{replaced_id}" ', 1)


def quota_status(*, usage: Any) -> str:
    html = render_to_string("chat/_quota.html", {"quota": usage})
    return html.replace("<p ", '<p hx-swap-oob="true" ', 1)


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


def notice(*, message_id: str, text: str) -> str:
    return f'<p hx-swap-oob="innerHTML:#msg-{message_id}-notice">{escape(text)}</p>'


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


def sidebar(*, conversations: list[Conversation], current: Conversation | None) -> str:
    parts = [
        render_to_string(
            "chat/_conversation_list.html",
            {"conversations": conversations, "current": current, "oob": True},
        )
    ]
    if current is not None:
        parts.append(render_to_string("chat/_title.html", {"conversation": current, "oob": True}))
    return "".join(parts)
