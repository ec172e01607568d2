"""Writes. Keyword-only, typed, and each one a single transaction."""

import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from conversations import limits
from conversations.models import Conversation, Message, ReasoningEffort, Sampling
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
    return Conversation.objects.create(owner=owner)


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
        _allowance_check(user=owner)
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


def _allowance_check(*, user: AbstractBaseUser) -> None:
    try:
        limits.turn_allowance_check(user=user)
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
        conversation = Conversation.objects.select_for_update().get(id=conversation_id, owner=owner)
        failed = Message.objects.filter(
            id=message_id, conversation=conversation, role=Message.Role.ASSISTANT
        ).first()
        if failed is None:
            raise TurnRefused("That reply is not part of this conversation.")
        if failed.status not in RETRYABLE_STATUSES:
            raise TurnRefused("Only a reply that failed or was interrupted can be retried.")
        if conversation.active_leaf_id != failed.id:
            raise TurnRefused("Only the last reply of the conversation can be retried.")
        if Message.objects.filter(
            conversation=conversation, status=Message.Status.STREAMING
        ).exists():
            raise TurnRefused(
                "A reply is still being written in this conversation. Wait for it or press "
                "Stop, then try again."
            )
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
