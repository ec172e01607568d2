"""Writes for staff review: the transcript access log and review records."""

from collections.abc import Iterable

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from conversations.models import (
    Conversation,
    ConversationReview,
    TranscriptAccess,
    UserPreferences,
)

SEARCH_TERMS_MAX_CHARS = 500


def transcript_access_record(
    *, conversation: Conversation, staff: User, reason: str, kind: str
) -> TranscriptAccess:
    return TranscriptAccess.objects.create(
        conversation=conversation,
        conversation_uuid=conversation.id,
        conversation_title=conversation.title,
        owner_id=conversation.owner_id,
        owner_username=conversation.owner.get_username(),
        staff=staff,
        staff_username=staff.get_username(),
        kind=kind,
        reason=reason.strip(),
    )


def content_search_record(
    *,
    staff: User,
    terms: str,
    reason: str,
    matched: Iterable[Conversation],
) -> TranscriptAccess:
    """A staff search over titles and message text reads every conversation it matches: one
    entry per match (so each owner sees it), or one naming no conversation when nothing
    matched. Returns the first entry, which stands for the whole search."""
    common = {
        "staff": staff,
        "staff_username": staff.get_username(),
        "kind": TranscriptAccess.Kind.SEARCH,
        "reason": reason.strip(),
        "search_terms": terms[:SEARCH_TERMS_MAX_CHARS],
    }
    rows = [
        TranscriptAccess(
            conversation=conversation,
            conversation_uuid=conversation.id,
            conversation_title=conversation.title,
            owner_id=conversation.owner_id,
            owner_username=conversation.owner.get_username(),
            **common,
        )
        for conversation in matched
    ]
    if not rows:
        return TranscriptAccess.objects.create(**common)
    return TranscriptAccess.objects.bulk_create(rows)[0]


def system_prompt_read_record(
    *, preferences: UserPreferences, staff: User, reason: str
) -> TranscriptAccess:
    """A staff member read a user's default system prompt: logged like a transcript."""
    return TranscriptAccess.objects.create(
        owner=preferences.user,
        owner_username=preferences.user.get_username(),
        staff=staff,
        staff_username=staff.get_username(),
        kind=TranscriptAccess.Kind.SYSTEM_PROMPT,
        reason=reason.strip(),
    )


def conversation_review_update(
    *,
    conversation: Conversation,
    reviewer: User,
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
