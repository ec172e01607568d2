"""Writes for share links and the copies made from them."""

import datetime
import secrets
import uuid
from dataclasses import dataclass

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from conversations.attachments import services as attachment_services
from conversations.chat.rendering import markdown_to_html
from conversations.models import Conversation, Message, ShareLink
from conversations.sharing.selectors import (
    share_link_live_for_conversation,
    share_snapshot_build,
    share_token_digest,
)

SHARE_EXPIRY_DAYS = (0, 1, 7, 30)


@dataclass(frozen=True, slots=True)
class ShareOptions:
    include_system_prompt: bool = False
    include_thinking: bool = False
    include_attachments: bool = False
    visibility: str = ShareLink.Visibility.ANYONE
    expiry_days: int = 0

    def __post_init__(self) -> None:
        if self.expiry_days not in SHARE_EXPIRY_DAYS:
            raise ValueError(f"expiry_days must be one of {SHARE_EXPIRY_DAYS}")
        if self.visibility not in ShareLink.Visibility.values:
            raise ValueError("unknown visibility")


def _share_apply(*, link: ShareLink, conversation: Conversation, options: ShareOptions) -> None:
    snapshot = share_snapshot_build(
        conversation=conversation,
        include_system_prompt=options.include_system_prompt,
        include_thinking=options.include_thinking,
        include_attachments=options.include_attachments,
    )
    now = timezone.now()
    link.include_system_prompt = options.include_system_prompt
    link.include_thinking = options.include_thinking
    link.include_attachments = options.include_attachments
    link.visibility = options.visibility
    link.expiry_days = options.expiry_days
    link.expires_at = (
        now + datetime.timedelta(days=options.expiry_days) if options.expiry_days else None
    )
    link.title = snapshot.title
    link.system_prompt = snapshot.system_prompt
    link.messages = snapshot.messages
    link.snapshot_at = now


def share_link_create(
    *, conversation_id: uuid.UUID | str, user: User, options: ShareOptions
) -> tuple[ShareLink, str]:
    """Publish the branch on screen. Returns the link and its token; raises
    Conversation.DoesNotExist unless the user owns the conversation."""
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(id=conversation_id, owner=user)
        token = secrets.token_urlsafe(32)
        link = ShareLink(
            conversation=conversation,
            token=token,
            token_digest=share_token_digest(token=token),
        )
        _share_apply(link=link, conversation=conversation, options=options)
        link.save()
    return link, token


def share_link_publish(
    *, conversation_id: uuid.UUID | str, user: User, options: ShareOptions
) -> tuple[ShareLink, bool]:
    """What the dialog's button does: update the conversation's live link, or create one.
    The decision is taken under the conversation's row lock, so two clicks racing each other
    cannot leave two live links. Returns the link and whether it was created."""
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(id=conversation_id, owner=user)
        live = share_link_live_for_conversation(conversation=conversation)
        if live is not None:
            return share_link_update(link_id=live.id, user=user, options=options), False
        link, _ = share_link_create(conversation_id=conversation.id, user=user, options=options)
    return link, True


def share_link_update(*, link_id: uuid.UUID | str, user: User, options: ShareOptions) -> ShareLink:
    """Refresh the snapshot and options under the same URL. Only a live link can be updated:
    a revoked one stays dead. Raises ShareLink.DoesNotExist for anyone but the owner."""
    with transaction.atomic():
        link = (
            ShareLink.objects.select_for_update()
            .select_related("conversation")
            .get(id=link_id, conversation__owner=user, revoked_at__isnull=True)
        )
        _share_apply(link=link, conversation=link.conversation, options=options)
        link.save()
    return link


def share_link_revoke(*, link_id: uuid.UUID | str, user: User) -> ShareLink:
    """The link answers 404 from now on. Raises ShareLink.DoesNotExist for anyone but the
    owner; revoking twice keeps the first time."""
    link = ShareLink.objects.get(id=link_id, conversation__owner=user)
    ShareLink.objects.filter(id=link.id, revoked_at__isnull=True).update(
        revoked_at=timezone.now(), updated_at=timezone.now()
    )
    link.refresh_from_db()
    return link


def share_link_record_view(*, link: ShareLink) -> None:
    # F() so concurrent visitors never lose a count to a read-modify-write race.
    ShareLink.objects.filter(id=link.id).update(view_count=F("view_count") + 1)


COPY_SUFFIX = " (copy)"


def copy_title(*, title: str) -> str:
    """A copy says it is one ("Rust lifetimes (copy)"), within the title's length."""
    room = (Conversation._meta.get_field("title").max_length or 200) - len(COPY_SUFFIX)
    base = title if len(title) <= room else title[: room - 1].rstrip() + "…"
    return base + COPY_SUFFIX


def conversation_create_from_share(*, link: ShareLink, owner: User) -> Conversation:
    """Continue this conversation: a new conversation of the viewer's own, holding a copy of
    the published messages (never anything the snapshot left out), with the published files
    as the viewer's own copies. Raises AttachmentRefused when those do not fit in the viewer's
    storage (nothing is then created, and no file it wrote is left)."""
    with attachment_services.written_files_undone_on_error() as written, transaction.atomic():
        conversation = Conversation.objects.create(
            owner=owner,
            title=copy_title(title=link.title),
            system_prompt=link.system_prompt,
        )
        parent: Message | None = None
        for item in link.messages:
            role = item.get("role")
            if role not in Message.Role.values:
                continue
            status = item.get("status", Message.Status.COMPLETE)
            if status not in Message.Status.values or status == Message.Status.STREAMING:
                status = Message.Status.COMPLETE
            content = str(item.get("content", ""))
            parent = Message.objects.create(
                conversation=conversation,
                parent=parent,
                role=role,
                content=content,
                # Re-rendered rather than copied: the new conversation's HTML owes nothing to
                # what was stored in a JSON column.
                content_html=markdown_to_html(content) if role == Message.Role.ASSISTANT else "",
                reasoning=str(item.get("reasoning", "")),
                status=status,
                finish_reason=str(item.get("finish_reason", ""))[:32],
                refusal=str(item.get("refusal", "")),
                citations=item.get("citations", []),
                model=str(item.get("model", ""))[:100],
            )
            published = item.get("attachments") if link.include_attachments else None
            if role == Message.Role.USER and isinstance(published, list):
                attachment_services.shared_attachments_copy(
                    message=parent,
                    owner=owner,
                    source_owner_id=link.conversation.owner_id,
                    attachment_ids=[
                        str(a.get("id")) for a in published if isinstance(a, dict) and a.get("id")
                    ],
                    written=written,
                )
        conversation.active_leaf = parent
        conversation.save()
    return conversation
