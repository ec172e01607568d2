"""Reads: attachments of a user, of messages, and their content as the model is sent it."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.storage import storages

from conversations.attachments.models import Attachment, MessageAttachment
from conversations.attachments.validation import Limits
from conversations.gateway.content import ContentPart, DocumentPart, ImagePart, TextPart
from conversations.ownership import owned_row_get

STORAGE_PREFIX = "attachments"


def upload_limits() -> Limits:
    return Limits(
        max_file_bytes=settings.CHAT_ATTACHMENT_MAX_FILE_BYTES,
        max_text_bytes=settings.CHAT_ATTACHMENT_MAX_TEXT_BYTES,
        image_max_edge=settings.CHAT_ATTACHMENT_IMAGE_MAX_EDGE,
        image_max_pixels=settings.CHAT_ATTACHMENT_IMAGE_MAX_PIXELS,
        pdf_max_pages=settings.CHAT_ATTACHMENT_PDF_MAX_PAGES,
    )


def storage() -> Any:
    return storages["default"]


def attachment_get_for_user(*, attachment_id: uuid.UUID | str, user: User) -> Attachment | None:
    return owned_row_get(Attachment.objects.all(), row_id=attachment_id, user=user, owner="owner")


def attachments_for_user(*, attachment_ids: Sequence[uuid.UUID], user: User) -> list[Attachment]:
    """The user's own attachments among these ids (others' and unknown ids left out), at most
    as many as a message may carry."""
    ids = list(attachment_ids)[: settings.CHAT_ATTACHMENT_MAX_PER_MESSAGE]
    if not ids:
        return []
    return list(Attachment.objects.filter(id__in=ids, owner_id=user.pk))


def attachment_bytes_for_user(*, user: User) -> int:
    """What the user's files take in storage: each stored file once, however often uploaded."""
    per_file = dict(Attachment.objects.filter(owner=user).values_list("storage_name", "size"))
    return sum(per_file.values())


def attachment_bytes_by_user() -> list[dict[str, Any]]:
    """Stored bytes per owner, largest first, for staff."""
    per_file: dict[tuple[int, str, str], int] = {}
    for owner_id, username, name, size in Attachment.objects.values_list(
        "owner_id", "owner__username", "storage_name", "size"
    ):
        per_file[(owner_id, username, name)] = size
    totals: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0, 0])
    for (owner_id, username, _), size in per_file.items():
        totals[(owner_id, username)][0] += size
        totals[(owner_id, username)][1] += 1
    return sorted(
        (
            {"username": username, "bytes": total, "files": files}
            for (_, username), (total, files) in totals.items()
        ),
        key=lambda row: (-row["bytes"], row["username"]),
    )


def attachment_bytes_total() -> int:
    return sum(row["bytes"] for row in attachment_bytes_by_user())


def attachments_by_message(
    *, message_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, list[Attachment]]:
    by_message: dict[uuid.UUID, list[Attachment]] = defaultdict(list)
    ids = list(message_ids)
    if not ids:
        return by_message
    links = (
        MessageAttachment.objects.filter(message_id__in=ids)
        .select_related("attachment")
        .order_by("position", "id")
    )
    for link in links:
        by_message[link.message_id].append(link.attachment)
    return by_message


def attachment_in_conversation(*, attachment_id: uuid.UUID | str, conversation_id: Any) -> bool:
    try:
        return MessageAttachment.objects.filter(
            attachment_id=attachment_id, message__conversation_id=conversation_id
        ).exists()
    except (ValueError, TypeError):
        return False


def attachment_read(*, attachment: Attachment) -> bytes:
    with storage().open(attachment.storage_name, "rb") as handle:
        data: bytes = handle.read()
    return data


def manifest_line(*, attachments: Sequence[Attachment]) -> str:
    """One line naming the attached files, so the model (and the offline demo) can refer to
    them by name: the image and document parts themselves carry no names in every dialect."""
    described = []
    for attachment in attachments:
        if attachment.kind == Attachment.Kind.IMAGE:
            described.append(
                f"{attachment.filename} (image, {attachment.width}×{attachment.height} px)"
            )
        elif attachment.kind == Attachment.Kind.PDF:
            pages = attachment.page_count or 0
            described.append(
                f"{attachment.filename} (PDF, {pages} page{'s' if pages != 1 else ''})"
            )
        else:
            described.append(f"{attachment.filename} (text file)")
    return "Attached files: " + "; ".join(described)


def attachment_part(*, attachment: Attachment, data: bytes) -> ContentPart:
    if attachment.kind == Attachment.Kind.IMAGE:
        return ImagePart(media_type=attachment.media_type, data=data)
    if attachment.kind == Attachment.Kind.PDF:
        return DocumentPart(data=data, filename=attachment.filename)
    return TextPart(text=data.decode("utf-8", "replace"), filename=attachment.filename)


@dataclass(frozen=True, slots=True)
class AttachedContext:
    messages: list[dict[str, Any]]
    # Images of older turns left out (CHAT_ATTACHMENT_IMAGE_MAX_AGE_TURNS).
    images_left_out: int


def context_with_attachments(
    *, messages: Sequence[Any], context: list[dict[str, Any]]
) -> AttachedContext:
    """`context` (one {"role", "content"} per message of `messages`) with each user message
    that carries attachments turned into content parts: the files, a line naming them, then
    the text. Images more than CHAT_ATTACHMENT_IMAGE_MAX_AGE_TURNS user turns back are left
    out, each replaced by a line saying so."""
    by_message = attachments_by_message(
        message_ids=[m.id for m in messages if getattr(m, "attachment_count", 0)]
    )
    if not by_message:
        return AttachedContext(messages=context, images_left_out=0)
    max_age = settings.CHAT_ATTACHMENT_IMAGE_MAX_AGE_TURNS
    user_turns_after = 0
    left_out = 0
    result: list[dict[str, Any]] = list(context)
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if message.role != "user":
            continue
        attachments = by_message.get(message.id)
        age = user_turns_after
        user_turns_after += 1
        if not attachments:
            continue
        parts: list[ContentPart] = []
        for attachment in attachments:
            if attachment.is_image and max_age and age >= max_age:
                left_out += 1
                parts.append(
                    TextPart(
                        text=f"[The image {attachment.filename} was attached here; it is left "
                        "out of this request because it is older than the last "
                        f"{max_age} turns.]"
                    )
                )
                continue
            parts.append(
                attachment_part(attachment=attachment, data=attachment_read(attachment=attachment))
            )
        parts.append(TextPart(text=manifest_line(attachments=attachments)))
        # Files sent without words: no empty text part (Anthropic refuses one).
        if context[index]["content"]:
            parts.append(TextPart(text=context[index]["content"]))
        result[index] = {"role": "user", "content": parts}
    return AttachedContext(messages=result, images_left_out=left_out)


def messages_with_attachments(*, messages: Sequence[Any]) -> Sequence[Any]:
    """Give each message its `attachment_list` for rendering: one query, and none at all when
    no message carries a file."""
    by_message = attachments_by_message(
        message_ids=[m.id for m in messages if getattr(m, "attachment_count", 0)]
    )
    for message in messages:
        message.attachment_list = by_message.get(message.id, [])
    return messages


def attachment_summary(*, attachment: Attachment) -> dict[str, Any]:
    """What a share snapshot or an export says about a file (never where it is stored)."""
    return {
        "id": str(attachment.id),
        "filename": attachment.filename,
        "kind": attachment.kind,
        "media_type": attachment.media_type,
        "size": attachment.size,
        "sha256": attachment.sha256,
        "width": attachment.width,
        "height": attachment.height,
        "page_count": attachment.page_count,
    }


def attachments_of_conversation(*, conversation_id: Any) -> list[Attachment]:
    return list(
        Attachment.objects.filter(message_links__message__conversation_id=conversation_id)
        .distinct()
        .order_by("created_at")
    )
