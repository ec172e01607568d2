"""A reply's life after its turn started: checkpoints while it streams and the final save."""

import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from urllib.parse import urlsplit

from django.db import transaction
from django.utils import timezone

from conversations.accounts import services as accounts_services
from conversations.catalogue import selectors as catalogue
from conversations.chat.rendering import markdown_to_html
from conversations.models import (
    Conversation,
    Message,
)


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
    # The request dialect the gateway accepted (``Dialect.code()``); empty when none was.
    dialect: str = ""
    # The sanitised HTML of `content` when the caller has it already (the streaming render,
    # which kept its finished blocks, makes it for the cost of the last one); rendered here
    # when None.
    content_html: str | None = None


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


DIALECT_MAX_CHARS = Message._meta.get_field("dialect").max_length or 0


# The outcome's fields that the reply's columns of the same name take unchanged; the others
# are cleaned, bounded or worked out first.
_STORED_AS_IS = (
    "status",
    "content",
    "reasoning",
    "finish_reason",
    "error",
    "refusal",
    "prompt_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "cached_tokens",
    "usage_estimated",
    "time_to_first_token_ms",
    "duration_ms",
)


def request_notes_bounded(*, notes: list[str]) -> list[str]:
    kept: list[str] = []
    for note in notes:
        if isinstance(note, str) and note and note not in kept:
            kept.append(note[:REQUEST_NOTE_MAX_CHARS])
    return kept[:REQUEST_NOTES_MAX]


def reply_finish(*, message_id: uuid.UUID, outcome: ReplyOutcome) -> None:
    """Save the end of a reply, once. A reply the recovery sweep marked `interrupted` while its
    process could not reach the database is still saved: its text is the whole truth."""
    content_html = (
        outcome.content_html
        if outcome.content_html is not None
        else markdown_to_html(outcome.content)
    )
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
            **{name: getattr(outcome, name) for name in _STORED_AS_IS},
            content_html=content_html,
            citations=web_citations(outcome.citations),
            cost_usd=cost_usd,
            cost_estimated=cost_estimated,
            raw_event=outcome.raw_event[:RAW_EVENT_MAX_CHARS],
            dialect=outcome.dialect[:DIALECT_MAX_CHARS],
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
