"""Writes. Keyword-only, typed, and each one a single transaction."""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from urllib.parse import urlsplit

from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Exists, OuterRef, Subquery
from django.utils import timezone

from conversations.accounts import limits
from conversations.accounts import services as accounts_services
from conversations.attachments import services as attachment_services
from conversations.catalogue import selectors as catalogue
from conversations.chat.rendering import markdown_to_html
from conversations.chat.selectors import message_path
from conversations.gateway.profiles import (
    STORED_FIELDS,
    ModelProfile,
    TurnSettings,
    settings_from_params,
)
from conversations.models import (
    Conversation,
    Message,
    MessageFeedback,
    UserPreferences,
)

__all__ = ["TurnSettings"]

TITLE_FROM_MESSAGE_CHARS = 60


class TurnRefused(Exception):
    """The turn cannot start; the message says why, in words for the user."""


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
    # The token counts are the app's estimate, not the gateway's report.
    usage_estimated: bool = False
    time_to_first_token_ms: int | None = None
    duration_ms: int | None = None
    # Parameters the request did not carry, and why, in words (shown on the reply).
    request_notes: list[str] = field(default_factory=list)
    # The first event of a stream the app could not read, for staff (see Message.raw_event).
    raw_event: str = ""


def conversation_create(*, owner: User) -> Conversation:
    """A new conversation starts from the owner's default model, system prompt and parameters."""
    model = catalogue.model_for_new_conversation(
        user=owner, catalogue=catalogue.catalogue_current()
    )
    preferences = UserPreferences.objects.filter(user=owner).first()
    if preferences is None:
        return Conversation.objects.create(
            owner=owner, model=model, max_tokens=django_settings.CHAT_DEFAULT_MAX_TOKENS
        )
    return Conversation.objects.create(
        owner=owner, **{**preferences.settings_values(), "model": model}
    )


@dataclass(frozen=True, slots=True)
class StartedTurn:
    user_message: Message
    reply: Message
    # The owner's usage, this reply included.
    quota: limits.QuotaUsage
    # Whether the sidebar changed: the conversation joined it, or moved to the top.
    sidebar_moves: bool
    # Both messages are their parent's only child (the usual case), so each is version 1 of 1.
    without_siblings: bool = False


def turn_start(
    *,
    conversation_id: uuid.UUID,
    owner: User,
    content: str,
    settings: TurnSettings,
    model: str,
    attachment_ids: Sequence[uuid.UUID] = (),
) -> StartedTurn:
    """Save the user's message (with the uploads it carries) and an empty streaming reply,
    atomically: an attachment refused (not the user's, over a limit, a kind the model cannot
    read) leaves nothing behind.

    The conversation row is locked so that two processes cannot both start a reply in the same
    conversation: one generation at a time, never run twice.
    """
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(id=conversation_id, owner=owner)
        state = _turn_start_state(conversation=conversation)
        if state.reply_streaming:
            raise TurnRefused(REPLY_STREAMING_REFUSAL)
        plan = _turn_plan(conversation=conversation, settings=settings, model=model)
        quota = _allowance_check(user=owner, max_tokens=plan.params["max_tokens"])
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
            model=plan.model,
            request_params=plan.params,
            model_note=plan.note,
            request_notes=plan.notes,
            model_changed=(
                _model_changes(parent=user_message, model=plan.model)
                if state.leaf_reply_model is None
                else bool(state.leaf_reply_model) and state.leaf_reply_model != plan.model
            ),
        )
        attachment_services.turn_attachments_apply(
            user_message=user_message,
            reply=reply,
            owner=owner,
            attachment_ids=attachment_ids,
            profile=_profile_of(plan),
            earlier_path=lambda: _request_thread(conversation=conversation, leaf=user_message)[:-1],
        )
        accounts_services.usage_reserve(reply=reply, owner=owner)
        conversation.active_leaf = reply
        _conversation_apply_settings(conversation=conversation, settings=settings, model=plan.model)
        if conversation.title == Conversation._meta.get_field("title").default:
            conversation.title = _title_from_message(content)
        conversation.save()
    return StartedTurn(
        user_message=user_message,
        reply=reply,
        quota=quota,
        sidebar_moves=state.sidebar_moves,
        without_siblings=not state.leaf_has_children,
    )


@dataclass(frozen=True, slots=True)
class _TurnStartState:
    reply_streaming: bool
    sidebar_moves: bool
    leaf_has_children: bool
    # The model of the reply the user answers ("" if it names none); None when the leaf is no
    # reply (no leaf, or an unanswered message), and the branch must be walked to find one.
    leaf_reply_model: str | None


def _turn_start_state(*, conversation: Conversation) -> _TurnStartState:
    """What a turn start needs to know besides the locked row, in one statement. It runs after
    the lock is held: on PostgreSQL a statement sees what committed before it started, so the
    streaming check must not ride in the locking statement, or two tabs could both pass it."""
    streaming = Message.objects.filter(
        conversation_id=OuterRef("pk"), status=Message.Status.STREAMING
    )
    # The sidebar lists conversations by latest activity: a first turn adds this one, a later
    # one moves it unless it is on top already (most turns), and then no tab need re-render it.
    newer = Conversation.objects.filter(
        owner_id=OuterRef("owner_id"),
        active_leaf__isnull=False,
        updated_at__gt=OuterRef("updated_at"),
    )
    leaf = conversation.active_leaf_id
    children = Message.objects.filter(conversation_id=OuterRef("pk"))
    children = children.filter(parent_id=leaf) if leaf else children.filter(parent__isnull=True)
    leaf_row = Message.objects.filter(pk=OuterRef("active_leaf_id"))
    reply_streaming, newer_exists, leaf_has_children, leaf_role, leaf_model = (
        Conversation.objects.filter(pk=conversation.pk)
        .annotate(
            s=Exists(streaming),
            n=Exists(newer),
            c=Exists(children),
            r=Subquery(leaf_row.values("role")[:1]),
            m=Subquery(leaf_row.values("model")[:1]),
        )
        .values_list("s", "n", "c", "r", "m")
        .get()
    )
    return _TurnStartState(
        reply_streaming=reply_streaming,
        sidebar_moves=leaf is None or newer_exists,
        leaf_has_children=leaf_has_children,
        leaf_reply_model=leaf_model or "" if leaf_role == Message.Role.ASSISTANT else None,
    )


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


def _cost_of(*, message_id: uuid.UUID, outcome: ReplyOutcome) -> tuple[Decimal | None, bool]:
    """(cost, estimated): the gateway's own figure when it gave one, else the model profile's
    prices times the token counts."""
    if outcome.cost_usd is not None:
        return outcome.cost_usd, False
    if outcome.prompt_tokens is None or outcome.completion_tokens is None:
        return None, False
    model = Message.objects.filter(id=message_id).values_list("model", flat=True).first()
    if not model:
        return None, False
    estimate = (
        catalogue.catalogue_current()
        .profile(model)
        .estimated_cost(
            prompt_tokens=outcome.prompt_tokens, completion_tokens=outcome.completion_tokens
        )
    )
    return estimate, estimate is not None


# A reply's notes are a handful of short sentences; anything beyond is not one of them.
REQUEST_NOTES_MAX = 8
REQUEST_NOTE_MAX_CHARS = 300
RAW_EVENT_MAX_CHARS = 4000


def request_notes_bounded(*, notes: list[str]) -> list[str]:
    kept: list[str] = []
    for note in notes:
        if isinstance(note, str) and note and note not in kept:
            kept.append(note[:REQUEST_NOTE_MAX_CHARS])
    return kept[:REQUEST_NOTES_MAX]


def reply_finish(*, message_id: uuid.UUID, outcome: ReplyOutcome) -> None:
    """Save the end of a reply, once. A reply the recovery sweep marked `interrupted` while its
    process could not reach the database is still saved: its text is the whole truth."""
    content_html = markdown_to_html(outcome.content)
    cost_usd, cost_estimated = _cost_of(message_id=message_id, outcome=outcome)
    notes: dict[str, list[str]] = {}
    if outcome.request_notes:
        # Beside those the turn started with (a retired model's replacement took less).
        started = Message.objects.filter(id=message_id).values_list("request_notes", flat=True)
        earlier = started.first() or []
        notes["request_notes"] = request_notes_bounded(notes=[*earlier, *outcome.request_notes])
    with transaction.atomic():
        updated = Message.objects.filter(
            id=message_id, status__in=[Message.Status.STREAMING, Message.Status.INTERRUPTED]
        ).update(
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
            cost_usd=cost_usd,
            cost_estimated=cost_estimated,
            usage_estimated=outcome.usage_estimated,
            time_to_first_token_ms=outcome.time_to_first_token_ms,
            duration_ms=outcome.duration_ms,
            raw_event=outcome.raw_event[:RAW_EVENT_MAX_CHARS],
            updated_at=timezone.now(),
            **notes,
        )
        if updated:
            Conversation.objects.filter(messages__id=message_id).update(updated_at=timezone.now())
        accounts_services.usage_settle(
            message_id=message_id,
            status=outcome.status,
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
            cost_usd=outcome.cost_usd,
            estimated=outcome.usage_estimated,
        )


# --- Deleting ------------------------------------------------------------------


def conversation_delete(*, conversation_id: uuid.UUID | str, owner: User) -> None:
    """Delete the conversation with its messages, share links and review (cascade); the staff
    access log keeps its entries. Raises Conversation.DoesNotExist for anyone but the owner.

    A reply still streaming is stopped by the caller; its last checkpoint and final save then
    simply find no row."""
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(id=conversation_id, owner=owner)
        attachment_ids = attachment_services.attachment_ids_of_conversation(
            conversation_id=conversation.id
        )
        # The active leaf points into the messages being deleted; clear it first so the
        # deletion order can never trip over the self-reference.
        conversation.active_leaf = None
        conversation.save(update_fields=["active_leaf"])
        conversation.delete()
        # Files no other message (another conversation's copy, a branch) still refers to.
        attachment_services.attachments_release(attachment_ids=attachment_ids)


# The workspace: branching turns, titles, rename/delete, preferences.


def _conversation_lock_idle(*, conversation_id: uuid.UUID, owner: User) -> Conversation:
    """Lock the owner's conversation for a change to its tree; refused while a reply streams,
    because the branch on screen must not move under a reply being written."""
    conversation = Conversation.objects.select_for_update().get(id=conversation_id, owner=owner)
    if Message.objects.filter(conversation=conversation, status=Message.Status.STREAMING).exists():
        raise TurnRefused(REPLY_STREAMING_REFUSAL)
    return conversation


REPLY_STREAMING_REFUSAL = (
    "A reply is still being written in this conversation. Wait for it or press Stop, "
    "then try again."
)


def _turn_plan(
    *, conversation: Conversation, settings: TurnSettings, model: str
) -> catalogue.TurnPlan:
    """Where the turn goes and what it sends: the model picked for it (else the conversation's,
    else the site's), or that model's replacement once it is retired."""
    current = catalogue.catalogue_current()
    chosen = model or conversation.model or catalogue.default_model_id(catalogue=current)
    return catalogue.turn_plan(
        settings=settings, chosen=chosen, catalogue=current, on=catalogue.today()
    )


def _conversation_apply_settings(
    *, conversation: Conversation, settings: TurnSettings, model: str
) -> None:
    conversation.model = model
    for name in STORED_FIELDS:
        setattr(conversation, name, getattr(settings, name))
    conversation.stop_sequences = list(settings.stop)
    if settings.system_prompt is not None:
        conversation.system_prompt = settings.system_prompt


def _message_of(*, conversation: Conversation, message_id: uuid.UUID | str, role: str) -> Message:
    try:
        return Message.objects.get(id=message_id, conversation=conversation, role=role)
    except (Message.DoesNotExist, ValueError, TypeError) as exc:
        raise TurnRefused("That message is not part of this conversation.") from exc


def _reply_create(
    *, conversation: Conversation, parent: Message, plan: catalogue.TurnPlan
) -> Message:
    # Regenerate, edit and continue start replies too, so they count against the same limits.
    _allowance_check(user=conversation.owner, max_tokens=int(plan.params.get("max_tokens") or 0))
    reply = Message.objects.create(
        conversation=conversation,
        parent=parent,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        model=plan.model,
        request_params=plan.params,
        model_note=plan.note,
        request_notes=plan.notes,
        model_changed=_model_changes(parent=parent, model=plan.model),
    )
    _attachments_check(conversation=conversation, leaf=parent, reply=reply, plan=plan)
    accounts_services.usage_reserve(reply=reply, owner=conversation.owner)
    conversation.active_leaf = reply
    conversation.save()
    return reply


def _profile_of(plan: catalogue.TurnPlan) -> ModelProfile:
    return plan.profile or catalogue.catalogue_current().profile(plan.model)


def _request_thread(*, conversation: Conversation, leaf: Message) -> list[Message]:
    """The messages a request ending at `leaf` is built from (as `reply_turn` builds it)."""
    return catalogue.thread_in_context(conversation=conversation, thread=message_path(message=leaf))


def _attachments_check(
    *, conversation: Conversation, leaf: Message | None, reply: Message, plan: catalogue.TurnPlan
) -> None:
    """A new reply's request carries every file on its thread again: refused in words when
    the model cannot read them or they pass the request limits (the transaction then leaves
    nothing behind)."""
    if leaf is None:
        return
    try:
        attachment_services.thread_attachments_check(
            thread=_request_thread(conversation=conversation, leaf=leaf),
            profile=_profile_of(plan),
            reply=reply,
        )
    except attachment_services.AttachmentRefused as exc:
        raise TurnRefused(str(exc)) from exc


def _model_changes(*, parent: Message | None, model: str) -> bool:
    previous = catalogue.previous_model_of(parent=parent)
    return bool(previous) and previous != model


def reply_regenerate(
    *,
    conversation_id: uuid.UUID,
    owner: User,
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
        if old.parent is None:  # replies always answer a message; this row is damaged
            raise TurnRefused("That reply has no message to answer.")
        plan = _turn_plan(conversation=conversation, settings=settings, model=model)
        _conversation_apply_settings(conversation=conversation, settings=settings, model=plan.model)
        return _reply_create(conversation=conversation, parent=old.parent, plan=plan)


def turn_edit(
    *,
    conversation_id: uuid.UUID,
    owner: User,
    message_id: uuid.UUID | str,
    content: str,
    settings: TurnSettings,
    model: str,
    keep_attachments: Sequence[uuid.UUID] | None = None,
) -> tuple[Message, Message]:
    """Resend an edited user message: the conversation branches where that message was. The
    new version keeps the original's attachments (those in `keep_attachments`, else all),
    refused in words if the turn's model cannot read them."""
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
        plan = _turn_plan(conversation=conversation, settings=settings, model=model)
        attachment_services.message_attachments_copy(
            source_id=original.id,
            target=user_message,
            keep_ids=keep_attachments,
            profile=_profile_of(plan),
        )
        if not content.strip() and not user_message.attachment_count:
            raise TurnRefused("Type a message before sending.")
        _conversation_apply_settings(conversation=conversation, settings=settings, model=plan.model)
        reply = _reply_create(conversation=conversation, parent=user_message, plan=plan)
    return user_message, reply


def reply_continue(
    *,
    conversation_id: uuid.UUID,
    owner: User,
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
        plan = _turn_plan(conversation=conversation, settings=settings, model=model)
        # Claude refuses a prefilled assistant turn while thinking, so a continuation never thinks.
        plan.params.pop("reasoning_effort", None)
        _conversation_apply_settings(conversation=conversation, settings=settings, model=plan.model)
        return _reply_create(conversation=conversation, parent=partial, plan=plan)


def branch_switch(
    *, conversation_id: uuid.UUID, owner: User, message_id: uuid.UUID | str
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


def conversation_rename(*, conversation_id: uuid.UUID, owner: User, title: str) -> Conversation:
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


def _allowance_check(*, user: User, max_tokens: int) -> limits.QuotaUsage:
    try:
        return limits.turn_allowance_check(user=user, max_tokens=max_tokens)
    except limits.LimitReached as exc:
        raise TurnRefused(str(exc)) from exc


RETRYABLE_STATUSES = (Message.Status.ERROR, Message.Status.INTERRUPTED)


def reply_retry(
    *,
    conversation_id: uuid.UUID,
    message_id: uuid.UUID,
    owner: User,
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
        _allowance_check(user=owner, max_tokens=int(failed.request_params.get("max_tokens") or 0))
        # The same request again, unless its model has been retired since.
        sent = failed.model or model
        plan = _turn_plan(
            conversation=conversation,
            settings=settings_from_params(failed.request_params, model=sent),
            model=sent,
        )
        if not plan.note:
            plan = catalogue.TurnPlan(model=sent, params=failed.request_params)
        reply = Message.objects.create(
            conversation=conversation,
            parent_id=failed.parent_id,
            role=Message.Role.ASSISTANT,
            status=Message.Status.STREAMING,
            model=plan.model,
            request_params=plan.params,
            model_note=plan.note,
            request_notes=plan.notes,
            model_changed=_model_changes(parent=failed.parent, model=plan.model),
        )
        _attachments_check(conversation=conversation, leaf=failed.parent, reply=reply, plan=plan)
        accounts_services.usage_reserve(reply=reply, owner=owner)
        conversation.active_leaf = reply
        conversation.save(update_fields=["active_leaf", "updated_at"])
    return failed, reply


# Organising: pin and archive. A queryset update, so updated_at (the last activity, which
# orders the sidebar) stays what it was.


def conversation_pin_set(
    *, conversation_id: uuid.UUID | str, owner: User, pinned: bool
) -> Conversation:
    """Pin (to the top of the sidebar) or unpin. An archived conversation is unarchived by
    pinning it: pinned means wanted at hand. Raises Conversation.DoesNotExist for anyone but
    the owner."""
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(id=conversation_id, owner=owner)
        if pinned:
            conversation.pinned_at = conversation.pinned_at or timezone.now()
            conversation.archived_at = None
        else:
            conversation.pinned_at = None
        Conversation.objects.filter(pk=conversation.pk).update(
            pinned_at=conversation.pinned_at, archived_at=conversation.archived_at
        )
    return conversation


def conversation_archive_set(
    *, conversation_id: uuid.UUID | str, owner: User, archived: bool
) -> Conversation:
    """Archive (out of the sidebar and search, kept whole) or unarchive. Archiving unpins.
    Raises Conversation.DoesNotExist for anyone but the owner."""
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(id=conversation_id, owner=owner)
        if archived:
            conversation.archived_at = conversation.archived_at or timezone.now()
            conversation.pinned_at = None
        else:
            conversation.archived_at = None
        Conversation.objects.filter(pk=conversation.pk).update(
            pinned_at=conversation.pinned_at, archived_at=conversation.archived_at
        )
    return conversation


# Feedback on replies.


class FeedbackRefused(Exception):
    """Feedback cannot be given on this message; the message says why, in words for the user."""


def _reply_for_feedback(*, message_id: uuid.UUID | str, owner: User) -> Message:
    """The owner's finished reply. Raises Message.DoesNotExist for anyone else's message."""
    message = Message.objects.get(id=message_id, conversation__owner=owner)
    if message.role != Message.Role.ASSISTANT:
        raise FeedbackRefused("Feedback is for Claude's replies.")
    if message.status == Message.Status.STREAMING:
        raise FeedbackRefused("Wait for the reply to finish before rating it.")
    return message


def message_feedback_set(
    *, message_id: uuid.UUID | str, owner: User, rating: str, comment: str
) -> MessageFeedback:
    """Rate a reply up or down, with an optional comment; rating it again replaces both."""
    if rating not in MessageFeedback.Rating.values:
        raise FeedbackRefused("Rate the reply up or down.")
    comment = comment.strip()
    if len(comment) > MessageFeedback.COMMENT_MAX_CHARS:
        raise FeedbackRefused(
            f"Keep the comment under {MessageFeedback.COMMENT_MAX_CHARS} characters."
        )
    with transaction.atomic():
        message = _reply_for_feedback(message_id=message_id, owner=owner)
        feedback, _ = MessageFeedback.objects.update_or_create(
            message=message, defaults={"rating": rating, "comment": comment}
        )
    return feedback


def message_feedback_clear(*, message_id: uuid.UUID | str, owner: User) -> None:
    """Take the rating and comment back. Raises Message.DoesNotExist for anyone else's."""
    message = Message.objects.get(id=message_id, conversation__owner=owner)
    MessageFeedback.objects.filter(message=message).delete()
