"""Splitting the sidebar's list (pinned first, as the selector orders it) into its sections."""

from collections.abc import Iterable

from django import template

from conversations.models import Conversation

register = template.Library()


@register.filter
def pinned_only(conversations: Iterable[Conversation]) -> list[Conversation]:
    return [c for c in conversations if c.pinned_at is not None]


@register.filter
def unpinned(conversations: Iterable[Conversation]) -> list[Conversation]:
    return [c for c in conversations if c.pinned_at is None]
