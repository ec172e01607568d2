"""Writes: store an upload, attach uploads to a message, and remove files nothing refers to."""

from __future__ import annotations

import datetime
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
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
from conversations.attachments.validation import AttachmentRefused, ValidatedFile, file_validate
from conversations.gateway.profiles import ModelProfile

logger = logging.getLogger(__name__)

__all__ = ["AttachmentRefused", "attachment_upload", "message_attachments_attach"]

# base64 makes every file a third larger on the wire.
BASE64_GROWTH = 4 / 3
# The reply's note that older images were left out of its request (shown on the reply).
IMAGES_LEFT_OUT = "images_left_out"


def _size_text(size: float) -> str:
    if size < 1024:
        return f"{size:.0f} bytes"
    return f"{size / (1024 * 1024):.1f} MB" if size >= 1024 * 1024 else f"{size / 1024:.0f} KB"


def _storage_names(*, owner_id: Any, sha256: str, extension: str) -> tuple[str, str]:
    base = f"{selectors.STORAGE_PREFIX}/{owner_id}/{sha256}"
    return f"{base}.{extension}", f"{base}.thumb.webp"


# What a row says about its file, the same whether the file was checked just now (an upload)
# or is another row's (a copy); where it is stored and who holds it are each row's own.
_FILE_FACTS = ("kind", "media_type", "filename", "width", "height", "page_count")


def _file_facts(source: ValidatedFile | Attachment) -> dict[str, Any]:
    return {name: getattr(source, name) for name in _FILE_FACTS}


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
                **_file_facts(validated),
                sha256=sha256,
                size=len(validated.data),
                storage_name=name,
                thumbnail_name=thumb_name if validated.thumbnail is not None else "",
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
) -> list[Attachment]:
    """Attach the owner's unsent uploads to their new message, after checking the limits of a
    message and that the model reads these kinds of file (the whole request is checked by
    `thread_attachments_check`). Raises AttachmentRefused; call it inside the transaction that
    saves the message, so a refusal saves nothing."""
    if not attachment_ids:
        return []
    ids = [str(i) for i in attachment_ids]
    with transaction.atomic():
        # Locked, so the same upload cannot go out with two messages at once.
        found = {
            str(a.id): a
            for a in Attachment.objects.select_for_update().filter(
                id__in=ids, owner=owner, sent_at__isnull=True
            )
        }
        if any(i not in found for i in ids):
            raise AttachmentRefused(
                "An attachment is not one of your uploads, or was already sent. Remove it and "
                "attach the file again."
            )
        attachments = [found[i] for i in ids]
        _model_can_read(profile=profile, attachments=attachments)
        size = sum(a.size for a in attachments)
        if size > settings.CHAT_ATTACHMENT_MAX_BYTES_PER_MESSAGE:
            raise AttachmentRefused(
                f"These attachments come to {_size_text(size)}; a message may carry at most "
                f"{_size_text(settings.CHAT_ATTACHMENT_MAX_BYTES_PER_MESSAGE)}."
            )
        MessageAttachment.objects.bulk_create(
            MessageAttachment(message=message, attachment=attachment, position=position)
            for position, attachment in enumerate(attachments)
        )
        Attachment.objects.filter(id__in=[a.id for a in attachments]).update(sent_at=timezone.now())
        type(message).objects.filter(id=message.id).update(attachment_count=len(attachments))
        message.attachment_count = len(attachments)
    return attachments


def _sent_size(attachments: Sequence[Attachment]) -> float:
    """Bytes as the request carries them: files in base64, text files as text."""
    binary = sum(a.size for a in attachments if a.kind != Attachment.Kind.TEXT)
    return binary * BASE64_GROWTH + sum(
        a.size for a in attachments if a.kind == Attachment.Kind.TEXT
    )


def _images_too_old(
    *, thread: Sequence[Any], by_message: dict[uuid.UUID, list[Attachment]]
) -> set[uuid.UUID]:
    """Images more than CHAT_ATTACHMENT_IMAGE_MAX_AGE_TURNS user turns back (the last user
    message is age 0): the request leaves them out."""
    max_age = settings.CHAT_ATTACHMENT_IMAGE_MAX_AGE_TURNS
    if not max_age:
        return set()
    user_turns = [m for m in thread if m.role == "user"]
    old_turns = user_turns[: max(0, len(user_turns) - max_age)]
    return {a.id for m in old_turns for a in by_message.get(m.id, []) if a.is_image}


def thread_attachments_check(*, thread: Sequence[Any], profile: ModelProfile, reply: Any) -> None:
    """Before any reply is asked for (send, edit, regenerate, continue, retry): the files the
    request carries again (every attachment on `thread`, the messages it is built from, less
    images too many turns back) must be kinds the model reads and within the per-request
    limits, so the user reads why in words instead of getting the gateway's 400. Notes on the
    reply how many images are left out. Raises AttachmentRefused."""
    by_message = selectors.attachments_by_message(
        message_ids=[m.id for m in thread if m.attachment_count]
    )
    left_out = _images_too_old(thread=thread, by_message=by_message)
    sent = [a for m in thread for a in by_message.get(m.id, []) if a.id not in left_out]
    try:
        _model_can_read(profile=profile, attachments=sent)
    except AttachmentRefused as exc:
        raise AttachmentRefused(f"This conversation already holds files. {exc}") from exc
    if len(sent) > settings.CHAT_ATTACHMENT_MAX_PER_REQUEST:
        raise AttachmentRefused(
            f"This conversation would send {len(sent)} attachments with this reply; a request "
            f"may carry at most {settings.CHAT_ATTACHMENT_MAX_PER_REQUEST}. Start a new "
            "conversation."
        )
    sent_size = _sent_size(sent)
    if sent_size > settings.CHAT_ATTACHMENT_MAX_BYTES_PER_REQUEST:
        raise AttachmentRefused(
            f"The conversation's attachments come to {_size_text(sent_size)} as sent, more "
            f"than the {_size_text(settings.CHAT_ATTACHMENT_MAX_BYTES_PER_REQUEST)} a request "
            "may carry. Start a new conversation or attach less."
        )
    params = {k: v for k, v in reply.request_params.items() if k != IMAGES_LEFT_OUT}
    if left_out:
        params[IMAGES_LEFT_OUT] = len(left_out)
    if params != reply.request_params:
        reply.request_params = params
        reply.save(update_fields=["request_params"])


@dataclass(slots=True)
class WrittenFiles:
    """Names of the stored files a copy wrote, to delete again should its rows not commit."""

    names: list[str] = field(default_factory=list)


@contextmanager
def written_files_undone_on_error() -> Iterator[WrittenFiles]:
    """Wrap the transaction that copies files (outside it): storage is not transactional,
    so when the block raises (its rows rolled back), the files it wrote are deleted at once
    rather than left to the orphan sweep. Names that existed before are never recorded. An
    enclosing transaction rolled back after this block succeeds has no hook to delete them:
    those are the sweep's (the service calling this is the outermost one)."""
    written = WrittenFiles()
    try:
        yield written
    except BaseException:
        _written_delete(names=written.names)
        raise


def _written_delete(*, names: Iterable[str]) -> None:
    store = selectors.storage()
    for name in names:
        try:
            store.delete(name)
        except Exception:
            # The original failure matters more; the sweep removes what is left.
            logger.warning("Could not delete %s after a failed copy", name, exc_info=True)


def shared_attachments_copy(
    *,
    message: Any,
    owner: User,
    source_owner_id: Any,
    attachment_ids: Sequence[str],
    written: WrittenFiles,
) -> list[Attachment]:
    """Continue a shared conversation: the files its snapshot published for this message become
    the copier's own (new rows, the bytes stored again under the copier), so they reach the
    owner's files only as part of this copy, and the copier's quota counts them. Only files
    of the link's owner are taken, whatever ids the snapshot holds; ones deleted since are
    left out. Raises AttachmentRefused when they do not fit in the copier's storage.

    Run inside `written_files_undone_on_error()`, which deletes the files written here when the
    transaction does not commit (a later file or message of the same copy failing)."""
    ids = []
    for value in attachment_ids[: settings.CHAT_ATTACHMENT_MAX_PER_MESSAGE]:
        try:
            ids.append(uuid.UUID(str(value)))
        except ValueError:
            continue
    found = {a.id: a for a in Attachment.objects.filter(id__in=ids, owner_id=source_owner_id)}
    sources = [found[i] for i in ids if i in found]
    if not sources:
        return []
    if owner.pk == source_owner_id:
        # The owner continuing their own link: the rows are theirs already.
        copies = sources
    else:
        copies = _attachments_copy_for(owner=owner, sources=sources, written=written)
    MessageAttachment.objects.bulk_create(
        MessageAttachment(message=message, attachment=copy, position=position)
        for position, copy in enumerate(copies)
    )
    type(message).objects.filter(id=message.id).update(attachment_count=len(copies))
    message.attachment_count = len(copies)
    return copies


def _attachments_copy_for(
    *, owner: User, sources: Sequence[Attachment], written: WrittenFiles
) -> list[Attachment]:
    store = selectors.storage()
    with transaction.atomic():
        # One writer at a time per owner, as for uploads, so the quota holds.
        get_user_model().objects.filter(pk=owner.pk).update(last_login=F("last_login"))
        used = selectors.attachment_bytes_for_user(user=owner)
        held = set(Attachment.objects.filter(owner=owner).values_list("storage_name", flat=True))
        copies = []
        now = timezone.now()
        for source in sources:
            extension = source.storage_name.rsplit(".", 1)[-1]
            name, thumb_name = _storage_names(
                owner_id=owner.pk, sha256=source.sha256, extension=extension
            )
            if name not in held:
                quota = settings.CHAT_ATTACHMENT_QUOTA_BYTES
                if quota and used + source.size > quota:
                    raise AttachmentRefused(
                        f"The files of this conversation do not fit in your storage: you use "
                        f"{_size_text(used)} of {_size_text(quota)}. Delete conversations "
                        "with attachments you no longer need, then continue again."
                    )
                used += source.size
                held.add(name)
            for source_name, target_name in (
                (source.storage_name, name),
                (source.thumbnail_name, thumb_name),
            ):
                if source_name and not store.exists(target_name):
                    with store.open(source_name, "rb") as handle:
                        saved = store.save(target_name, ContentFile(handle.read()))
                    written.names.append(saved)
            copies.append(
                Attachment.objects.create(
                    owner=owner,
                    **_file_facts(source),
                    sha256=source.sha256,
                    size=source.size,
                    storage_name=name,
                    thumbnail_name=thumb_name if source.thumbnail_name else "",
                    sent_at=now,
                )
            )
        return copies


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
    uploads to the new message, then check the whole request (earlier turns' files are sent
    again). `profile` is the model the reply goes to; `earlier_path` reads the messages the
    request carries before the new one (only when needed)."""
    max_age = settings.CHAT_ATTACHMENT_IMAGE_MAX_AGE_TURNS
    if not attachment_ids and not max_age and profile.vision and profile.pdf:
        # Nothing to attach, nothing to leave out, nothing the model could not read, and the
        # earlier files passed the request limits before: a text-only turn costs no query.
        return []
    attached = message_attachments_attach(
        message=user_message, owner=owner, attachment_ids=attachment_ids, profile=profile
    )
    thread_attachments_check(thread=[*earlier_path(), user_message], profile=profile, reply=reply)
    return attached


def attachment_ids_of_conversation(*, conversation_id: Any) -> list[uuid.UUID]:
    return list(
        MessageAttachment.objects.filter(message__conversation_id=conversation_id)
        .values_list("attachment_id", flat=True)
        .distinct()
    )
