"""Turns: starting one, and the branching actions on a thread (regenerate, edit, continue,
retry, switch version), each a single transaction that refuses in words."""

import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from django.contrib.auth.models import User
from django.db import connection, transaction
from django.utils import timezone

from conversations.accounts import limits
from conversations.accounts import services as accounts_services
from conversations.attachments import services as attachment_services
from conversations.catalogue import selectors as catalogue
from conversations.chat.selectors import message_path
from conversations.chat.services.conversations import title_from_message
from conversations.gateway.profiles import (
    STORED_FIELDS,
    ModelProfile,
    TurnSettings,
    settings_from_params,
)
from conversations.models import (
    Conversation,
    Message,
)


class TurnRefused(Exception):
    """The turn cannot start; the message says why, in words for the user."""


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
    current_catalogue: catalogue.Catalogue | None = None,
    worker: str = "",
) -> StartedTurn:
    """Save the user's message (with the uploads it carries) and an empty streaming reply,
    atomically: an attachment refused (not the user's, over a limit, a kind the model cannot
    read) leaves nothing behind.

    The conversation row is locked so that two processes cannot both start a reply in the same
    conversation: one generation at a time, never run twice. `worker`, the process that will
    generate the reply, is recorded with it (see realtime.recovery).
    """
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(id=conversation_id, owner=owner)
        state = _turn_start_state(conversation=conversation)
        if state.reply_streaming:
            raise TurnRefused(REPLY_STREAMING_REFUSAL)
        plan = _turn_plan(
            conversation=conversation,
            settings=settings,
            model=model,
            current_catalogue=current_catalogue,
        )
        quota = _allowance_check(user=owner, max_tokens=plan.params["max_tokens"])
        user_message = Message.objects.create(
            conversation=conversation,
            parent_id=conversation.active_leaf_id,
            role=Message.Role.USER,
            content=content,
        )
        reply = _streaming_reply_new(
            conversation=conversation,
            parent=user_message,
            plan=plan,
            model_changed=(
                _model_changes(parent=user_message, model=plan.model)
                if state.leaf_reply_model is None
                else bool(state.leaf_reply_model) and state.leaf_reply_model != plan.model
            ),
            worker=worker,
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
            conversation.title = title_from_message(content)
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
    streaming check must not ride in the locking statement, or two tabs could both pass it.

    Written out rather than composed by the ORM, which spent ~4 ms of CPU building its three
    EXISTS and two subqueries (the database answers in a fraction of that) on every turn start:
    a burst of sends paid it once per turn, one after another on the GIL."""
    quote = connection.ops.quote_name
    conversations, messages = (
        quote(Conversation._meta.db_table),
        quote(Message._meta.db_table),
    )
    leaf = conversation.active_leaf_id
    # The sidebar lists conversations by latest activity: a first turn adds this one, a later
    # one moves it unless it is on top already (most turns), and then no tab need re-render it.
    sql = f"""
        SELECT
            EXISTS (
                SELECT 1 FROM {messages} m
                WHERE m.conversation_id = c.id AND m.status = %(streaming)s
            ),
            EXISTS (
                SELECT 1 FROM {conversations} o
                WHERE o.owner_id = c.owner_id AND o.active_leaf_id IS NOT NULL
                    AND o.updated_at > c.updated_at
            ),
            EXISTS (
                SELECT 1 FROM {messages} m
                WHERE m.conversation_id = c.id
                    AND {"m.parent_id = %(leaf)s" if leaf else "m.parent_id IS NULL"}
            ),
            leaf.role,
            leaf.model
        FROM {conversations} c LEFT JOIN {messages} leaf ON leaf.id = c.active_leaf_id
        WHERE c.id = %(conversation)s
    """
    uuid_value = Message._meta.pk.get_db_prep_value
    params = {
        "streaming": Message.Status.STREAMING.value,
        "conversation": uuid_value(conversation.pk, connection),
    }
    if leaf:
        params["leaf"] = uuid_value(leaf, connection)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        reply_streaming, newer_exists, leaf_has_children, leaf_role, leaf_model = cursor.fetchone()
    return _TurnStartState(
        reply_streaming=bool(reply_streaming),
        sidebar_moves=leaf is None or bool(newer_exists),
        leaf_has_children=bool(leaf_has_children),
        leaf_reply_model=leaf_model or "" if leaf_role == Message.Role.ASSISTANT else None,
    )


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
    *,
    conversation: Conversation,
    settings: TurnSettings,
    model: str,
    current_catalogue: catalogue.Catalogue | None = None,
) -> catalogue.TurnPlan:
    """Where the turn goes and what it sends: the model picked for it (else the conversation's,
    else the site's), or that model's replacement once it is retired."""
    current = current_catalogue or catalogue.catalogue_current()
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


def _message_of(
    *, conversation: Conversation, message_id: uuid.UUID | str, role: str | None = None
) -> Message:
    """One of the conversation's messages (of `role`, when given), else refused in words."""
    of_role = {} if role is None else {"role": role}
    try:
        return Message.objects.get(id=message_id, conversation=conversation, **of_role)
    except (Message.DoesNotExist, ValueError, TypeError) as exc:
        raise TurnRefused("That message is not part of this conversation.") from exc


def _reply_create(
    *, conversation: Conversation, parent: Message, plan: catalogue.TurnPlan
) -> Message:
    # Regenerate, edit and continue start replies too, so they count against the same limits.
    _allowance_check(user=conversation.owner, max_tokens=int(plan.params.get("max_tokens") or 0))
    reply = _streaming_reply_new(
        conversation=conversation,
        parent=parent,
        plan=plan,
        model_changed=_model_changes(parent=parent, model=plan.model),
    )
    _attachments_check(conversation=conversation, leaf=parent, reply=reply, plan=plan)
    accounts_services.usage_reserve(reply=reply, owner=conversation.owner)
    conversation.active_leaf = reply
    conversation.save()
    return reply


def _streaming_reply_new(
    *,
    conversation: Conversation,
    parent: Message | None,
    plan: catalogue.TurnPlan,
    model_changed: bool,
    worker: str = "",
) -> Message:
    """The empty reply the model is about to write, under `parent`, as `plan` says; `worker`,
    when known, is the process that will write it (see realtime.recovery)."""
    return Message.objects.create(
        conversation=conversation,
        parent=parent,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        model=plan.model,
        request_params=plan.params,
        model_note=plan.note,
        request_notes=plan.notes,
        model_changed=model_changed,
        worker_id=worker,
        heartbeat_at=timezone.now() if worker else None,
    )


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


class Redo(enum.StrEnum):
    """What a new reply makes of an existing one (the socket's action names)."""

    # A new version of the reply (also how an error is retried): a sibling under the same user
    # message, so the old one stays reachable and the user's message is not repeated.
    REGENERATE = "regenerate"
    # A reply cut short (token limit, Stop, restart) carried on as its child: upstream sees the
    # partial reply as the last assistant message and writes on from there.
    CONTINUE = "continue"


def reply_redo(
    *,
    conversation_id: uuid.UUID,
    owner: User,
    reply_id: uuid.UUID | str,
    settings: TurnSettings,
    model: str,
    how: Redo,
) -> Message:
    """A new streaming reply made from an existing one, as `how` says."""
    with transaction.atomic():
        conversation = _conversation_lock_idle(conversation_id=conversation_id, owner=owner)
        reply = _message_of(
            conversation=conversation, message_id=reply_id, role=Message.Role.ASSISTANT
        )
        parent = _continued(reply) if how is Redo.CONTINUE else _regenerated(reply)
        plan = _turn_plan(conversation=conversation, settings=settings, model=model)
        if how is Redo.CONTINUE:
            # Claude refuses a prefilled assistant turn while thinking: a continuation never
            # thinks.
            plan.params.pop("reasoning_effort", None)
        _conversation_apply_settings(conversation=conversation, settings=settings, model=plan.model)
        return _reply_create(conversation=conversation, parent=parent, plan=plan)


def _regenerated(reply: Message) -> Message:
    """The parent of a new version of `reply`: the message it answers."""
    if reply.parent is None:  # replies always answer a message; this row is damaged
        raise TurnRefused("That reply has no message to answer.")
    return reply.parent


def _continued(partial: Message) -> Message:
    """The parent of a continuation of `partial`: itself, if it was cut short."""
    cut_short = partial.finish_reason == "length" or partial.status in (
        Message.Status.STOPPED,
        Message.Status.INTERRUPTED,
    )
    if not cut_short or not partial.content:
        raise TurnRefused("Only a reply that was stopped or hit the token limit can continue.")
    return partial


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


def branch_switch(
    *, conversation_id: uuid.UUID, owner: User, message_id: uuid.UUID | str
) -> Conversation:
    """Show another version of a message: the branch through it, down to its newest leaf."""
    with transaction.atomic():
        conversation = _conversation_lock_idle(conversation_id=conversation_id, owner=owner)
        message = _message_of(conversation=conversation, message_id=message_id)
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
        reply = _streaming_reply_new(
            conversation=conversation,
            parent=failed.parent,
            plan=plan,
            model_changed=_model_changes(parent=failed.parent, model=plan.model),
        )
        _attachments_check(conversation=conversation, leaf=failed.parent, reply=reply, plan=plan)
        accounts_services.usage_reserve(reply=reply, owner=owner)
        conversation.active_leaf = reply
        conversation.save(update_fields=["active_leaf", "updated_at"])
    return failed, reply
