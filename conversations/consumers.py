"""The chat socket: authorise, parse, hand off, relay. No business logic lives here."""

import json
import logging
import uuid
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.db import connection

from conversations import frames, generation, selectors, services
from conversations.forms import TurnForm, form_error_text
from conversations.models import Message

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404
# Room for the message itself plus the controls and htmx's headers.
FRAME_OVERHEAD_CHARS = 16_384


class FrameError(Exception):
    """A frame the socket cannot act on; the message is shown to the user."""


class ChatConsumer(AsyncWebsocketConsumer):
    conversation_id: uuid.UUID
    # Per message id: how much of the content and reasoning this socket has shown.
    shown: dict[str, tuple[int, int]]

    async def connect(self) -> None:
        user = self.scope["user"]
        if not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        conversation = await database_sync_to_async(selectors.conversation_get_for_user)(
            conversation_id=self.scope["url_route"]["kwargs"]["conversation_id"], user=user
        )
        if conversation is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.conversation_id = conversation.id
        self.shown = {}
        await self.channel_layer.group_add(
            generation.viewers_group(self.conversation_id), self.channel_name
        )
        await self.accept()
        await generation.reply_snapshot_request(
            conversation_id=self.conversation_id, reply_channel=self.channel_name
        )

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "conversation_id"):
            await self.channel_layer.group_discard(
                generation.viewers_group(self.conversation_id), self.channel_name
            )

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            frame = parse_frame(text_data)
            action = frame.get("action", "send")
            if action == "send":
                await self.turn_send(frame)
            elif action == "stop":
                await generation.reply_stop(conversation_id=self.conversation_id)
            else:
                raise FrameError(f"Unknown action {str(action)[:40]!r}.")
        except FrameError as exc:
            await self.send(text_data=frames.composer_error(text=str(exc)))

    async def turn_send(self, frame: dict[str, Any]) -> None:
        if not isinstance(frame.get("message"), str):
            raise FrameError("The message must be text.")
        form = TurnForm(data=frame)
        if not form.is_valid():
            raise FrameError(form_error_text(form))
        data = form.cleaned_data
        try:
            # Where the database locks the conversation row (PostgreSQL), turn starts need not
            # queue one behind another on the shared ORM thread; SQLite has no row locks, so
            # there they stay serial.
            start = (
                generation.orm_parallel(_turn_start)
                if connection.features.has_select_for_update
                else database_sync_to_async(_turn_start)
            )
            user_message, reply, request, started = await start(
                conversation_id=self.conversation_id,
                owner=self.scope["user"],
                content=data["message"],
                settings=services.TurnSettings(
                    sampling=data["sampling"],
                    temperature=data["temperature"],
                    top_p=data["top_p"],
                    reasoning_effort=data["reasoning_effort"],
                    max_tokens=data["max_tokens"],
                ),
                model=settings.CHAT_MODEL,
            )
        except services.TurnRefused as exc:
            raise FrameError(str(exc)) from exc
        client_token = str(frame.get("client_token", ""))[:64]
        await self.send(text_data=frames.composer_accepted(client_token=client_token))
        await self.channel_layer.group_send(
            generation.viewers_group(self.conversation_id),
            {
                "type": "turn.started",
                "message_ids": [str(user_message.id), str(reply.id)],
                # Rendered once for every viewer; the reply streams from offset 0.
                "frame": started,
                "streaming_ids": [str(reply.id)],
            },
        )
        await generation.reply_generate(reply_id=reply.id, request=request)

    # Events from the conversation's group.

    async def turn_started(self, event: dict[str, Any]) -> None:
        if "frame" in event:
            for message_id in event["streaming_ids"]:
                self.shown[message_id] = (0, 0)
            await self.send(text_data=event["frame"])
            return
        messages = await database_sync_to_async(_messages_in_order)(event["message_ids"])
        for message in messages:
            if message.is_streaming:
                self.shown[str(message.id)] = (0, 0)
        await self.send(text_data=frames.turn_started(messages=messages))

    async def reply_delta(self, event: dict[str, Any]) -> None:
        message_id = event["message_id"]
        shown = self.shown.get(message_id)
        if shown is None:
            # Joined mid-reply: the snapshot requested on connect brings the text so far.
            return
        text = _unseen(event["text"], event["offset"], shown[0])
        reasoning = _unseen(event["reasoning"], event["reasoning_offset"], shown[1])
        if text is None or reasoning is None:
            # A gap (a frame was lost): start over from a fresh snapshot rather than guess.
            self.shown.pop(message_id, None)
            await generation.reply_snapshot_request(
                conversation_id=self.conversation_id, reply_channel=self.channel_name
            )
            return
        if text or reasoning:
            self.shown[message_id] = (shown[0] + len(text), shown[1] + len(reasoning))
            await self.send(
                text_data=frames.text_appended(
                    message_id=message_id, text=text, reasoning=reasoning
                )
            )

    async def reply_snapshot(self, event: dict[str, Any]) -> None:
        message_id, text, reasoning = event["message_id"], event["text"], event["reasoning"]
        self.shown[message_id] = (len(text), len(reasoning))
        await self.send(
            text_data=frames.text_replaced(message_id=message_id, text=text, reasoning=reasoning)
        )

    async def reply_notice(self, event: dict[str, Any]) -> None:
        await self.send(text_data=frames.notice(message_id=event["message_id"], text=event["text"]))

    async def reply_finished(self, event: dict[str, Any]) -> None:
        self.shown.pop(event["message_id"], None)
        frame = event.get("frame")
        if frame is None:
            message = await database_sync_to_async(Message.objects.get)(id=event["message_id"])
            frame = frames.message_replaced(message=message)
        await self.send(text_data=frame)


def parse_frame(text_data: str | None) -> dict[str, Any]:
    if text_data is None:
        raise FrameError("Frames must be text (JSON).")
    if len(text_data) > settings.CHAT_MAX_MESSAGE_CHARS + FRAME_OVERHEAD_CHARS:
        raise FrameError(
            f"That message is too long: the limit is {settings.CHAT_MAX_MESSAGE_CHARS:,} "
            "characters. Nothing was sent."
        )
    try:
        frame = json.loads(text_data)
    except ValueError as exc:
        raise FrameError("The frame is not valid JSON.") from exc
    if not isinstance(frame, dict):
        raise FrameError("The frame must be a JSON object.")
    return frame


def _unseen(piece: str, offset: int, shown: int) -> str | None:
    """The part of `piece` (which starts at `offset`) not yet shown, or None if there's a gap."""
    if offset > shown:
        return None
    return piece[shown - offset :]


def _turn_start(
    **kwargs: Any,
) -> tuple[Message, Message, tuple[dict[str, Any], uuid.UUID], str]:
    """One thread hop for the whole start of a turn: save it, build the upstream request and
    render the frame every viewer gets."""
    user_message, reply = services.turn_start(**kwargs)
    request = selectors.reply_request(reply_id=reply.id)
    return user_message, reply, request, frames.turn_started(messages=[user_message, reply])


def _messages_in_order(message_ids: list[str]) -> list[Message]:
    by_id = Message.objects.in_bulk(message_ids, field_name="id")
    return [by_id[uuid.UUID(message_id)] for message_id in message_ids]
