"""Writes: store an upload, attach uploads to a message, and remove files nothing refers to."""

from __future__ import annotations

import datetime
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from conversations.attachments import selectors
from conversations.attachments.models import Attachment, MessageAttachment
from conversations.attachments.validation import AttachmentRefused, file_validate
from conversations.gateway.profiles import ModelProfile

logger = logging.getLogger(__name__)

__all__ = ["AttachmentRefused", "attachment_upload", "message_attachments_attach"]

# base64 makes every file a third larger on the wire.
BASE64_GROWTH = 4 / 3


def _size_text(size: float) -> str:
    return f"{size / (1024 * 1024):.1f} MB" if size >= 1024 * 1024 else f"{size / 1024:.0f} KB"


def _storage_names(*, owner_id: Any, sha256: str, extension: str) -> tuple[str, str]:
    base = f"{selectors.STORAGE_PREFIX}/{owner_id}/{sha256}"
    return f"{base}.{extension}", f"{base}.thumb.webp"


def attachment_upload(*, owner: User, data: bytes, filename: str) -> Attachment:
    """Validate and store one upload for `owner`; raises AttachmentRefused with the reason.

    Everything is decided before anything is written; a file already stored for this owner
    (same bytes after re-encoding) is not written again. Should the row fail to save, files
    written for it are removed, so nothing is left half-saved.
    """
    validated = file_validate(data=data, filename=filename, limits=selectors.upload_limits())
    sha256 = validated.sha256
    name, thumb_name = _storage_names(
        owner_id=owner.pk, sha256=sha256, extension=validated.extension
    )
    store = selectors.storage()
    written: list[str] = []
    try:
        with transaction.atomic():
            # One upload at a time per owner, so two cannot both squeeze under the quota. A
            # write rather than SELECT … FOR UPDATE: SQLite has no row locks, and a transaction
            # that starts by reading cannot later take the write lock if another wrote
            # meanwhile ("database is locked"); starting with a write waits its turn instead.
            get_user_model().objects.filter(pk=owner.pk).update(last_login=F("last_login"))
            already = Attachment.objects.filter(owner=owner, storage_name=name).exists()
            quota = settings.CHAT_ATTACHMENT_QUOTA_BYTES
            used = selectors.attachment_bytes_for_user(user=owner)
            if quota and not already and used + len(validated.data) > quota:
                raise AttachmentRefused(
                    f"“{validated.filename}” does not fit in your storage: you use "
                    f"{_size_text(used)} of {_size_text(quota)}. Delete conversations with "
                    "attachments you no longer need."
                )
            if not store.exists(name):
                store.save(name, ContentFile(validated.data))
                written.append(name)
            if validated.thumbnail is not None and not store.exists(thumb_name):
                store.save(thumb_name, ContentFile(validated.thumbnail))
                written.append(thumb_name)
            return Attachment.objects.create(
                owner=owner,
                kind=validated.kind,
                media_type=validated.media_type,
                filename=validated.filename,
                sha256=sha256,
                size=len(validated.data),
                storage_name=name,
                thumbnail_name=thumb_name if validated.thumbnail is not None else "",
                width=validated.width,
                height=validated.height,
                page_count=validated.page_count,
            )
    except BaseException:
        for written_name in written:
            store.delete(written_name)
        raise


def _model_can_read(*, profile: ModelProfile, attachments: Sequence[Attachment]) -> None:
    name = profile.display_name
    if not profile.vision and any(a.kind == Attachment.Kind.IMAGE for a in attachments):
        raise AttachmentRefused(
            f"{name} cannot read images. Remove the image or choose a model that reads them."
        )
    if not profile.pdf and any(a.kind == Attachment.Kind.PDF for a in attachments):
        raise AttachmentRefused(
            f"{name} cannot read PDFs. Remove the PDF or choose a model that reads them."
        )


def message_attachments_attach(
    *,
    message: Any,
    owner: User,
    attachment_ids: Sequence[uuid.UUID],
    profile: ModelProfile,
    earlier: Iterable[Attachment] = (),
) -> list[Attachment]:
    """Attach the owner's unsent uploads to their new message, after checking the limits of
    a message and of the whole request (`earlier`: attachments of the turns before, which
    are sent again) and that the model reads these kinds of file. Raises AttachmentRefused;
    call it inside the transaction that saves the message, so a refusal saves nothing."""
    if not attachment_ids:
        return []
    with transaction.atomic():
        return _attach(
            message=message,
            owner=owner,
            attachment_ids=[str(i) for i in attachment_ids],
            profile=profile,
            earlier=list(earlier),
        )


def _attach(
    *,
    message: Any,
    owner: User,
    attachment_ids: Sequence[str],
    profile: ModelProfile,
    earlier: list[Attachment],
) -> list[Attachment]:
    # Locked, so the same upload cannot go out with two messages at once.
    found = {
        str(a.id): a
        for a in Attachment.objects.select_for_update().filter(
            id__in=attachment_ids, owner=owner, sent_at__isnull=True
        )
    }
    missing = [i for i in attachment_ids if i not in found]
    if missing:
        raise AttachmentRefused(
            "An attachment is not one of your uploads, or was already sent. Remove it and "
            "attach the file again."
        )
    attachments = [found[i] for i in attachment_ids]
    _model_can_read(profile=profile, attachments=attachments)
    size = sum(a.size for a in attachments)
    if size > settings.CHAT_ATTACHMENT_MAX_BYTES_PER_MESSAGE:
        raise AttachmentRefused(
            f"These attachments come to {_size_text(size)}; a message may carry at most "
            f"{_size_text(settings.CHAT_ATTACHMENT_MAX_BYTES_PER_MESSAGE)}."
        )
    everything = [*earlier, *attachments]
    sent_size = sum(a.size for a in everything if a.kind != Attachment.Kind.TEXT) * BASE64_GROWTH
    sent_size += sum(a.size for a in everything if a.kind == Attachment.Kind.TEXT)
    if len(everything) > settings.CHAT_ATTACHMENT_MAX_PER_REQUEST:
        raise AttachmentRefused(
            f"This conversation would send {len(everything)} attachments with this message; a "
            f"request may carry at most {settings.CHAT_ATTACHMENT_MAX_PER_REQUEST}. Start a new "
            "conversation."
        )
    if sent_size > settings.CHAT_ATTACHMENT_MAX_BYTES_PER_REQUEST:
        raise AttachmentRefused(
            f"With this message the conversation's attachments come to {_size_text(sent_size)} "
            "as sent, more than the "
            f"{_size_text(settings.CHAT_ATTACHMENT_MAX_BYTES_PER_REQUEST)} a request may carry. "
            "Start a new conversation or attach less."
        )
    now = timezone.now()
    MessageAttachment.objects.bulk_create(
        MessageAttachment(message=message, attachment=attachment, position=position)
        for position, attachment in enumerate(attachments)
    )
    Attachment.objects.filter(id__in=[a.id for a in attachments]).update(sent_at=now)
    type(message).objects.filter(id=message.id).update(attachment_count=len(attachments))
    message.attachment_count = len(attachments)
    return attachments


def message_attachments_copy(
    *,
    source_id: Any,
    target: Any,
    keep_ids: Sequence[uuid.UUID] | None = None,
    profile: ModelProfile | None = None,
) -> None:
    """An edited message keeps the original's attachments (all, or those in `keep_ids`): the
    new version refers to the same rows, nothing is copied in storage. Only the source's own
    attachments can be kept, whatever ids are given."""
    links = (
        MessageAttachment.objects.filter(
            message_id=source_id, message__conversation_id=target.conversation_id
        )
        .select_related("attachment")
        .order_by("position")
    )
    if keep_ids is not None:
        links = links.filter(attachment_id__in=list(keep_ids))
    if profile is not None:
        # The edited turn goes to this model, which must read what it keeps.
        _model_can_read(profile=profile, attachments=[link.attachment for link in links])
    created = MessageAttachment.objects.bulk_create(
        MessageAttachment(message=target, attachment_id=link.attachment_id, position=index)
        for index, link in enumerate(links)
    )
    type(target).objects.filter(id=target.id).update(attachment_count=len(created))
    target.attachment_count = len(created)


def _files_delete(*, names: Iterable[str]) -> None:
    """Delete stored files no attachment row names any more (after the rows are gone)."""
    names = {n for n in names if n}
    if not names:
        return
    still_used = _names_in_use(names=names)
    store = selectors.storage()
    for name in names - still_used:
        try:
            store.delete(name)
        except OSError:
            logger.warning("could not delete attachment file %s", name, exc_info=True)


def _names_in_use(*, names: set[str]) -> set[str]:
    used: set[str] = set()
    for storage_name, thumbnail_name in Attachment.objects.filter(
        Q(storage_name__in=names) | Q(thumbnail_name__in=names)
    ).values_list("storage_name", "thumbnail_name"):
        used.add(storage_name)
        used.add(thumbnail_name)
    return used


def attachments_delete(*, attachments: Iterable[Attachment]) -> int:
    """Delete these rows, then their files once the deletion is committed (a rollback must
    not leave rows pointing at deleted files)."""
    attachments = list(attachments)
    if not attachments:
        return 0
    names = {a.storage_name for a in attachments} | {a.thumbnail_name for a in attachments}
    Attachment.objects.filter(id__in=[a.id for a in attachments]).delete()
    transaction.on_commit(lambda: _files_delete(names=names))
    return len(attachments)


def attachments_release(*, attachment_ids: Iterable[uuid.UUID]) -> int:
    """After messages were deleted: remove those of these attachments that had been sent and
    that no message refers to any more."""
    unreferenced = Attachment.objects.filter(
        id__in=list(attachment_ids), sent_at__isnull=False, message_links__isnull=True
    )
    return attachments_delete(attachments=unreferenced)


@dataclass(frozen=True, slots=True)
class SweepResult:
    rows: int
    files: int


def attachments_sweep(*, now: datetime.datetime | None = None) -> SweepResult:
    """Remove orphans: rows sent once but no longer on any message, uploads never sent within
    CHAT_ATTACHMENT_UNSENT_TTL_HOURS, and stored files no row names (their owner was
    deleted, or a process died between writing a file and saving its row)."""
    now = now or timezone.now()
    cutoff = now - datetime.timedelta(hours=settings.CHAT_ATTACHMENT_UNSENT_TTL_HOURS)
    with transaction.atomic():
        orphans = Attachment.objects.filter(
            Q(sent_at__isnull=False, message_links__isnull=True)
            | Q(sent_at__isnull=True, created_at__lt=cutoff)
        ).distinct()
        rows = attachments_delete(attachments=orphans)
    files = 0
    store = selectors.storage()
    try:
        owner_dirs, _ = store.listdir(selectors.STORAGE_PREFIX)
    except (FileNotFoundError, NotADirectoryError):
        owner_dirs = []
    # A file written in the last minutes may belong to an upload whose row is not committed.
    grace = now - datetime.timedelta(minutes=10)
    for owner_dir in owner_dirs:
        folder = f"{selectors.STORAGE_PREFIX}/{owner_dir}"
        _, names = store.listdir(folder)
        paths = {f"{folder}/{name}" for name in names}
        for path in paths - _names_in_use(names=paths):
            try:
                modified = store.get_modified_time(path)
            except (OSError, NotImplementedError):
                modified = None
            if modified is not None and modified > grace:
                continue
            store.delete(path)
            files += 1
    return SweepResult(rows=rows, files=files)


def turn_attachments_apply(
    *,
    user_message: Any,
    reply: Any,
    owner: User,
    attachment_ids: Sequence[uuid.UUID],
    profile: ModelProfile,
    earlier_path: Callable[[], Sequence[Any]],
) -> list[Attachment]:
    """The attachments part of starting a turn, in the transaction that saved it: attach the
    uploads to the new message (checking every limit against the whole request, since the
    earlier turns' files are sent again), and note on the reply how many older images the
    request leaves out (CHAT_ATTACHMENT_IMAGE_MAX_AGE_TURNS). `profile` is the model the reply
    goes to; `earlier_path` reads the messages before the new one (only when needed)."""
    max_age = settings.CHAT_ATTACHMENT_IMAGE_MAX_AGE_TURNS
    reads_everything = profile.vision and profile.pdf
    if not attachment_ids and not max_age and reads_everything:
        # Nothing to attach, nothing to leave out, nothing the model could not read: a
        # text-only turn costs no query here.
        return []
    path = earlier_path()
    by_message = selectors.attachments_by_message(
        message_ids=[m.id for m in path if m.attachment_count]
    )
    earlier = [a for m in path for a in by_message.get(m.id, [])]
    user_turns = [m for m in path if m.role == "user"]
    # The new message is turn age 0, the one before it 1, and so on.
    old_turns = user_turns[: max(0, len(user_turns) + 1 - max_age)] if max_age else []
    left_out_ids = {a.id for m in old_turns for a in by_message.get(m.id, []) if a.is_image}
    if not reads_everything:
        # Earlier turns' files are sent again: a model switched to since must read them too.
        try:
            _model_can_read(
                profile=profile, attachments=[a for a in earlier if a.id not in left_out_ids]
            )
        except AttachmentRefused as exc:
            raise AttachmentRefused(f"This conversation already holds files. {exc}") from exc
    attached = message_attachments_attach(
        message=user_message,
        owner=owner,
        attachment_ids=attachment_ids,
        profile=profile,
        earlier=earlier,
    )
    if left_out_ids:
        reply.request_params = {**reply.request_params, "images_left_out": len(left_out_ids)}
        reply.save(update_fields=["request_params"])
    return attached


def attachment_ids_of_conversation(*, conversation_id: Any) -> list[uuid.UUID]:
    return list(
        MessageAttachment.objects.filter(message__conversation_id=conversation_id)
        .values_list("attachment_id", flat=True)
        .distinct()
    )
