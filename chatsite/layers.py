"""The in-memory channel layer, without its per-call O(channels) costs.

Channels' `InMemoryChannelLayer` scans every channel and group for expired entries on every
`receive` and `group_send`, and `group_send` spawns one task per member. With hundreds of open
sockets each streaming deltas that made the layer the largest single cost on the hot path
(bench/REPORT.md). Here the scan runs at most once a second (expiry is measured in tens of
seconds, so nothing expires noticeably later) and a group send puts the message on each
member's queue directly (each put never waits, so the tasks bought nothing), copying a flat
message of scalars with dict.copy rather than deepcopy.
"""

import asyncio
import contextlib
import time
from copy import deepcopy
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer

CLEAN_EVERY = 1.0
_SCALARS = frozenset({str, int, float, bool, bytes, type(None)})


def _copy(message: dict[str, Any]) -> dict[str, Any]:
    """What deepcopy gives, without its cost for the usual flat message of scalars."""
    for value in message.values():
        if type(value) not in _SCALARS:
            return deepcopy(message)
    return message.copy()


class FastInMemoryChannelLayer(InMemoryChannelLayer):
    _next_clean = 0.0

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now < self._next_clean:
            return
        self._next_clean = now + CLEAN_EVERY
        super()._clean_expired()

    async def send(self, channel: str, message: dict) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        assert "__asgi_channel__" not in message
        queue = self.channels.get(channel)
        if queue is None:  # (the base class builds a throwaway Queue on every send)
            queue = self.channels[channel] = asyncio.Queue(maxsize=self.get_capacity(channel))
        try:
            queue.put_nowait((time.time() + self.expiry, _copy(message)))
        except asyncio.QueueFull:
            raise ChannelFull(channel) from None

    async def group_send(self, group: str, message: dict) -> None:
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        self._clean_expired()
        members = self.groups.get(group)
        if not members:
            return
        for channel in list(members):
            with contextlib.suppress(ChannelFull):
                await self.send(channel, message)
