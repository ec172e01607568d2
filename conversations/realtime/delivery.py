"""Sending to the viewers through a channel layer that may be full, slow or down.

A send that fails costs the viewers a frame, never the reply its text: deltas are stamped with
their offset, so the next one that arrives shows a socket the gap and it asks for a snapshot.
While sends fail, the reply's flushes back off (they would fail too) and one warning is logged
per outage, not one per frame.
"""

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)

BACKOFF_FIRST = 0.1
BACKOFF_MAX = 2.0


class LayerHealth:
    def __init__(self, *, reply_id: uuid.UUID) -> None:
        self._reply_id = reply_id
        self._failures = 0

    async def attempt(self, send: Awaitable[None]) -> bool:
        """Await one send; False (logged once per outage) if the layer refused it."""
        try:
            await send
        except Exception as exc:
            if not self._failures:
                logger.warning(
                    "channel layer send for reply %s failed (%r); the reply goes on, its "
                    "viewers catch up when the layer is back",
                    self._reply_id,
                    exc,
                )
            self._failures += 1
            return False
        if self._failures:
            logger.warning("channel layer sends for reply %s work again", self._reply_id)
            self._failures = 0
        return True

    def backoff(self) -> float:
        """How long to wait before the next send: 0 while sends succeed."""
        if not self._failures:
            return 0.0
        return min(BACKOFF_FIRST * 2.0 ** (self._failures - 1), BACKOFF_MAX)

    async def persist(
        self, make_send: Callable[[], Awaitable[None]], *, for_seconds: float
    ) -> bool:
        """Try a send again with backoff until it succeeds or `for_seconds` have passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + for_seconds
        while not await self.attempt(make_send()):
            if loop.time() >= deadline:
                logger.error("gave up sending to the viewers of reply %s", self._reply_id)
                return False
            await asyncio.sleep(self.backoff())
        return True
