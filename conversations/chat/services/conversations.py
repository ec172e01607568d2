"""Conversations as a whole: creating, titling, renaming, pinning, archiving, deleting."""

import uuid
from datetime import datetime

from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from conversations.attachments import services as attachment_services
from conversations.catalogue import selectors as catalogue
from conversations.models import (
    Conversation,
    UserPreferences,
)

TITLE_FROM_MESSAGE_CHARS = 60


def conversation_create(*, owner: User) -> Conversation:
    """A new conversation starts from the owner's default model, system prompt and parameters."""
    model = catalogue.model_for_new_conversation(
        user=owner, catalogue=catalogue.catalogue_current()
    )
    preferences = UserPreferences.objects.filter(user=owner).first()
    if preferences is None:
        return Conversation.objects.create(
            owner=owner, model=model, max_tokens=django_settings.CHAT_DEFAULT_MAX_TOKENS
        )
    return Conversation.objects.create(
        owner=owner, **{**preferences.settings_values(), "model": model}
    )


def title_from_message(content: str) -> str:
    first_line = " ".join(content.split())
    if len(first_line) <= TITLE_FROM_MESSAGE_CHARS:
        return first_line or "New chat"
    return first_line[: TITLE_FROM_MESSAGE_CHARS - 1].rstrip() + "…"


def conversation_delete(*, conversation_id: uuid.UUID | str, owner: User) -> None:
    """Delete the conversation with its messages, share links and review (cascade); the staff
    access log keeps its entries. Raises Conversation.DoesNotExist for anyone but the owner.

    A reply still streaming is stopped by the caller; its last checkpoint and final save then
    simply find no row."""
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(id=conversation_id, owner=owner)
        attachment_ids = attachment_services.attachment_ids_of_conversation(
            conversation_id=conversation.id
        )
        # The active leaf points into the messages being deleted; clear it first so the
        # deletion order can never trip over the self-reference.
        conversation.active_leaf = None
        conversation.save(update_fields=["active_leaf"])
        conversation.delete()
        # Files no other message (another conversation's copy, a branch) still refers to.
        attachment_services.attachments_release(attachment_ids=attachment_ids)


def conversation_rename(*, conversation_id: uuid.UUID, owner: User, title: str) -> Conversation:
    conversation = Conversation.objects.get(id=conversation_id, owner=owner)
    conversation.title = title
    conversation.save(update_fields=["title", "updated_at"])
    return conversation


def title_is_provisional(*, title: str, first_message: str) -> bool:
    """True while the title is still the one taken from the first message."""
    return title == title_from_message(first_message)


def conversation_title_generated_set(
    *, conversation_id: uuid.UUID, title: str, first_message: str
) -> bool:
    """Replace the provisional title with the model's, unless the user renamed it meanwhile."""
    provisional = title_from_message(first_message)
    return bool(
        Conversation.objects.filter(id=conversation_id, title=provisional).update(
            title=title[: Conversation._meta.get_field("title").max_length]
        )
    )


def conversation_pin_set(
    *, conversation_id: uuid.UUID | str, owner: User, on: bool
) -> Conversation:
    """Pin (to the top of the sidebar) or unpin. An archived conversation is unarchived by
    pinning it: pinned means wanted at hand. Raises Conversation.DoesNotExist for anyone but
    the owner."""
    return _conversation_stamps_set(
        conversation_id=conversation_id, owner=owner, pinned=on, archived=False if on else None
    )


def conversation_archive_set(
    *, conversation_id: uuid.UUID | str, owner: User, on: bool
) -> Conversation:
    """Archive (out of the sidebar and search, kept whole) or unarchive. Archiving unpins.
    Raises Conversation.DoesNotExist for anyone but the owner."""
    return _conversation_stamps_set(
        conversation_id=conversation_id, owner=owner, archived=on, pinned=False if on else None
    )


def _conversation_stamps_set(
    *,
    conversation_id: uuid.UUID | str,
    owner: User,
    pinned: bool | None = None,
    archived: bool | None = None,
) -> Conversation:
    """Set (True), clear (False) or leave (None) the pinned and archived stamps, under the row's
    lock; a stamp already set keeps its time."""
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(id=conversation_id, owner=owner)
        conversation.pinned_at = _stamp(conversation.pinned_at, on=pinned)
        conversation.archived_at = _stamp(conversation.archived_at, on=archived)
        Conversation.objects.filter(pk=conversation.pk).update(
            pinned_at=conversation.pinned_at, archived_at=conversation.archived_at
        )
    return conversation


def _stamp(current: datetime | None, *, on: bool | None) -> datetime | None:
    if on is None:
        return current
    return (current or timezone.now()) if on else None
