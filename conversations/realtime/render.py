"""The Markdown of a reply while it streams, a few times a second, off the event loop.

Finished blocks keep their HTML (`StreamingMarkdown`), so each render costs what the last,
unfinished block costs, not what the whole reply costs.
"""

import asyncio
import threading

from conversations.chat.rendering import StreamingMarkdown


class StreamingRender:
    def __init__(self) -> None:
        self.rendered_length = 0
        self._markdown = StreamingMarkdown()
        # A render cancelled on the loop goes on in its thread: the next one waits for it.
        self._rendering = threading.Lock()

    def is_current(self, length: int) -> bool:
        return length == self.rendered_length

    async def render(self, text: str) -> str:
        """Sanitised HTML of `text` (the reply so far), as `markdown_to_html` gives it."""
        return await asyncio.to_thread(self._render, text)

    def _render(self, text: str) -> str:
        with self._rendering:
            return self._markdown.render(text)

    def shown(self, length: int) -> None:
        """The viewers were sent the render of the first `length` characters."""
        self.rendered_length = length
