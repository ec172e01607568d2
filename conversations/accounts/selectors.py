"""Reads for a user's own settings."""

from django.contrib.auth.models import User

from conversations.models import TranscriptAccess, UserPreferences


def preferences_for_user(*, user: User) -> UserPreferences:
    """The user's defaults; unsaved model defaults when they never changed them."""
    return UserPreferences.objects.filter(user=user).first() or UserPreferences(user=user)


def system_prompt_last_read(*, user: User) -> TranscriptAccess | None:
    """The last time staff read the user's default system prompt, shown on their settings."""
    return (
        TranscriptAccess.objects.filter(owner=user, kind=TranscriptAccess.Kind.SYSTEM_PROMPT)
        .order_by("-accessed_at")
        .first()
    )
