"""Writes. Keyword-only, typed, and each one a single transaction."""

import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from conversations.models import (
    Conversation,
    Message,
    ReasoningEffort,
    Sampling,
    UserPreferences,
)
from conversations.rendering import markdown_to_html

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
        return Conversation.objects.create(owner=owner)
    return Conversation.objects.create(
        owner=owner,
        system_prompt=preferences.system_prompt,
        sampling=preferences.sampling,
        temperature=preferences.temperature,
        top_p=preferences.top_p,
        reasoning_effort=preferences.reasoning_effort,
        max_tokens=preferences.max_tokens,
    )


def turn_start(
    *,
    conversation_id: uuid.UUID,
    owner: AbstractBaseUser,
    content: str,
    settings: TurnSettings,
    model: str,
) -> tuple[Message, Message]:
    """Save the user's message and an empty streaming reply, atomically.

    The conversation row is locked so that two processes cannot both start a reply in the same
    conversation: one generation at a time, never run twice.
    """
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(id=conversation_id, owner=owner)
        if Message.objects.filter(
            conversation=conversation, status=Message.Status.STREAMING
        ).exists():
            raise TurnRefused(
                "A reply is still being written in this conversation. Wait for it or press "
                "Stop, then send again."
            )
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
        conversation.sampling = settings.sampling
        conversation.temperature = settings.temperature
        conversation.top_p = settings.top_p
        conversation.reasoning_effort = settings.reasoning_effort
        conversation.max_tokens = settings.max_tokens
        conversation.stop_sequences = list(settings.stop)
        if settings.system_prompt is not None:
            conversation.system_prompt = settings.system_prompt
        if conversation.title == Conversation._meta.get_field("title").default:
            conversation.title = _title_from_message(content)
        conversation.save()
    return user_message, reply


def _title_from_message(content: str) -> str:
    first_line = " ".join(content.split())
    if len(first_line) <= TITLE_FROM_MESSAGE_CHARS:
        return first_line or "New chat"
    return first_line[: TITLE_FROM_MESSAGE_CHARS - 1].rstrip() + "…"


def reply_checkpoint(*, message_id: uuid.UUID, content: str, reasoning: str) -> None:
    """Save the partial reply; a no-op once the reply has finished, so a late checkpoint can
    never overwrite the final text."""
    Message.objects.filter(id=message_id, status=Message.Status.STREAMING).update(
        content=content, reasoning=reasoning, updated_at=timezone.now()
    )


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
            citations=outcome.citations,
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


def conversation_delete(*, conversation_id: uuid.UUID, owner: AbstractBaseUser) -> None:
    """Delete the conversation and every message in it. A reply still streaming is stopped by
    the caller; its last checkpoint and final save then simply find no row."""
    Conversation.objects.get(id=conversation_id, owner=owner).delete()


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
