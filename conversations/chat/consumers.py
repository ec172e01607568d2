"""The chat socket: authorise, parse, hand off, relay. No business logic lives here."""

import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.db.models import F

from conversations.accounts import limits
from conversations.attachments import services as attachment_services
from conversations.chat import frames, selectors, services, titles
from conversations.chat.forms import TurnForm, TurnSettingsForm, form_error_text, turn_settings_from
from conversations.models import Conversation, Message
from conversations.realtime import generation, live

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404
# Frames that change which branch of the tree is on screen.
# Retry is not among them: it re-sends a failed reply with the parameters it was sent with.
BRANCH_ACTIONS = frozenset({"regenerate", "continue", "edit", "switch"})
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
        await self.channel_layer.group_add(live.user_group(user.pk), self.channel_name)
        await self.accept()
        await generation.reply_snapshot_request(
            conversation_id=self.conversation_id, reply_channel=self.channel_name
        )
        # A reply that ended between the page render and this socket joining the group has no
        # generation left to answer the snapshot request: send its final state instead.
        finished = await database_sync_to_async(_finished_leaf)(self.conversation_id)
        if finished is not None:
            await self.send(text_data=frames.message_replaced(message=finished))

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch, without its hop to the ORM thread before every handler.

        Channels runs `close_old_connections` on the shared ORM thread before each message it
        dispatches, so every relayed delta queued behind the process's database work (turn
        starts waited behind thousands of frames: bench/REPORT.md). Every database call here
        goes through `database_sync_to_async`, which closes stale connections itself.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "conversation_id"):
            await self.channel_layer.group_discard(
                generation.viewers_group(self.conversation_id), self.channel_name
            )
            await self.channel_layer.group_discard(
                live.user_group(self.scope["user"].pk), self.channel_name
            )

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            frame = parse_frame(text_data)
            action = frame.get("action", "send")
            if not isinstance(action, str):
                raise FrameError("The action must be text.")
            if action == "send":
                await self.turn_send(frame)
            elif action == "stop":
                await generation.reply_stop(conversation_id=self.conversation_id)
            elif action == "retry":
                await self.reply_retry(frame)
            elif action in BRANCH_ACTIONS:
                await self.branch(action, frame)
            else:
                raise FrameError(f"Unknown action {str(action)[:40]!r}.")
        except FrameError as exc:
            await self.send(text_data=frames.composer_error(text=str(exc)))
        except Conversation.DoesNotExist:
            # Deleted from another tab while this one was open.
            await self.send(
                text_data=frames.composer_error(text="This conversation has been deleted.")
            )

    async def turn_send(self, frame: dict[str, Any]) -> None:
        if not isinstance(frame.get("message"), str):
            raise FrameError("The message must be text.")
        form = TurnForm(data=frame)
        if not form.is_valid():
            raise FrameError(form_error_text(form))
        data = form.cleaned_data
        owner = self.scope["user"]
        try:
            turn = await database_sync_to_async(_turn_start)(
                conversation_id=self.conversation_id,
                owner=owner,
                content=data["message"],
                turn_settings=turn_settings_from(form=form, frame=frame),
                model=settings.CHAT_MODEL,
                attachment_ids=attachment_services.attachment_ids_parse(frame.get("attachments")),
            )
        except (services.TurnRefused, attachment_services.AttachmentRefused) as exc:
            raise FrameError(str(exc)) from exc
        user_message, reply = turn.started.user_message, turn.started.reply
        client_token = str(frame.get("client_token", ""))[:64]
        await self.send(text_data=frames.composer_accepted(client_token=client_token))
        # Before the reply starts: viewers must know of the turn to take its first text.
        await self.channel_layer.group_send(
            generation.viewers_group(self.conversation_id),
            {
                "type": "turn.started",
                "message_ids": [str(user_message.id), str(reply.id)],
                # Rendered once for every viewer; the reply streams from offset 0.
                "frame": turn.frame,
                "streaming_ids": [str(reply.id)],
            },
        )
        running = await generation.reply_generate(reply_id=reply.id, prepared=turn.prepared)
        if turn.started.sidebar_moves:
            live.sidebar_changed_after(user_id=owner.pk, event=running.first_text_sent)
        if user_message.parent_id is None:
            titles.title_schedule(
                conversation_id=self.conversation_id,
                owner_id=self.scope["user"].pk,
                after=running.task,
            )

    async def branch(self, action: str, frame: dict[str, Any]) -> None:
        """Regenerate / retry / continue a reply, edit a user message, or page to a version:
        the branch on screen changes, so every tab of the conversation re-renders it."""
        owner, message_id = self.scope["user"], str(frame.get("message_id", ""))[:64]
        reply_id = None
        try:
            if action == "switch":
                await database_sync_to_async(services.branch_switch)(
                    conversation_id=self.conversation_id, owner=owner, message_id=message_id
                )
            elif action == "edit":
                form: TurnSettingsForm = TurnForm(data=frame)
                if not isinstance(frame.get("message"), str) or not form.is_valid():
                    raise FrameError(form_error_text(form) or "The message must be text.")
                _, reply = await database_sync_to_async(_turn_edit)(
                    conversation_id=self.conversation_id,
                    owner=owner,
                    message_id=message_id,
                    content=form.cleaned_data["message"],
                    settings=turn_settings_from(form=form, frame=frame),
                    model=settings.CHAT_MODEL,
                    keep_attachments=frame.get("keep_attachments"),
                )
                reply_id = reply.id
            else:
                form = TurnSettingsForm(data=frame)
                if not form.is_valid():
                    raise FrameError(form_error_text(form))
                write = (
                    services.reply_continue if action == "continue" else services.reply_regenerate
                )
                reply = await database_sync_to_async(write)(
                    conversation_id=self.conversation_id,
                    owner=owner,
                    reply_id=message_id,
                    settings=turn_settings_from(form=form, frame=frame),
                    model=settings.CHAT_MODEL,
                )
                reply_id = reply.id
        except (services.TurnRefused, attachment_services.AttachmentRefused) as exc:
            raise FrameError(str(exc)) from exc
        await live.thread_changed(conversation_id=self.conversation_id)
        if reply_id is not None:
            await generation.reply_generate(reply_id=reply_id)
            await live.sidebar_changed(user_id=owner.pk)

    async def reply_retry(self, frame: dict[str, Any]) -> None:
        try:
            message_id = uuid.UUID(str(frame.get("message_id"))[:64])
        except ValueError as exc:
            raise FrameError("That reply is not part of this conversation.") from exc
        try:
            failed, reply = await database_sync_to_async(services.reply_retry)(
                conversation_id=self.conversation_id,
                message_id=message_id,
                owner=self.scope["user"],
                model=settings.CHAT_MODEL,
            )
        except services.TurnRefused as exc:
            raise FrameError(str(exc)) from exc
        await self.channel_layer.group_send(
            generation.viewers_group(self.conversation_id),
            {"type": "turn.retried", "replaced_id": str(failed.id), "message_id": str(reply.id)},
        )
        await generation.reply_generate(reply_id=reply.id)

    # Events from the conversation's group.

    async def turn_retried(self, event: dict[str, Any]) -> None:
        reply, quota = await database_sync_to_async(_message_and_quota)(
            event["message_id"], self.scope["user"]
        )
        if reply is None:
            return
        self.shown[event["message_id"]] = (0, 0)
        await self.send(
            text_data=frames.message_swapped(replaced_id=event["replaced_id"], message=reply)
            + frames.quota_status(usage=quota)
        )

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
        quota = await database_sync_to_async(limits.quota_usage_for_user)(user=self.scope["user"])
        await self.send(
            text_data=frames.turn_started(messages=messages) + frames.quota_status(usage=quota)
        )

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

    async def reply_render(self, event: dict[str, Any]) -> None:
        shown = self.shown.get(event["message_id"])
        # Only Markdown of exactly the text on screen: anything else would drop or repeat text.
        if shown is not None and shown[0] == event["length"]:
            await self.send(
                text_data=frames.text_rendered(
                    message_id=event["message_id"], html=event["html"], tail=event["tail"]
                )
            )

    async def thread_changed(self, event: dict[str, Any]) -> None:
        window = await database_sync_to_async(_thread_window)(self.conversation_id)
        if window is None:
            return
        for message in window.messages:
            if message.is_streaming:
                self.shown[str(message.id)] = (len(message.content), len(message.reasoning))
        await self.send(text_data=frames.transcript(window=window))

    async def sidebar_changed(self, event: dict[str, Any]) -> None:
        user = self.scope["user"]
        conversations, current = await database_sync_to_async(_sidebar)(user, self.conversation_id)
        await self.send(text_data=frames.sidebar(conversations=conversations, current=current))

    async def reply_notice(self, event: dict[str, Any]) -> None:
        await self.send(text_data=frames.notice(message_id=event["message_id"], text=event["text"]))

    async def reply_finished(self, event: dict[str, Any]) -> None:
        self.shown.pop(event["message_id"], None)
        if "frame" in event:
            await self.send(text_data=event["frame"])
            return
        message, quota = await database_sync_to_async(_message_and_quota)(
            event["message_id"], self.scope["user"]
        )
        if message is not None:
            await self.send(
                text_data=frames.message_replaced(message=message)
                + frames.quota_status(usage=quota)
            )


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


def _finished_leaf(conversation_id: uuid.UUID) -> Message | None:
    leaf = (
        Message.objects.filter(
            conversation__id=conversation_id,
            conversation__active_leaf=F("id"),
            role=Message.Role.ASSISTANT,
        )
        .exclude(status=Message.Status.STREAMING)
        .first()
    )
    # Rendered with its version pager, like the page rendered it.
    return selectors.messages_with_versions(messages=[leaf])[0] if leaf else None


def _message_and_quota(message_id: str, user: Any) -> tuple[Message | None, limits.QuotaUsage]:
    return _message_with_version(message_id), limits.quota_usage_for_user(user=user)


@dataclass(frozen=True, slots=True)
class TurnStart:
    started: services.StartedTurn
    prepared: tuple[dict[str, Any], uuid.UUID]
    frame: str


def _turn_start(
    *,
    conversation_id: uuid.UUID,
    owner: AbstractBaseUser,
    content: str,
    turn_settings: services.TurnSettings,
    model: str,
    attachment_ids: list[str],
) -> TurnStart:
    """One thread hop for the whole start of a turn: save it, claim the reply, build its
    upstream request and render the frame every viewer gets."""
    # One transaction: an attachment refused leaves no message behind.
    with transaction.atomic():
        started = services.turn_start(
            conversation_id=conversation_id,
            owner=owner,
            content=content,
            settings=turn_settings,
            model=model,
        )
        attachment_services.turn_attachments_apply(
            user_message=started.user_message,
            reply=started.reply,
            owner=owner,
            attachment_ids=attachment_ids,
            model=model,
        )
    messages = [started.user_message, started.reply]
    return TurnStart(
        started=started,
        prepared=generation.reply_prepare(reply=started.reply),
        # Every viewer of a conversation is its owner, so one quota line fits them all.
        frame=frames.turn_started(messages=selectors.messages_with_versions(messages=messages))
        + frames.quota_status(usage=started.quota),
    )


def _turn_edit(*, keep_attachments: object, **edit: Any) -> tuple[Message, Message]:
    """Edit a message and carry over the attachments the new version keeps (all of them
    unless the frame lists which), in one transaction."""
    keep = (
        None
        if keep_attachments is None
        else attachment_services.attachment_ids_parse(keep_attachments)
    )
    with transaction.atomic():
        user_message, reply = services.turn_edit(**edit)
        attachment_services.message_attachments_copy(
            source_id=edit["message_id"], target=user_message, keep_ids=keep, model=edit["model"]
        )
    return user_message, reply


def _messages_in_order(message_ids: list[str]) -> list[Message]:
    by_id = Message.objects.in_bulk(message_ids, field_name="id")
    return selectors.messages_with_versions(
        messages=[by_id[uuid.UUID(message_id)] for message_id in message_ids]
    )


def _message_with_version(message_id: str) -> Message | None:
    # A conversation deleted mid-reply has nothing left to show.
    message = Message.objects.filter(id=message_id).first()
    return selectors.messages_with_versions(messages=[message])[0] if message else None


def _thread_window(conversation_id: uuid.UUID) -> selectors.ThreadWindow | None:
    conversation = Conversation.objects.filter(id=conversation_id).first()
    return selectors.thread_window(conversation=conversation) if conversation else None


def _sidebar(user: Any, conversation_id: uuid.UUID) -> tuple[list[Conversation], Any]:
    conversations = selectors.conversation_sidebar_for_user(
        user=user, current_id=conversation_id, limit=frames.SIDEBAR_SIZE
    )
    current = next((c for c in conversations if c.id == conversation_id), None)
    if current is None:
        current = Conversation.objects.filter(id=conversation_id).first()
    return conversations, current
