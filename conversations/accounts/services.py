"""Writes for a user's own settings."""

from django.contrib.auth.base_user import AbstractBaseUser

from conversations.models import UserPreferences


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
