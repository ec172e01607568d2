"""Writes for staff review: the transcript access log and review records."""

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from conversations.models import Conversation, ConversationReview, TranscriptAccess


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
