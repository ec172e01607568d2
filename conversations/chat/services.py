"""Writes. Keyword-only, typed, and each one a single transaction."""

import datetime
import secrets
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings as django_settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from conversations.accounts import limits
from conversations.chat.rendering import markdown_to_html
from conversations.chat.selectors import (
    share_link_live_for_conversation,
    share_snapshot_build,
    share_token_digest,
)
from conversations.models import (
    Conversation,
    ConversationReview,
    Message,
    ReasoningEffort,
    Sampling,
    ShareLink,
    TranscriptAccess,
    UserPreferences,
)

TITLE_FROM_MESSAGE_CHARS = 60


class TurnRefused(Exception):
    """The turn cannot start; the message says why, in words for the user."""


@dataclass(frozen=True, slots=True)
class TurnSettings:
    sampling: str
    temperature: float
    top_p: float
    reasoning_effort: str
    max_tokens: int
    stop: tuple[str, ...] = ()
    # None leaves the conversation's system prompt as it is.
    system_prompt: str | None = None

    @property
    def reasoning_on(self) -> bool:
        return self.reasoning_effort != ReasoningEffort.OFF

    def request_params(self) -> dict[str, Any]:
        """Exactly the parameters the user chose to send: temperature and top_p are either/or,
        and temperature is never sent with reasoning (thinking only allows 1)."""
        params: dict[str, Any] = {"max_tokens": self.max_tokens}
        if self.sampling == Sampling.TEMPERATURE and not self.reasoning_on:
            params["temperature"] = self.temperature
        elif self.sampling == Sampling.TOP_P:
            params["top_p"] = self.top_p
        if self.reasoning_on:
            params["reasoning_effort"] = self.reasoning_effort
        if self.stop:
            params["stop"] = list(self.stop)
        return params


@dataclass(frozen=True, slots=True)
class ReplyOutcome:
    status: str
    content: str
    reasoning: str = ""
    finish_reason: str = ""
    error: str = ""
    refusal: str = ""
    citations: list[dict[str, str]] = field(default_factory=list)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning_tokens: int | None = None
    cached_tokens: int | None = None
    cost_usd: Decimal | None = None
    time_to_first_token_ms: int | None = None
    duration_ms: int | None = None


def conversation_create(*, owner: AbstractBaseUser) -> Conversation:
    """A new conversation starts from the owner's default system prompt and parameters."""
    preferences = UserPreferences.objects.filter(user=owner).first()
    if preferences is None:
        return Conversation.objects.create(
            owner=owner, max_tokens=django_settings.CHAT_DEFAULT_MAX_TOKENS
        )
    return Conversation.objects.create(
        owner=owner,
        system_prompt=preferences.system_prompt,
        sampling=preferences.sampling,
        temperature=preferences.temperature,
        top_p=preferences.top_p,
        reasoning_effort=preferences.reasoning_effort,
        max_tokens=preferences.max_tokens,
    )


@dataclass(frozen=True, slots=True)
class StartedTurn:
    user_message: Message
    reply: Message
    # The owner's usage, this reply included.
    quota: limits.QuotaUsage
    # Whether the sidebar changed: the conversation joined it, or moved to the top.
    sidebar_moves: bool


def turn_start(
    *,
    conversation_id: uuid.UUID,
    owner: AbstractBaseUser,
    content: str,
    settings: TurnSettings,
    model: str,
) -> StartedTurn:
    """Save the user's message and an empty streaming reply, atomically.

    The conversation row is locked so that two processes cannot both start a reply in the same
    conversation: one generation at a time, never run twice.
    """
    with transaction.atomic():
        conversation = _conversation_lock_idle(conversation_id=conversation_id, owner=owner)
        quota = _allowance_check(user=owner)
        sidebar_moves = _sidebar_moves(conversation=conversation)
        user_message = Message.objects.create(
            conversation=conversation,
            parent_id=conversation.active_leaf_id,
            role=Message.Role.USER,
            content=content,
        )
        reply = Message.objects.create(
            conversation=conversation,
            parent=user_message,
            role=Message.Role.ASSISTANT,
            status=Message.Status.STREAMING,
            model=model,
            request_params=settings.request_params(),
        )
        conversation.active_leaf = reply
        _conversation_apply_settings(conversation=conversation, settings=settings)
        if conversation.title == Conversation._meta.get_field("title").default:
            conversation.title = _title_from_message(content)
        conversation.save()
    return StartedTurn(
        user_message=user_message, reply=reply, quota=quota, sidebar_moves=sidebar_moves
    )


def _sidebar_moves(*, conversation: Conversation) -> bool:
    """Whether a turn in `conversation` changes its owner's sidebar (newest activity first):
    a first turn adds it; a later one moves it unless it is on top already, as it is for most
    turns, and then no tab need re-render its sidebar."""
    if conversation.active_leaf_id is None:
        return True
    top = (
        Conversation.objects.filter(owner_id=conversation.owner_id, active_leaf__isnull=False)
        .order_by("-updated_at")
        .values_list("id", flat=True)
        .first()
    )
    return top != conversation.id


def _title_from_message(content: str) -> str:
    first_line = " ".join(content.split())
    if len(first_line) <= TITLE_FROM_MESSAGE_CHARS:
        return first_line or "New chat"
    return first_line[: TITLE_FROM_MESSAGE_CHARS - 1].rstrip() + "…"


def web_citations(citations: list[dict[str, str]]) -> list[dict[str, str]]:
    """Only http(s) sources become links: a model can cite `javascript:` as easily as a page."""
    return [
        citation
        for citation in citations
        if urlsplit(citation.get("url", "")).scheme.lower() in {"http", "https"}
    ]


def reply_checkpoint(*, message_id: uuid.UUID, content: str, reasoning: str) -> None:
    """Save the partial reply; a no-op once the reply has finished, so a late checkpoint can
    never overwrite the final text."""
    Message.objects.filter(id=message_id, status=Message.Status.STREAMING).update(
        content=content, reasoning=reasoning, updated_at=timezone.now()
    )


def replies_checkpoint(*, replies: dict[uuid.UUID, tuple[str, str]]) -> None:
    """Checkpoint many partial replies (id → (content, reasoning)) in one transaction."""
    with transaction.atomic():
        for message_id, (content, reasoning) in replies.items():
            reply_checkpoint(message_id=message_id, content=content, reasoning=reasoning)


def reply_finish(*, message_id: uuid.UUID, outcome: ReplyOutcome) -> None:
    content_html = markdown_to_html(outcome.content)
    with transaction.atomic():
        updated = Message.objects.filter(id=message_id, status=Message.Status.STREAMING).update(
            status=outcome.status,
            content=outcome.content,
            content_html=content_html,
            reasoning=outcome.reasoning,
            finish_reason=outcome.finish_reason,
            error=outcome.error,
            refusal=outcome.refusal,
            citations=web_citations(outcome.citations),
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
            reasoning_tokens=outcome.reasoning_tokens,
            cached_tokens=outcome.cached_tokens,
            cost_usd=outcome.cost_usd,
            time_to_first_token_ms=outcome.time_to_first_token_ms,
            duration_ms=outcome.duration_ms,
            updated_at=timezone.now(),
        )
        if updated:
            Conversation.objects.filter(messages__id=message_id).update(updated_at=timezone.now())


# --- Sharing, export and admin review -------------------------------------------

SHARE_EXPIRY_DAYS = (0, 1, 7, 30)


@dataclass(frozen=True, slots=True)
class ShareOptions:
    include_system_prompt: bool = False
    include_thinking: bool = False
    visibility: str = ShareLink.Visibility.ANYONE
    expiry_days: int = 0

    def __post_init__(self) -> None:
        if self.expiry_days not in SHARE_EXPIRY_DAYS:
            raise ValueError(f"expiry_days must be one of {SHARE_EXPIRY_DAYS}")
        if self.visibility not in ShareLink.Visibility.values:
            raise ValueError("unknown visibility")


def _share_apply(*, link: ShareLink, conversation: Conversation, options: ShareOptions) -> None:
    snapshot = share_snapshot_build(
        conversation=conversation,
        include_system_prompt=options.include_system_prompt,
        include_thinking=options.include_thinking,
    )
    now = timezone.now()
    link.include_system_prompt = options.include_system_prompt
    link.include_thinking = options.include_thinking
    link.visibility = options.visibility
    link.expiry_days = options.expiry_days
    link.expires_at = (
        now + datetime.timedelta(days=options.expiry_days) if options.expiry_days else None
    )
    link.title = snapshot.title
    link.system_prompt = snapshot.system_prompt
    link.messages = snapshot.messages
    link.snapshot_at = now


def share_link_create(
    *, conversation_id: uuid.UUID | str, user: AbstractBaseUser, options: ShareOptions
) -> tuple[ShareLink, str]:
    """Publish the branch on screen. Returns the link and its token; raises
    Conversation.DoesNotExist unless the user owns the conversation."""
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(id=conversation_id, owner=user)
        token = secrets.token_urlsafe(32)
        link = ShareLink(
            conversation=conversation,
            token=token,
            token_digest=share_token_digest(token=token),
        )
        _share_apply(link=link, conversation=conversation, options=options)
        link.save()
    return link, token


def share_link_publish(
    *, conversation_id: uuid.UUID | str, user: AbstractBaseUser, options: ShareOptions
) -> tuple[ShareLink, bool]:
    """What the dialog's button does: update the conversation's live link, or create one.
    The decision is taken under the conversation's row lock, so two clicks racing each other
    cannot leave two live links. Returns the link and whether it was created."""
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(id=conversation_id, owner=user)
        live = share_link_live_for_conversation(conversation=conversation)
        if live is not None:
            return share_link_update(link_id=live.id, user=user, options=options), False
        link, _ = share_link_create(conversation_id=conversation.id, user=user, options=options)
    return link, True


def share_link_update(
    *, link_id: uuid.UUID | str, user: AbstractBaseUser, options: ShareOptions
) -> ShareLink:
    """Refresh the snapshot and options under the same URL. Only a live link can be updated:
    a revoked one stays dead. Raises ShareLink.DoesNotExist for anyone but the owner."""
    with transaction.atomic():
        link = (
            ShareLink.objects.select_for_update()
            .select_related("conversation")
            .get(id=link_id, conversation__owner=user, revoked_at__isnull=True)
        )
        _share_apply(link=link, conversation=link.conversation, options=options)
        link.save()
    return link


def share_link_revoke(*, link_id: uuid.UUID | str, user: AbstractBaseUser) -> ShareLink:
    """The link answers 404 from now on. Raises ShareLink.DoesNotExist for anyone but the
    owner; revoking twice keeps the first time."""
    link = ShareLink.objects.get(id=link_id, conversation__owner=user)
    ShareLink.objects.filter(id=link.id, revoked_at__isnull=True).update(
        revoked_at=timezone.now(), updated_at=timezone.now()
    )
    link.refresh_from_db()
    return link


def share_link_record_view(*, link: ShareLink) -> None:
    # F() so concurrent visitors never lose a count to a read-modify-write race.
    ShareLink.objects.filter(id=link.id).update(view_count=F("view_count") + 1)


COPY_SUFFIX = " (copy)"


def copy_title(*, title: str) -> str:
    """A copy says it is one ("Rust lifetimes (copy)"), within the title's length."""
    room = Conversation._meta.get_field("title").max_length - len(COPY_SUFFIX)
    base = title if len(title) <= room else title[: room - 1].rstrip() + "…"
    return base + COPY_SUFFIX


def conversation_create_from_share(*, link: ShareLink, owner: AbstractBaseUser) -> Conversation:
    """Continue this conversation: a new conversation of the viewer's own, holding a copy of
    the published messages (never anything the snapshot left out)."""
    with transaction.atomic():
        conversation = Conversation.objects.create(
            owner=owner,
            title=copy_title(title=link.title),
            system_prompt=link.system_prompt,
        )
        parent: Message | None = None
        for item in link.messages:
            role = item.get("role")
            if role not in Message.Role.values:
                continue
            status = item.get("status", Message.Status.COMPLETE)
            if status not in Message.Status.values or status == Message.Status.STREAMING:
                status = Message.Status.COMPLETE
            content = str(item.get("content", ""))
            parent = Message.objects.create(
                conversation=conversation,
                parent=parent,
                role=role,
                content=content,
                # Re-rendered rather than copied: the new conversation's HTML owes nothing to
                # what was stored in a JSON column.
                content_html=markdown_to_html(content) if role == Message.Role.ASSISTANT else "",
                reasoning=str(item.get("reasoning", "")),
                status=status,
                finish_reason=str(item.get("finish_reason", ""))[:32],
                refusal=str(item.get("refusal", "")),
                citations=item.get("citations", []),
                model=str(item.get("model", ""))[:100],
            )
        conversation.active_leaf = parent
        conversation.save()
    return conversation


def conversation_delete(*, conversation_id: uuid.UUID | str, owner: AbstractBaseUser) -> None:
    """Delete the conversation with its messages, share links and review (cascade); the staff
    access log keeps its entries. Raises Conversation.DoesNotExist for anyone but the owner.

    A reply still streaming is stopped by the caller; its last checkpoint and final save then
    simply find no row."""
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(id=conversation_id, owner=owner)
        # The active leaf points into the messages being deleted; clear it first so the
        # deletion order can never trip over the self-reference.
        conversation.active_leaf = None
        conversation.save(update_fields=["active_leaf"])
        conversation.delete()


def transcript_access_record(
    *, conversation: Conversation, staff: AbstractBaseUser, reason: str, kind: str
) -> TranscriptAccess:
    return TranscriptAccess.objects.create(
        conversation=conversation,
        conversation_uuid=conversation.id,
        conversation_title=conversation.title,
        staff=staff,
        staff_username=staff.get_username(),
        kind=kind,
        reason=reason.strip(),
    )


def conversation_review_update(
    *,
    conversation: Conversation,
    reviewer: AbstractBaseUser,
    note: str | None = None,
    flagged: bool | None = None,
    mark_reviewed: bool = False,
) -> ConversationReview:
    """Change what is given (None leaves it as it is) and stamp who did it and when."""
    with transaction.atomic():
        review, _ = ConversationReview.objects.select_for_update().get_or_create(
            conversation=conversation
        )
        now = timezone.now()
        if note is not None:
            review.note = note.strip()
        if flagged is not None and flagged != review.flagged:
            review.flagged = flagged
            review.flagged_at = now if flagged else None
            review.flagged_by = reviewer if flagged else None
        if mark_reviewed:
            review.reviewed_at = now
            review.reviewed_by = reviewer
        review.save()
    return review


# The workspace: branching turns, titles, rename/delete, preferences.


def _conversation_lock_idle(*, conversation_id: uuid.UUID, owner: AbstractBaseUser) -> Conversation:
    """Lock the owner's conversation for a change to its tree; refused while a reply streams,
    because the branch on screen must not move under a reply being written."""
    conversation = Conversation.objects.select_for_update().get(id=conversation_id, owner=owner)
    if Message.objects.filter(conversation=conversation, status=Message.Status.STREAMING).exists():
        raise TurnRefused(
            "A reply is still being written in this conversation. Wait for it or press Stop, "
            "then try again."
        )
    return conversation


def _conversation_apply_settings(*, conversation: Conversation, settings: TurnSettings) -> None:
    conversation.sampling = settings.sampling
    conversation.temperature = settings.temperature
    conversation.top_p = settings.top_p
    conversation.reasoning_effort = settings.reasoning_effort
    conversation.max_tokens = settings.max_tokens
    conversation.stop_sequences = list(settings.stop)
    if settings.system_prompt is not None:
        conversation.system_prompt = settings.system_prompt


def _message_of(*, conversation: Conversation, message_id: uuid.UUID | str, role: str) -> Message:
    try:
        return Message.objects.get(id=message_id, conversation=conversation, role=role)
    except (Message.DoesNotExist, ValueError, TypeError) as exc:
        raise TurnRefused("That message is not part of this conversation.") from exc


def _reply_create(
    *, conversation: Conversation, parent: Message, params: dict[str, Any], model: str
) -> Message:
    # Regenerate, edit and continue start replies too, so they count against the same limits.
    _allowance_check(user=conversation.owner)
    reply = Message.objects.create(
        conversation=conversation,
        parent=parent,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        model=model,
        request_params=params,
    )
    conversation.active_leaf = reply
    conversation.save()
    return reply


def reply_regenerate(
    *,
    conversation_id: uuid.UUID,
    owner: AbstractBaseUser,
    reply_id: uuid.UUID | str,
    settings: TurnSettings,
    model: str,
) -> Message:
    """A new version of a reply (also how an error is retried): a sibling under the same user
    message, so the old one stays reachable and the user's message is not repeated."""
    with transaction.atomic():
        conversation = _conversation_lock_idle(conversation_id=conversation_id, owner=owner)
        old = _message_of(
            conversation=conversation, message_id=reply_id, role=Message.Role.ASSISTANT
        )
        _conversation_apply_settings(conversation=conversation, settings=settings)
        return _reply_create(
            conversation=conversation,
            parent=old.parent,
            params=settings.request_params(),
            model=model,
        )


def turn_edit(
    *,
    conversation_id: uuid.UUID,
    owner: AbstractBaseUser,
    message_id: uuid.UUID | str,
    content: str,
    settings: TurnSettings,
    model: str,
) -> tuple[Message, Message]:
    """Resend an edited user message: the conversation branches where that message was."""
    with transaction.atomic():
        conversation = _conversation_lock_idle(conversation_id=conversation_id, owner=owner)
        original = _message_of(
            conversation=conversation, message_id=message_id, role=Message.Role.USER
        )
        user_message = Message.objects.create(
            conversation=conversation,
            parent_id=original.parent_id,
            role=Message.Role.USER,
            content=content,
        )
        _conversation_apply_settings(conversation=conversation, settings=settings)
        reply = _reply_create(
            conversation=conversation,
            parent=user_message,
            params=settings.request_params(),
            model=model,
        )
    return user_message, reply


def reply_continue(
    *,
    conversation_id: uuid.UUID,
    owner: AbstractBaseUser,
    reply_id: uuid.UUID | str,
    settings: TurnSettings,
    model: str,
) -> Message:
    """Carry on a reply cut short (token limit, Stop, restart) as its child: upstream sees the
    partial reply as the last assistant message and writes on from there."""
    with transaction.atomic():
        conversation = _conversation_lock_idle(conversation_id=conversation_id, owner=owner)
        partial = _message_of(
            conversation=conversation, message_id=reply_id, role=Message.Role.ASSISTANT
        )
        cut_short = partial.finish_reason == "length" or partial.status in (
            Message.Status.STOPPED,
            Message.Status.INTERRUPTED,
        )
        if not cut_short or not partial.content:
            raise TurnRefused("Only a reply that was stopped or hit the token limit can continue.")
        params = settings.request_params()
        # Claude refuses a prefilled assistant turn while thinking, so a continuation never thinks.
        params.pop("reasoning_effort", None)
        _conversation_apply_settings(conversation=conversation, settings=settings)
        return _reply_create(conversation=conversation, parent=partial, params=params, model=model)


def branch_switch(
    *, conversation_id: uuid.UUID, owner: AbstractBaseUser, message_id: uuid.UUID | str
) -> Conversation:
    """Show another version of a message: the branch through it, down to its newest leaf."""
    with transaction.atomic():
        conversation = _conversation_lock_idle(conversation_id=conversation_id, owner=owner)
        try:
            message = Message.objects.get(id=message_id, conversation=conversation)
        except (Message.DoesNotExist, ValueError, TypeError) as exc:
            raise TurnRefused("That message is not part of this conversation.") from exc
        children: dict[uuid.UUID, uuid.UUID] = {}
        # Ordered oldest first, so the last child written under each parent wins.
        for child_id, parent_id in (
            Message.objects.filter(conversation=conversation)
            .order_by("created_at")
            .values_list("id", "parent_id")
        ):
            if parent_id is not None:
                children[parent_id] = child_id
        leaf = message.id
        while leaf in children:
            leaf = children[leaf]
        conversation.active_leaf_id = leaf
        conversation.save(update_fields=["active_leaf"])
    return conversation


def conversation_rename(
    *, conversation_id: uuid.UUID, owner: AbstractBaseUser, title: str
) -> Conversation:
    conversation = Conversation.objects.get(id=conversation_id, owner=owner)
    conversation.title = title
    conversation.save(update_fields=["title", "updated_at"])
    return conversation


def title_is_provisional(*, title: str, first_message: str) -> bool:
    """True while the title is still the one taken from the first message."""
    return title == _title_from_message(first_message)


def conversation_title_generated_set(
    *, conversation_id: uuid.UUID, title: str, first_message: str
) -> bool:
    """Replace the provisional title with the model's, unless the user renamed it meanwhile."""
    provisional = _title_from_message(first_message)
    return bool(
        Conversation.objects.filter(id=conversation_id, title=provisional).update(
            title=title[: Conversation._meta.get_field("title").max_length]
        )
    )


def preferences_update(
    *,
    user: AbstractBaseUser,
    system_prompt: str,
    sampling: str,
    temperature: float,
    top_p: float,
    reasoning_effort: str,
    max_tokens: int,
) -> UserPreferences:
    preferences, _ = UserPreferences.objects.update_or_create(
        user=user,
        defaults={
            "system_prompt": system_prompt,
            "sampling": sampling,
            "temperature": temperature,
            "top_p": top_p,
            "reasoning_effort": reasoning_effort,
            "max_tokens": max_tokens,
        },
    )
    return preferences


def _allowance_check(*, user: AbstractBaseUser) -> limits.QuotaUsage:
    try:
        return limits.turn_allowance_check(user=user)
    except limits.LimitReached as exc:
        raise TurnRefused(str(exc)) from exc


RETRYABLE_STATUSES = (Message.Status.ERROR, Message.Status.INTERRUPTED)


def reply_retry(
    *,
    conversation_id: uuid.UUID,
    message_id: uuid.UUID,
    owner: AbstractBaseUser,
    model: str,
) -> tuple[Message, Message]:
    """Write a failed reply again: a new streaming sibling under the same user message.

    The user's message is not duplicated; the failed reply stays in the tree (as an earlier
    version) and the new one becomes the active leaf. Returns (failed reply, new reply).
    """
    with transaction.atomic():
        conversation = _conversation_lock_idle(conversation_id=conversation_id, owner=owner)
        failed = Message.objects.filter(
            id=message_id, conversation=conversation, role=Message.Role.ASSISTANT
        ).first()
        if failed is None:
            raise TurnRefused("That reply is not part of this conversation.")
        if failed.status not in RETRYABLE_STATUSES:
            raise TurnRefused("Only a reply that failed or was interrupted can be retried.")
        if conversation.active_leaf_id != failed.id:
            raise TurnRefused("Only the last reply of the conversation can be retried.")
        _allowance_check(user=owner)
        reply = Message.objects.create(
            conversation=conversation,
            parent_id=failed.parent_id,
            role=Message.Role.ASSISTANT,
            status=Message.Status.STREAMING,
            model=model,
            request_params=failed.request_params,
        )
        conversation.active_leaf = reply
        conversation.save(update_fields=["active_leaf", "updated_at"])
    return failed, reply
