"""Reads for a user's own settings."""

from django.contrib.auth.base_user import AbstractBaseUser

from conversations.models import UserPreferences


def preferences_for_user(*, user: AbstractBaseUser) -> UserPreferences:
    """The user's defaults; unsaved model defaults when they never changed them."""
    return UserPreferences.objects.filter(user=user).first() or UserPreferences(user=user)
