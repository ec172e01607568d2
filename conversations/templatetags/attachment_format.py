from typing import Any

from django import template
from django.conf import settings

from conversations.attachments import selectors

register = template.Library()


@register.filter
def file_size(size: int | None) -> str:
    """1.2 MB, 34 KB, 512 bytes."""
    if size is None:
        return ""
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.1f} MB"
    if size >= 1024:
        return f"{size / 1024:.0f} KB"
    return f"{size} bytes"


@register.inclusion_tag("attachments/_composer.html", takes_context=True)
def attachment_composer(context: template.Context) -> dict[str, Any]:
    """The composer's Attach control with the limits it enforces and the user's storage."""
    request = context["request"]
    used = selectors.attachment_bytes_for_user(user=request.user)
    quota = settings.CHAT_ATTACHMENT_QUOTA_BYTES
    return {
        "max_files": settings.CHAT_ATTACHMENT_MAX_PER_MESSAGE,
        "max_file_bytes": settings.CHAT_ATTACHMENT_MAX_FILE_BYTES,
        "max_text_bytes": settings.CHAT_ATTACHMENT_MAX_TEXT_BYTES,
        "max_pages": settings.CHAT_ATTACHMENT_PDF_MAX_PAGES,
        "used": used,
        "quota": quota,
        "placeholder_id": "00000000-0000-0000-0000-000000000000",
    }


@register.inclusion_tag("attachments/_message_attachments.html")
def staff_attachments(message: Any, access: Any) -> dict[str, Any]:
    """A message's files in the admin transcript: their URLs carry the access entry, so each
    file opened is checked against the reason given and logged again."""
    attachments = selectors.attachments_by_message(message_ids=[message.id]).get(message.id, [])
    return {
        "attachments": attachments,
        "staff_access": str(access.pk),
        "staff_conversation_id": message.conversation_id,
    }


@register.inclusion_tag("attachments/_storage_usage.html")
def attachment_storage_table() -> dict[str, Any]:
    """Stored attachment bytes per user and in total, for staff (sizes only, no names)."""
    rows = selectors.attachment_bytes_by_user()
    return {"rows": rows, "total": sum(row["bytes"] for row in rows)}
