"""Limits every chat socket lives under, enforced around the consumer.

- Frames per second per socket (a token bucket: CHAT_SOCKET_FRAMES_PER_SECOND, bursts of
  CHAT_SOCKET_FRAME_BURST): a flood closes the socket with CLOSE_TOO_MANY_FRAMES.
  (0 turns this limit, and the next, off.)
- Open sockets per user in this process (CHAT_SOCKETS_PER_USER): one more is accepted only to
  be closed at once with CLOSE_TOO_MANY_SOCKETS, so the page can say why.
- The session behind the socket: re-checked every CHAT_SOCKET_SESSION_CHECK_SECONDS and when
  it expires; once it is gone (logout, expiry, password change, deactivation) the socket closes
  with CLOSE_SESSION_ENDED. Logout, password change and deactivation also close sockets at once
  through the user's group (see conversations.accounts.sessions).

Each close is preceded by a composer error frame that says why, since browsers do not show a
close reason (and Daphne does not send one).
"""

import asyncio
import time
from collections import Counter
from contextlib import suppress
from typing import Any, cast

from channels.auth import get_user
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase
from django.utils import timezone
from django.utils.module_loading import import_string

from conversations.accounts.sessions import CLOSE_SESSION_ENDED, SESSION_ENDED_TEXT
from conversations.chat.frames import composer_error

CLOSE_TOO_MANY_FRAMES = 4429
CLOSE_TOO_MANY_SOCKETS = 4430
TOO_MANY_FRAMES_TEXT = "Too many messages on this connection too quickly: it was closed."
TOO_MANY_SOCKETS_TEXT = (
    "Too many chat tabs are open for your account. Close some and reload this page."
)


class FrameBucket:
    """A token bucket: `rate` frames a second on average, `burst` at once."""

    def __init__(self, *, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.at = time.monotonic()

    def take(self) -> bool:
        if not self.rate:
            return True  # 0: no limit
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


async def session_user_id(scope: dict[str, Any]) -> Any:
    """The id of the user the socket's session still signs in, or None: read afresh, so a
    deleted, expired or invalidated (password changed) session or an inactive user is None."""
    session: SessionBase | None = scope.get("session")
    key = session.session_key if session is not None else None
    if not key:
        return None
    store = import_string(f"{settings.SESSION_ENGINE}.SessionStore")(session_key=key)
    user = await get_user(cast(Any, {**scope, "session": store}))
    return user.pk if user.is_authenticated else None


async def _seconds_to_expiry(scope: dict[str, Any]) -> float:
    session: SessionBase | None = scope.get("session")
    if session is None:
        return float("inf")
    expiry = await database_sync_to_async(session.get_expiry_date)()
    return max(0.0, (expiry - timezone.now()).total_seconds())


class SocketGuard:
    """ASGI middleware for websockets, inside the auth middleware (it reads scope["user"])."""

    def __init__(self, app: Any) -> None:
        self.app = app
        # Open sockets per user id, in this process.
        self.open_sockets: Counter[Any] = Counter()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] != "websocket":
            return await self.app(scope, receive, send)
        user = scope.get("user")
        user_id = user.pk if user is not None and user.is_authenticated else None
        if user_id is None:
            return await self.app(scope, receive, send)
        limit = settings.CHAT_SOCKETS_PER_USER
        if limit and self.open_sockets[user_id] >= limit:
            return await _refuse(receive, send, TOO_MANY_SOCKETS_TEXT, CLOSE_TOO_MANY_SOCKETS)
        self.open_sockets[user_id] += 1
        try:
            return await _GuardedSocket(scope, receive, send, user_id).run(self.app)
        finally:
            self.open_sockets[user_id] -= 1
            if self.open_sockets[user_id] <= 0:
                del self.open_sockets[user_id]


async def _refuse(receive: Any, send: Any, text: str, code: int) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": composer_error(text=text)})
    await send({"type": "websocket.close", "code": code})


class _GuardedSocket:
    def __init__(self, scope: dict[str, Any], receive: Any, send: Any, user_id: Any) -> None:
        self.scope, self.server_receive, self.server_send = scope, receive, send
        self.user_id = user_id
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.closed = False
        self.accepted = False
        self.bucket = FrameBucket(
            rate=settings.CHAT_SOCKET_FRAMES_PER_SECOND, burst=settings.CHAT_SOCKET_FRAME_BURST
        )

    async def run(self, app: Any) -> Any:
        tasks = [
            asyncio.create_task(self._pump(), name="socket-pump"),
            asyncio.create_task(self._watch_session(), name="socket-session"),
        ]
        try:
            return await app(self.scope, self.inbox.get, self._send)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with suppress(asyncio.CancelledError):
                    await task

    async def _send(self, message: dict[str, Any]) -> None:
        if self.closed:
            return
        if message["type"] == "websocket.accept":
            self.accepted = True
        elif message["type"] == "websocket.close":
            self.closed = True
        await self.server_send(message)

    async def _pump(self) -> None:
        while True:
            message = await self.server_receive()
            if message["type"] == "websocket.receive" and not self.bucket.take():
                await self._close(TOO_MANY_FRAMES_TEXT, CLOSE_TOO_MANY_FRAMES)
                return
            await self.inbox.put(message)
            if message["type"] == "websocket.disconnect":
                return

    async def _watch_session(self) -> None:
        interval = settings.CHAT_SOCKET_SESSION_CHECK_SECONDS
        while True:
            await asyncio.sleep(min(interval, await _seconds_to_expiry(self.scope)) + 0.05)
            if await session_user_id(self.scope) != self.user_id:
                await self._close(SESSION_ENDED_TEXT, CLOSE_SESSION_ENDED)
                return

    async def _close(self, text: str, code: int) -> None:
        """Tell the page why, close the socket, and let the consumer run its disconnect."""
        if not self.closed:
            if self.accepted:
                await self.server_send(
                    {"type": "websocket.send", "text": composer_error(text=text)}
                )
            self.closed = True
            await self.server_send({"type": "websocket.close", "code": code})
        await self.inbox.put({"type": "websocket.disconnect", "code": code})
