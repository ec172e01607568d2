"""The chat socket: authorise, parse, hand off, relay. No business logic lives here."""

import asyncio
import logging
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.contrib.auth.models import User
from django.db import InterfaceError, OperationalError
from django.db.models import F

from conversations.accounts import limits, sessions
from conversations.accounts.sessions import CLOSE_SESSION_ENDED, SESSION_ENDED_TEXT
from conversations.attachments import services as attachment_services
from conversations.catalogue import context
from conversations.catalogue.selectors import (
    Catalogue,
    catalogue_current,
    model_choice_for_user,
)
from conversations.chat import frames, frames_in, selectors, services, titles
from conversations.chat.forms import (
    TurnForm,
    TurnSettingsForm,
    TurnWithFilesForm,
    form_error_text,
    turn_form_checked,
    turn_settings_from,
)
from conversations.chat.frames_in import FrameError
from conversations.chat.orm import orm_concurrent
from conversations.gateway.payload import TurnRequest
from conversations.models import Conversation, Message
from conversations.realtime import events, generation, live, recovery, runtime

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404
# How long a sidebar or quota re-render waits for a burst of turn starts to pass.
BACKGROUND_RENDER_WAIT_SECONDS = 2.0
DATABASE_BUSY = (
    "The server is too busy to save this right now. Nothing was sent; your message is still "
    "here, so try again in a moment."
)


class ChatConsumer(AsyncWebsocketConsumer):
    conversation_id: uuid.UUID
    # Per message id: how much of the content and reasoning this socket has shown.
    shown: dict[str, tuple[int, int]]

    @property
    def user(self) -> User:
        """The signed-in user: `connect` closes the socket for anyone else."""
        return cast(User, self.scope["user"])

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        conversation = await database_sync_to_async(selectors.conversation_get_for_user)(
            conversation_id=self.scope["url_route"]["kwargs"]["conversation_id"], user=self.user
        )
        if conversation is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.conversation_id = conversation.id
        self.shown = {}
        self._stale: set[str] = set()
        self._refresher: asyncio.Task[None] | None = None
        await self.channel_layer.group_add(
            generation.viewers_group(self.conversation_id), self.channel_name
        )
        await self.channel_layer.group_add(live.user_group(self.user.pk), self.channel_name)
        await self.accept()
        await self._snapshot_request()
        # A reply that ended between the page render and this socket joining the group has no
        # generation left to answer the snapshot request: send its final state instead.
        # A page that already shows that reply finished is left as it is: replacing it would undo
        # what the reader started on it (a rating, an open editor, focus).
        finished = await database_sync_to_async(_finished_leaf)(self.conversation_id)
        if finished is not None and str(finished.id) != self._shown_final():
            await self.send(text_data=frames.message_replaced(message=finished))

    def _shown_final(self) -> str:
        """The finished reply the page was rendered with (`?shown=<id>`), if the id is one."""
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1")[:200])
        shown = (query.get("shown") or [""])[0]
        try:
            return str(uuid.UUID(shown))
        except ValueError:
            return ""

    async def send(  # type: ignore[override]  # the signature of Channels' websocket consumer
        self, text_data: str | None = None, bytes_data: bytes | None = None, close: bool = False
    ) -> None:
        """Every frame goes out here: one too large for the socket (a huge reply, a long
        thread) would close it, so the page is told to load the transcript over HTTP instead."""
        if text_data is not None and not frames.frame_fits(text_data):
            logger.info("A %d-character frame was replaced by a transcript fetch", len(text_data))
            text_data = frames.transcript_fetch(conversation_id=self.conversation_id)
        await super().send(text_data=text_data, bytes_data=bytes_data, close=close)

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
        if message["type"].startswith("websocket."):
            await handler(message)
            return
        try:
            await handler(message)
        except (OperationalError, InterfaceError) as exc:
            # The database is away: this socket misses one sidebar or transcript update (the
            # reply's own frames need no database), rather than closing.
            logger.warning("%s not relayed: %r", message["type"], exc)

    async def disconnect(self, code: int) -> None:
        refresher = getattr(self, "_refresher", None)
        if refresher is not None:
            refresher.cancel()
        if hasattr(self, "conversation_id"):
            await self.channel_layer.group_discard(
                generation.viewers_group(self.conversation_id), self.channel_name
            )
            await self.channel_layer.group_discard(live.user_group(self.user.pk), self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            frame = frames_in.frame_parse(text_data)
            if isinstance(frame, frames_in.SendFrame):
                await self.turn_send(frame)
            elif isinstance(frame, frames_in.StopFrame):
                await generation.reply_stop(conversation_id=self.conversation_id)
            elif isinstance(frame, frames_in.RetryFrame):
                await self.reply_retry(frame)
            else:
                await self.branch(frame)
        except FrameError as exc:
            await self.send(text_data=frames.composer_error(text=str(exc)))
        except Conversation.DoesNotExist:
            # Deleted from another tab while this one was open.
            await self.send(
                text_data=frames.composer_error(text="This conversation has been deleted.")
            )
        except OperationalError:
            # The database stayed locked or away past its wait: nothing of this frame was
            # saved, and the composer keeps the text for another try.
            logger.warning("A chat action could not reach the database", exc_info=True)
            await self.send(text_data=frames.composer_error(text=DATABASE_BUSY))

    async def turn_send(self, frame: frames_in.SendFrame) -> None:
        owner = self.user
        try:
            # On PostgreSQL beside other turn starts: a burst of Enters is not a queue.
            with runtime.current().turn_starts.running():
                turn = await orm_concurrent(_turn_begin)(
                    frame=frame, owner=owner, conversation_id=self.conversation_id
                )
        except (services.TurnRefused, attachment_services.AttachmentRefused) as exc:
            raise FrameError(str(exc)) from exc
        if isinstance(turn, context.ContextUsage):
            # Not sent: the user chooses how to go on (the message stays in the composer).
            await self.send(
                text_data=context.context_offers_frame(
                    conversation_id=self.conversation_id, usage=turn
                )
            )
            return
        user_message, reply = turn.started.user_message, turn.started.reply
        await self.send(text_data=frames.composer_accepted(client_token=frame.client_token))
        # Before the reply starts: viewers must know of the turn to take its first text.
        await _relayed(
            events.turn_started_send(
                self.channel_layer,
                conversation_id=self.conversation_id,
                message_ids=[str(user_message.id), str(reply.id)],
                # Rendered once for every viewer; the reply streams from offset 0.
                frame=turn.frame,
                streaming_ids=[str(reply.id)],
            ),
            what="turn start",
        )
        running = await generation.reply_generate(reply_id=reply.id, prepared=turn.prepared)
        live.turn_announced_after(
            user_id=owner.pk,
            event=running.first_text_sent,
            quota=turn.started.quota,
            sidebar_moves=turn.started.sidebar_moves,
        )
        if user_message.parent_id is None:
            titles.title_schedule(
                conversation_id=self.conversation_id,
                owner_id=self.user.pk,
                after=running.task,
            )

    async def branch(self, frame: frames_in.BranchFrame) -> None:
        """Regenerate / retry / continue a reply, edit a user message, or page to a version:
        the branch on screen changes, so every tab of the conversation re-renders it."""
        owner, message_id = self.user, frame.message_id
        reply_id = None
        try:
            if frame.action == "switch":
                await database_sync_to_async(services.branch_switch)(
                    conversation_id=self.conversation_id, owner=owner, message_id=message_id
                )
            elif frame.action == "edit":
                # The new version may be its files alone (the service checks it keeps some).
                keeps_files = frame.keep_attachments is None or bool(frame.keep_attachments)
                form = await self._checked_form(
                    TurnWithFilesForm if keeps_files else TurnForm,
                    {**frame.controls, "message": frame.message},
                )
                if form.errors:
                    raise FrameError(form_error_text(form))
                turn_settings = turn_settings_from(form=form, frame=frame.controls)
                _, reply = await database_sync_to_async(services.turn_edit)(
                    conversation_id=self.conversation_id,
                    owner=owner,
                    message_id=message_id,
                    content=form.cleaned_data["message"],
                    settings=turn_settings,
                    model=turn_settings.model,
                    keep_attachments=frame.keep_attachments,
                )
                reply_id = reply.id
            else:
                form = await self._checked_form(TurnSettingsForm, frame.controls)
                if form.errors:
                    raise FrameError(form_error_text(form))
                turn_settings = turn_settings_from(form=form, frame=frame.controls)
                reply = await database_sync_to_async(services.reply_redo)(
                    conversation_id=self.conversation_id,
                    owner=owner,
                    reply_id=message_id,
                    settings=turn_settings,
                    model=turn_settings.model,
                    how=services.Redo(frame.action),
                )
                reply_id = reply.id
        except (services.TurnRefused, attachment_services.AttachmentRefused) as exc:
            raise FrameError(str(exc)) from exc
        await _relayed(
            live.thread_changed(conversation_id=self.conversation_id), what="branch change"
        )
        if reply_id is not None:
            await generation.reply_generate(reply_id=reply_id)
            await live.sidebar_changed(user_id=owner.pk)

    async def _checked_form(
        self, form_class: type[TurnSettingsForm], data: dict[str, Any]
    ) -> TurnSettingsForm:
        """The frame's controls checked against the profile of the model they name."""
        return await orm_concurrent(_checked_form)(
            form_class, data, self.user, self.conversation_id
        )

    async def reply_retry(self, frame: frames_in.RetryFrame) -> None:
        try:
            failed, reply = await database_sync_to_async(services.reply_retry)(
                conversation_id=self.conversation_id,
                message_id=frame.message_id,
                owner=self.user,
                model=settings.CHAT_MODEL,
            )
        except services.TurnRefused as exc:
            raise FrameError(str(exc)) from exc
        await _relayed(
            events.turn_retried_send(
                self.channel_layer,
                conversation_id=self.conversation_id,
                replaced_id=str(failed.id),
                message_id=str(reply.id),
            ),
            what="retry",
        )
        await generation.reply_generate(reply_id=reply.id)

    # Events from the conversation's group.

    async def turn_retried(self, event: dict[str, Any]) -> None:
        reply = await database_sync_to_async(_message_with_version)(event["message_id"])
        if reply is None:
            return
        self.shown[event["message_id"]] = (0, 0)
        await self.send(
            text_data=frames.message_swapped(replaced_id=event["replaced_id"], message=reply)
        )
        self._refresh_soon("quota")

    async def turn_started(self, event: events.TurnStarted) -> None:
        for message_id in event["streaming_ids"]:
            self.shown[message_id] = (0, 0)
        await self.send(text_data=event["frame"])

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
            if await self._snapshot_request():
                self.shown.pop(message_id, None)
            # Else the layer is still failing: the next delta shows the gap and asks again.
            return
        if text or reasoning:
            received = shown[0] + len(text)
            self.shown[message_id] = (received, shown[1] + len(reasoning))
            # Past the window the page shows no more text until the reply ends (then it offers
            # the rest in parts): a multi-megabyte reply would otherwise freeze the tab.
            window = settings.CHAT_MESSAGE_WINDOW_CHARS
            text = text[: max(0, window - shown[0])]
            for piece in frames.text_appended_pieces(
                message_id=message_id, text=text, reasoning=reasoning
            ):
                await self.send(text_data=piece)
            if received > window and received // window > shown[0] // window:
                await self.send(
                    text_data=frames.window_notice(
                        message_id=message_id, shown=window, received=received
                    )
                )

    async def _snapshot_request(self) -> bool:
        """Ask whoever generates this conversation's reply for the text so far; False when the
        channel layer failed (the socket stays open and catches up later)."""
        try:
            await generation.reply_snapshot_request(
                conversation_id=self.conversation_id, reply_channel=self.channel_name
            )
        except Exception as exc:
            logger.warning("snapshot request failed (%r); asking again later", exc)
            return False
        return True

    async def reply_snapshot(self, event: dict[str, Any]) -> None:
        message_id, text, reasoning = event["message_id"], event["text"], event["reasoning"]
        self.shown[message_id] = (len(text), len(reasoning))
        window = settings.CHAT_MESSAGE_WINDOW_CHARS
        for piece in frames.text_replaced_pieces(
            message_id=message_id, text=text[:window], reasoning=reasoning
        ):
            await self.send(text_data=piece)
        if len(text) > window:
            await self.send(
                text_data=frames.window_notice(
                    message_id=message_id, shown=window, received=len(text)
                )
            )
        # An older process's snapshot has no notice.
        if notice := event.get("notice"):
            await self.send(text_data=frames.notice(message_id=message_id, text=str(notice)))

    async def reply_render(self, event: dict[str, Any]) -> None:
        shown = self.shown.get(event["message_id"])
        # Only Markdown of exactly the text on screen: anything else would drop or repeat text
        # (past the window the screen holds only the window's plain text).
        length = event["length"]
        if shown is not None and shown[0] == length <= settings.CHAT_MESSAGE_WINDOW_CHARS:
            frame = frames.text_rendered(
                message_id=event["message_id"], html=event["html"], tail=event["tail"]
            )
            # Too large for the socket: the plain text stays on screen until the reply ends.
            if frames.frame_fits(frame):
                await self.send(text_data=frame)

    async def thread_changed(self, event: dict[str, Any]) -> None:
        window, pieces = await database_sync_to_async(_thread_window_pieces)(self.conversation_id)
        if window is None:
            return
        for message in window.messages:
            if message.is_streaming:
                self.shown[str(message.id)] = (len(message.content), len(message.reasoning))
        for piece in pieces or [frames.transcript_fetch(conversation_id=self.conversation_id)]:
            await self.send(text_data=piece)

    async def sidebar_changed(self, event: dict[str, Any]) -> None:
        self._refresh_soon("sidebar")

    async def quota_changed(self, event: events.QuotaChanged) -> None:
        await self.send(text_data=event["frame"])

    def _refresh_soon(self, part: str) -> None:
        """Re-render the sidebar or the quota line in the background, coalesced: at most one
        render in flight per socket, and changes that arrive meanwhile make one more render of
        the latest state. Handled inline, a storm of renames queued one database render per
        change ahead of the reply's frames, and filled the socket's queue until the end of a
        reply was dropped."""
        self._stale.add(part)
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.create_task(self._refresh(), name="socket-refresh")

    async def _refresh(self) -> None:
        user = self.user
        await runtime.current().turn_starts.passed(at_most=BACKGROUND_RENDER_WAIT_SECONDS)
        while self._stale:
            parts, self._stale = self._stale, set()
            try:
                frame = await database_sync_to_async(_workspace_frame)(
                    user, self.conversation_id, sidebar="sidebar" in parts, quota="quota" in parts
                )
                await self.send(text_data=frame)
            except Exception as exc:
                # The database is away or the socket closed: the next change renders it all.
                logger.warning("%s not refreshed: %r", " and ".join(sorted(parts)), exc)
                return

    async def session_ended(self, event: dict[str, Any]) -> None:
        """The user signed out, changed password or was deactivated: this socket ends too
        (a sign-out names its session, and only that session's sockets close)."""
        if await sessions.socket_session_ended(scope=self.scope, event=event):
            await self.send(text_data=frames.composer_error(text=SESSION_ENDED_TEXT))
            await self.close(code=CLOSE_SESSION_ENDED)

    async def reply_notice(self, event: dict[str, Any]) -> None:
        await self.send(text_data=frames.notice(message_id=event["message_id"], text=event["text"]))

    async def reply_finished(self, event: events.ReplyFinished) -> None:
        self.shown.pop(event["message_id"], None)
        if event["frame"]:
            await self.send(text_data=event["frame"])
            return
        message = await database_sync_to_async(_message_with_version)(event["message_id"])
        if message is not None:
            await self.send(text_data=frames.message_replaced(message=message))
        self._refresh_soon("quota")


async def _relayed(send: Coroutine[Any, Any, None], *, what: str) -> None:
    """A saved change announced to the conversation's viewers. This process's viewers have it
    before Redis is asked (the layer serves them first); the change is saved and its reply
    must still be written, so a stalled or absent Redis costs only other processes' viewers
    (they catch up on their next render), never this socket (no close with 1011)."""
    try:
        await send
    except Exception as exc:
        logger.warning("%s not relayed to other processes: %r", what, exc)


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


def _workspace_frame(user: Any, conversation_id: uuid.UUID, *, sidebar: bool, quota: bool) -> str:
    """The sidebar (and the title on screen) and/or the quota line, as they are now."""
    parts = []
    if sidebar:
        conversations, current = _sidebar(user, conversation_id)
        parts.append(frames.sidebar(conversations=conversations, current=current))
    if quota:
        parts.append(frames.quota_status(usage=limits.quota_usage_for_user(user=user)))
    return "".join(parts)


@dataclass(frozen=True, slots=True)
class TurnStart:
    started: services.StartedTurn
    prepared: tuple[TurnRequest, uuid.UUID]
    frame: str


def _turn_begin(
    *, frame: frames_in.SendFrame, owner: User, conversation_id: uuid.UUID
) -> TurnStart | context.ContextUsage:
    """Everything a send needs from the database, in one thread hop: the controls checked
    against the model's profile, the fit in the context window (the usage when it does not
    fit), then the turn started. Split into hops, a burst of sends queued each turn's later
    hops behind every other turn's earlier ones, and every first token waited for the last."""
    # Read once for the whole hop, and the same for every step.
    current_catalogue = catalogue_current()
    conversation = Conversation.objects.get(id=conversation_id, owner=owner)
    # Files may be sent without a word about them.
    form_class = TurnWithFilesForm if frame.attachment_ids else TurnForm
    form = _form_checked(
        form_class,
        {**frame.controls, "message": frame.message},
        owner,
        conversation_model=conversation.model,
        current_catalogue=current_catalogue,
    )
    if form.errors:
        raise FrameError(form_error_text(form))
    message = form.cleaned_data["message"]
    turn_settings = turn_settings_from(form=form, frame=frame.controls)
    overflow = context.context_offers_needed(
        conversation=conversation,
        owner=owner,
        new_text=message,
        max_tokens=turn_settings.max_tokens,
        model=turn_settings.model,
        attachment_ids=frame.attachment_ids,
        current_catalogue=current_catalogue,
    )
    if overflow is not None:
        return overflow
    return _turn_start(
        conversation_id=conversation_id,
        owner=owner,
        content=message,
        turn_settings=turn_settings,
        model=turn_settings.model,
        attachment_ids=frame.attachment_ids,
        current_catalogue=current_catalogue,
    )


def _turn_start(
    *,
    conversation_id: uuid.UUID,
    owner: User,
    content: str,
    turn_settings: services.TurnSettings,
    model: str,
    attachment_ids: tuple[uuid.UUID, ...] = (),
    current_catalogue: Catalogue | None = None,
) -> TurnStart:
    """The start of a turn, on the ORM thread: save it, claim the reply, build its upstream
    request and render the frame every viewer gets."""
    started = services.turn_start(
        conversation_id=conversation_id,
        owner=owner,
        content=content,
        settings=turn_settings,
        model=model,
        attachment_ids=attachment_ids,
        current_catalogue=current_catalogue,
        worker=recovery.worker_id(),
    )
    messages = [started.user_message, started.reply]
    return TurnStart(
        started=started,
        prepared=generation.reply_prepare(reply=started.reply, current_catalogue=current_catalogue),
        frame=frames.turn_started(
            messages=selectors.messages_as_only_versions(messages=messages)
            if started.without_siblings
            else selectors.messages_with_versions(messages=messages)
        ),
    )


def _checked_form(
    form_class: type[TurnSettingsForm], data: dict[str, Any], user: Any, conversation_id: uuid.UUID
) -> TurnSettingsForm:
    current = (
        Conversation.objects.filter(id=conversation_id).values_list("model", flat=True).first()
    )
    return _form_checked(form_class, data, user, conversation_model=current or "")


def _form_checked(
    form_class: type[TurnSettingsForm],
    data: dict[str, Any],
    user: Any,
    *,
    conversation_model: str,
    current_catalogue: Catalogue | None = None,
) -> TurnSettingsForm:
    """The controls checked against the profile of the model they name, the conversation's
    when they name none."""
    choice = model_choice_for_user(
        user=user, current=conversation_model, current_catalogue=current_catalogue
    )
    return turn_form_checked(form_class=form_class, frame=data, choice=choice)


def _message_with_version(message_id: str) -> Message | None:
    # A conversation deleted mid-reply has nothing left to show.
    message = Message.objects.filter(id=message_id).first()
    return selectors.messages_with_versions(messages=[message])[0] if message else None


def _thread_window_pieces(
    conversation_id: uuid.UUID,
) -> tuple[selectors.ThreadWindow | None, list[str] | None]:
    """The window on screen and its frames, rendered on the database thread as before."""
    conversation = Conversation.objects.filter(id=conversation_id).first()
    if conversation is None:
        return None, None
    window = selectors.thread_window(conversation=conversation)
    return window, frames.transcript_pieces(window=window)


def _sidebar(user: Any, conversation_id: uuid.UUID) -> tuple[list[Conversation], Any]:
    conversations = selectors.conversation_sidebar_for_user(
        user=user, current_id=conversation_id, limit=frames.SIDEBAR_SIZE
    )
    current = next((c for c in conversations if c.id == conversation_id), None)
    if current is None:
        current = Conversation.objects.filter(id=conversation_id).first()
    return conversations, current
