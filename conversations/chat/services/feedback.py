"""Feedback on replies: a thumb up or down with an optional comment, owner only."""

import uuid

from django.contrib.auth.models import User
from django.db import transaction

from conversations.models import (
    Message,
    MessageFeedback,
)


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
