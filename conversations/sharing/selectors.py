"""Reads for share links and the snapshots they publish."""

import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import User
from django.db.models import Q, QuerySet
from django.utils import timezone

from conversations.attachments import selectors as attachment_selectors
from conversations.chat.selectors import thread_path
from conversations.models import Conversation, Message, ShareLink
from conversations.ownership import owned_row_get

# token_urlsafe(32) is 43 characters; anything much longer is not one of ours.
SHARE_TOKEN_MAX_CHARS = 128


@dataclass(frozen=True, slots=True)
class ShareSnapshot:
    title: str
    system_prompt: str
    messages: list[dict[str, Any]] = field(default_factory=list)


def share_token_digest(*, token: str) -> str:
    """What a share token is looked up by: an equality match on a digest the visitor cannot
    steer, so timing reveals nothing about how close a guess came."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def share_snapshot_build(
    *,
    conversation: Conversation,
    include_system_prompt: bool,
    include_thinking: bool,
    include_attachments: bool = False,
) -> ShareSnapshot:
    """Exactly what a link publishes: the finished messages of the branch on screen, without
    ids, usage, error details or (unless asked) the system prompt, thinking text and
    attachments."""
    messages = []
    thread = thread_path(conversation=conversation)
    attachments = (
        attachment_selectors.attachments_by_message(message_ids=[m.id for m in thread])
        if include_attachments
        else {}
    )
    for message in thread:
        if message.status == Message.Status.STREAMING:
            continue
        messages.append(
            {
                "role": message.role,
                "content": message.content,
                # Assistant replies carry the HTML sanitised when they finished; user text is
                # escaped by the template like on the chat page.
                "content_html": message.content_html if message.role == "assistant" else "",
                "reasoning": message.reasoning if include_thinking else "",
                "status": message.status,
                "model": message.model,
                "refusal": message.refusal,
                # Citations come from the model's side; on a public page only web links pass.
                "citations": [
                    {"url": str(c["url"]), "title": str(c.get("title", ""))}
                    for c in message.citations
                    if isinstance(c, dict)
                    and str(c.get("url", "")).lower().startswith(("https://", "http://"))
                ],
                "finish_reason": message.finish_reason,
                "attachments": [
                    attachment_selectors.attachment_summary(attachment=attachment)
                    for attachment in attachments.get(message.id, [])
                ],
            }
        )
    return ShareSnapshot(
        title=conversation.title,
        system_prompt=conversation.system_prompt if include_system_prompt else "",
        messages=messages,
    )


def share_link_live_for_conversation(*, conversation: Conversation) -> ShareLink | None:
    """The conversation's current link: the newest one not revoked and not expired."""
    return (
        ShareLink.objects.filter(share_link_live_q(), conversation=conversation)
        .order_by("-created_at")
        .first()
    )


def share_link_get_for_user(*, link_id: uuid.UUID | str, user: User) -> ShareLink | None:
    links = ShareLink.objects.select_related("conversation")
    return owned_row_get(links, row_id=link_id, user=user, owner="conversation__owner")


def share_link_list_for_user(*, user: User) -> QuerySet[ShareLink]:
    return (
        ShareLink.objects.filter(conversation__owner=user)
        .select_related("conversation")
        .order_by("-created_at")
    )


def share_link_get_live_by_token(*, token: str) -> ShareLink | None:
    """The link behind a public token, or None for unknown, revoked and expired alike."""
    if not token or len(token) > SHARE_TOKEN_MAX_CHARS:
        return None
    link = (
        ShareLink.objects.filter(token_digest=share_token_digest(token=token))
        .select_related("conversation")
        .first()
    )
    if link is None or link.status != "active":
        return None
    return link


def share_link_live_q(*, prefix: str = "") -> Q:
    """Live links: not revoked and not expired (prefix reaches them through a relation)."""
    return Q(**{f"{prefix}revoked_at__isnull": True}) & (
        Q(**{f"{prefix}expires_at__isnull": True})
        | Q(**{f"{prefix}expires_at__gt": timezone.now()})
    )
