"""The Markdown of a reply while it streams, a few times a second, off the event loop.

Kept behind this small class so that an incremental renderer (finished blocks cached, only the
last one re-rendered) can replace the whole-text render without touching the generation.
"""

import asyncio

from conversations.chat.rendering import markdown_to_html


class StreamingRender:
    def __init__(self) -> None:
        self.rendered_length = 0

    def is_current(self, length: int) -> bool:
        return length == self.rendered_length

    async def render(self, text: str) -> str:
        """Sanitised HTML of `text` (the reply so far)."""
        return await asyncio.to_thread(markdown_to_html, text)

    def shown(self, length: int) -> None:
        """The viewers were sent the render of the first `length` characters."""
        self.rendered_length = length
