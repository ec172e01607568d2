"""A websocket client of a Daphne process, signed in as a user (for tests with many sockets,
where a browser page each would cost too much)."""

import json
import re
from dataclasses import dataclass, field
from html import unescape
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from websockets.asyncio.client import ClientConnection, connect

from tests.support.sockets import SEND

FINAL = re.compile(r'data-role="assistant" data-status="(complete|error|stopped|interrupted)"')


def session_cookie(user: User) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


@dataclass
class ChatSocket:
    connection: ClientConnection
    frames: list[str] = field(default_factory=list)

    async def send_turn(self, message: str = "Hello there") -> None:
        await self.connection.send(json.dumps({**SEND, "message": message}))

    async def final_status(self) -> str:
        """Read frames until the reply's final article arrives; its status."""
        async for frame in self.connection:
            assert isinstance(frame, str)
            self.frames.append(frame)
            match = FINAL.search(frame)
            if match:
                return match[1]
        raise ConnectionError("the socket closed before the reply finished")

    async def read_until(self, needle: str) -> str:
        """Read frames until what this socket received (unescaped) contains `needle`."""
        while needle not in self.text:
            frame = await self.connection.recv()
            assert isinstance(frame, str)
            self.frames.append(frame)
        return self.text

    @property
    def text(self) -> str:
        return unescape("".join(self.frames))


async def chat_socket(*, base_url: str, conversation_id: Any, cookie: str) -> ChatSocket:
    host = base_url.removeprefix("http://")
    connection = await connect(
        f"ws://{host}/ws/c/{conversation_id}/",
        additional_headers={"Cookie": f"sessionid={cookie}", "Origin": base_url},
        open_timeout=30,
        max_size=None,
    )
    return ChatSocket(connection=connection)
