"""Upload and download of attachments: never a public media URL.

Every file is served by a view that checks who asks: the owner, a visitor of a live share link
that includes attachments, or a staff member who opened the transcript with a reason (each such
access is written to the access log). Each serves the file itself or, where the URLconf passes
`thumbnail`, its thumbnail: who may see one may see the other.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from urllib.parse import quote

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.views.decorators.http import require_GET, require_POST

from conversations.attachments import selectors, services
from conversations.attachments.models import Attachment
from conversations.chat import selectors as chat_selectors
from conversations.chat.exports import export_filename
from conversations.http import AuthenticatedHttpRequest, found_or_404, owned_conversation_or_404
from conversations.models import Conversation, ShareLink, TranscriptAccess
from conversations.review import selectors as review_selectors
from conversations.review import services as review_services
from conversations.sharing import selectors as sharing_selectors

# Room for the multipart envelope around the file.
MULTIPART_OVERHEAD = 64 * 1024


def _refused(text: str, status: int = 400) -> JsonResponse:
    return JsonResponse({"error": text}, status=status)


@require_POST
@login_required
def attachment_upload(request: AuthenticatedHttpRequest) -> HttpResponse:
    """One file per request (the page uploads each with its own progress bar); answers JSON:
    the attachment (the page builds its chip as text), or {"error": "..."} with a sentence
    for the user."""
    limit = settings.CHAT_ATTACHMENT_MAX_FILE_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit + MULTIPART_OVERHEAD:
        # Refused before the body is read: a huge upload costs the server nothing.
        return _refused(
            f"That file is larger than the limit of {limit // (1024 * 1024)} MB per file.", 413
        )
    upload = request.FILES.get("file")
    if upload is None:
        return _refused("No file was received. Choose a file and try again.")
    if upload.size is not None and upload.size > limit:
        return _refused(
            f"That file is larger than the limit of {limit // (1024 * 1024)} MB per file.", 413
        )
    data = upload.read(limit + 1)
    try:
        attachment = services.attachment_upload(
            owner=request.user, data=data, filename=upload.name or ""
        )
    except services.AttachmentRefused as exc:
        return _refused(str(exc))
    return JsonResponse(
        {
            "id": str(attachment.id),
            "filename": attachment.filename,
            "kind": attachment.kind,
            "size": attachment.size,
        },
        status=201,
    )


def _file_response(
    attachment: Attachment, *, thumbnail: bool = False, public: bool = False
) -> FileResponse:
    store = selectors.storage()
    if thumbnail:
        if not attachment.thumbnail_name:
            raise Http404("No thumbnail.")
        response = FileResponse(
            store.open(attachment.thumbnail_name, "rb"), content_type="image/webp"
        )
        disposition = "inline"
    else:
        # Only images are shown in the page; PDFs and text are always downloaded, so the
        # browser never renders them under this site's origin.
        inline = attachment.is_image
        content_type = attachment.media_type
        if attachment.kind == Attachment.Kind.TEXT:
            content_type = "text/plain; charset=utf-8"
        response = FileResponse(
            store.open(attachment.storage_name, "rb"), content_type=content_type
        )
        disposition = "inline" if inline else "attachment"
    ascii_name = attachment.filename.encode("ascii", "replace").decode().replace('"', "'")
    response["Content-Disposition"] = (
        f"{disposition}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(attachment.filename)}"
    )
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "no-store" if public else "private, max-age=3600"
    if public:
        response["Referrer-Policy"] = "no-referrer"
        response["X-Robots-Tag"] = "noindex, nofollow"
    return response


@require_GET
@login_required
def attachment_file(
    request: AuthenticatedHttpRequest, attachment_id: str, thumbnail: bool = False
) -> HttpResponseBase:
    attachment = found_or_404(
        selectors.attachment_get_for_user(attachment_id=attachment_id, user=request.user),
        what="attachment",
    )
    return _file_response(attachment, thumbnail=thumbnail)


def _shared_attachment(request: HttpRequest, token: str, attachment_id: str) -> Attachment:
    """The attachment if a live link that includes attachments published it; 404 otherwise,
    the same for unknown, revoked and expired links."""
    link = sharing_selectors.share_link_get_live_by_token(token=token)
    if link is None or not link.include_attachments:
        raise Http404
    if link.visibility == ShareLink.Visibility.SIGNED_IN and not request.user.is_authenticated:
        raise Http404
    published = {
        str(item.get("id"))
        for message in link.messages
        if isinstance(message, dict)
        for item in message.get("attachments", [])
        if isinstance(item, dict)
    }
    if str(attachment_id) not in published:
        raise Http404
    attachment = Attachment.objects.filter(
        id=attachment_id, owner_id=link.conversation.owner_id
    ).first()
    if attachment is None:
        raise Http404
    return attachment


@require_GET
def shared_attachment_file(
    request: HttpRequest, token: str, attachment_id: str, thumbnail: bool = False
) -> HttpResponseBase:
    attachment = _shared_attachment(request, token, attachment_id)
    return _file_response(attachment, thumbnail=thumbnail, public=True)


@require_GET
@login_required
def staff_attachment_file(
    request: AuthenticatedHttpRequest,
    conversation_id: str,
    attachment_id: str,
    thumbnail: bool = False,
) -> HttpResponseBase:
    """A file of a conversation for staff who opened its transcript with a reason: the same
    reason is logged again for this file, then the file is served."""
    user = request.user
    if not (
        user.is_authenticated
        and user.is_active
        and user.is_staff
        and user.has_perm("conversations.view_conversation")
    ):
        raise PermissionDenied
    conversation = Conversation.objects.filter(id=conversation_id).first()
    if conversation is None or not selectors.attachment_in_conversation(
        attachment_id=attachment_id, conversation_id=conversation.id
    ):
        raise Http404
    access = review_selectors.transcript_access_recent_for_staff(
        conversation=conversation, staff=user, access_id=request.GET.get("access")
    )
    if access is None:
        # Files are content: reaching them takes the same reason as the transcript.
        raise PermissionDenied("Open the transcript (and give a reason) first.")
    attachment = Attachment.objects.get(id=attachment_id)
    what = "thumbnail" if thumbnail else "file"
    review_services.transcript_access_record(
        conversation=conversation,
        staff=user,
        reason=f"{access.reason} [{what}: {attachment.filename}]",
        kind=TranscriptAccess.Kind.VIEW_ATTACHMENT,
    )
    return _file_response(attachment, thumbnail=thumbnail)


@require_GET
@login_required
def conversation_export_zip(
    request: AuthenticatedHttpRequest, conversation_id: str
) -> HttpResponseBase:
    """The JSON export plus every attached file, as one ZIP archive."""
    conversation = owned_conversation_or_404(request, conversation_id)
    data = chat_selectors.conversation_export_data(conversation=conversation)
    # Spooled: small archives stay in memory, large ones go to a temporary file.
    # FileResponse closes it once sent, so no `with` here.
    archive_file = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)  # noqa: SIM115
    with zipfile.ZipFile(archive_file, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("conversation.json", json.dumps(data, ensure_ascii=False, indent=2))
        written: set[str] = set()
        for attachment in selectors.attachments_of_conversation(conversation_id=conversation.id):
            # The id keeps names unique; the display name was cleaned of any path at upload.
            path = f"attachments/{attachment.id}/{attachment.filename}"
            if path in written:
                continue
            written.add(path)
            archive.writestr(path, selectors.attachment_read(attachment=attachment))
    archive_file.seek(0)
    filename = export_filename(conversation=conversation, extension="zip")
    return FileResponse(
        archive_file, as_attachment=True, filename=filename, content_type="application/zip"
    )
