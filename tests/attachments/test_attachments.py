"""Attachments: validation from the bytes, storage by content hash, serving with checks."""

import io
import zipfile
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from PIL import Image

from conversations.attachments import selectors, services
from conversations.attachments.models import Attachment, MessageAttachment
from conversations.attachments.validation import AttachmentRefused, filename_clean
from conversations.chat import services as chat_services
from conversations.models import Conversation, TranscriptAccess
from conversations.sharing import services as sharing_services
from conversations.sharing.services import ShareOptions
from tests.support import attachment_files as files
from tests.support.factories import MODEL, turn_settings, turn_with_attachments
from tests.support.storage import StorageFailed

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media(settings: Any, tmp_path: Any) -> Any:
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": tmp_path / "media", "base_url": None},
        },
    }
    return tmp_path / "media"


def stored_files(media: Any) -> list[str]:
    return sorted(str(p.relative_to(media)) for p in media.rglob("*") if p.is_file())


def upload(client: Client, data: bytes, name: str) -> Any:
    return client.post(reverse("attachment_upload"), {"file": _named(data, name)})


def _named(data: bytes, name: str) -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data, content_type="image/png")


def send_with(conversation: Any, text: str, attachments: list[Attachment]) -> Any:
    return turn_with_attachments(conversation, text, attachments)


# --- Validation and storage --------------------------------------------------------------


def test_image_is_reencoded_without_metadata_and_downscaled(user: Any, media: Any) -> None:
    original = files.jpeg_with_exif(width=3000, height=1500)
    attachment = services.attachment_upload(owner=user, data=original, filename="holiday.jpg")

    stored = selectors.attachment_read(attachment=attachment)
    assert b"GPS-SECRET-PLACE" not in stored
    image = Image.open(io.BytesIO(stored))
    assert image.format == "JPEG"
    assert image.size == (1568, 784) == (attachment.width, attachment.height)
    assert not image.getexif()
    assert attachment.media_type == "image/jpeg"
    # Named by the hash of the stored bytes, under the owner: never the user's name.
    assert attachment.storage_name == f"attachments/{user.pk}/{attachment.sha256}.jpg"
    assert "holiday" not in "".join(stored_files(media))
    thumb = Image.open(io.BytesIO(selectors.storage().open(attachment.thumbnail_name).read()))
    assert max(thumb.size) <= 320


def test_downscale_edge_is_a_setting(user: Any, settings: Any) -> None:
    settings.CHAT_ATTACHMENT_IMAGE_MAX_EDGE = 100
    attachment = services.attachment_upload(owner=user, data=files.png(400, 200), filename="a.png")
    assert (attachment.width, attachment.height) == (100, 50)


def test_png_polyglot_tail_is_dropped(user: Any) -> None:
    tail = b"<html><script>alert(document.cookie)</script></html>PK\x03\x04"
    attachment = services.attachment_upload(owner=user, data=files.png() + tail, filename="cat.png")
    stored = selectors.attachment_read(attachment=attachment)
    assert b"<script>" not in stored and b"PK\x03\x04" not in stored
    assert Image.open(io.BytesIO(stored)).size == (64, 48)


def test_animated_gif_keeps_its_first_frame(user: Any) -> None:
    attachment = services.attachment_upload(owner=user, data=files.animated_gif(), filename="a.gif")
    image = Image.open(io.BytesIO(selectors.attachment_read(attachment=attachment)))
    assert attachment.media_type == "image/png" and image.format == "PNG"
    assert getattr(image, "n_frames", 1) == 1
    assert image.convert("RGB").getpixel((0, 0)) == (0, 0, 0)


def test_multipage_pdf_is_stored_as_is_with_its_page_count(user: Any) -> None:
    document = files.pdf(pages=3)
    attachment = services.attachment_upload(owner=user, data=document, filename="report.pdf")
    assert attachment.kind == "pdf" and attachment.page_count == 3
    assert selectors.attachment_read(attachment=attachment) == document


def test_text_file_becomes_text(user: Any) -> None:
    attachment = services.attachment_upload(
        owner=user, data="print('héllo')\n".encode(), filename="script.py"
    )
    assert (attachment.kind, attachment.media_type) == ("text", "text/plain")


def test_same_bytes_are_stored_once_per_owner(user: Any, make_user: Any, media: Any) -> None:
    first = services.attachment_upload(owner=user, data=files.png(), filename="one.png")
    second = services.attachment_upload(owner=user, data=files.png(), filename="two.png")
    other = services.attachment_upload(owner=make_user("bob"), data=files.png(), filename="x.png")
    assert first.id != second.id and first.storage_name == second.storage_name
    assert other.storage_name != first.storage_name
    # Two owners, one image and one thumbnail each.
    assert len(stored_files(media)) == 4
    assert selectors.attachment_bytes_for_user(user=user) == first.size


@pytest.mark.parametrize(
    ("data", "name", "message"),
    [
        (files.pdf(password="secret"), "locked.pdf", "encrypted or password-protected"),
        (files.pdf(pages=101), "long.pdf", "has 101 pages; PDFs may have at most 100"),
        (b"<html><body>hi</body></html>", "photo.png", "named like an image"),
        (files.png_bomb(), "bomb.png", "images may be at most 8000 pixels"),
        (b"", "empty.txt", "is empty (0 bytes)"),
        (b"\x00\x01\x02\xff\xfe", "blob.bin", "not a supported file"),
        (b"%PDF-1.7\nnot really", "broken.pdf", "could not be read as a PDF"),
        (files.png()[:40], "truncated.png", "could not be read as an image"),
    ],
    ids=[
        "encrypted-pdf",
        "too-many-pages",
        "html-named-png",
        "bomb",
        "empty",
        "binary",
        "broken-pdf",
        "truncated-png",
    ],
)
def test_bad_files_are_refused_and_leave_nothing(
    owner_client: Client, media: Any, data: bytes, name: str, message: str
) -> None:
    response = upload(owner_client, data, name)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert not Attachment.objects.exists()
    assert stored_files(media) == []


def test_file_over_the_size_limit_is_refused(owner_client: Client, settings: Any) -> None:
    settings.CHAT_ATTACHMENT_MAX_TEXT_BYTES = 10
    response = upload(owner_client, b"x" * 11, "notes.txt")
    assert response.status_code == 400
    assert "text files may be at most 10 bytes" in response.json()["error"]


def test_filename_with_path_and_control_characters(
    owner_client: Client, user: Any, media: Any
) -> None:
    response = upload(owner_client, b"hello", "../../etc/passwd.txt")
    assert response.status_code == 201, response.content
    attachment = Attachment.objects.get()
    assert attachment.filename == "passwd.txt"
    assert stored_files(media) == [f"attachments/{user.pk}/{attachment.sha256}.txt"]

    hostile = services.attachment_upload(
        owner=user, data=b"world", filename="..\\../\x1b[31mpass\x00wd\u202e\r\n.txt"
    )
    assert hostile.filename == "[31mpasswd.txt"
    assert hostile.storage_name == f"attachments/{user.pk}/{hostile.sha256}.txt"
    assert filename_clean("..\\..\\boot.ini") == "boot.ini"
    assert filename_clean("../") == "file"
    assert filename_clean("..") == "file"


def test_over_quota_upload_is_refused(owner_client: Client, settings: Any, media: Any) -> None:
    first = files.png(64, 48, (1, 2, 3))
    assert upload(owner_client, first, "a.png").status_code == 201
    settings.CHAT_ATTACHMENT_QUOTA_BYTES = Attachment.objects.get().size + 10
    # The same bytes again cost nothing: they are stored once.
    assert upload(owner_client, first, "again.png").status_code == 201
    response = upload(owner_client, files.png(64, 48, (9, 9, 9)), "b.png")
    assert response.status_code == 400
    assert "does not fit in your storage" in response.json()["error"]
    assert Attachment.objects.count() == 2
    assert len(stored_files(media)) == 2  # the first image and its thumbnail


def test_upload_needs_sign_in_and_csrf(user: Any) -> None:
    assert upload(Client(), files.png(), "a.png").status_code == 302
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert upload(client, files.png(), "a.png").status_code == 403
    assert not Attachment.objects.exists()


def test_upload_answers_with_the_cleaned_name(owner_client: Client) -> None:
    response = upload(owner_client, files.png(), "<b>cat\x07.png")
    body = response.json()
    assert response.status_code == 201
    assert (body["kind"], body["filename"]) == ("image", "<b>cat.png")
    assert body["id"] == str(Attachment.objects.get().id)


# --- Serving ----------------------------------------------------------------------------


def test_owner_gets_images_inline_and_documents_as_downloads(
    owner_client: Client, user: Any
) -> None:
    image = services.attachment_upload(owner=user, data=files.png(), filename="cat.png")
    document = services.attachment_upload(owner=user, data=files.pdf(), filename="r.pdf")
    text = services.attachment_upload(owner=user, data=b"<script>x</script>", filename="p.html")

    response = owner_client.get(reverse("attachment_file", args=[image.id]))
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["Content-Disposition"].startswith("inline;")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert b"".join(response.streaming_content) == selectors.attachment_read(attachment=image)

    for attachment in (document, text):
        response = owner_client.get(reverse("attachment_file", args=[attachment.id]))
        assert response["Content-Disposition"].startswith("attachment;")
        assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Type"] == "text/plain; charset=utf-8"

    thumb = owner_client.get(reverse("attachment_thumbnail", args=[image.id]))
    assert thumb.status_code == 200 and thumb["Content-Type"] == "image/webp"


def test_another_users_attachment_is_404(make_user: Any) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    attachment = services.attachment_upload(owner=alice, data=files.png(), filename="a.png")
    client = Client()
    client.force_login(bob)
    assert client.get(reverse("attachment_file", args=[attachment.id])).status_code == 404
    assert client.get(reverse("attachment_thumbnail", args=[attachment.id])).status_code == 404


def test_another_users_attachment_id_cannot_be_sent(make_user: Any) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    theirs = services.attachment_upload(owner=alice, data=files.png(), filename="a.png")
    conversation = chat_services.conversation_create(owner=bob)
    with pytest.raises(AttachmentRefused, match="not one of your uploads"):
        send_with(conversation, "look", [theirs])


def test_an_attachment_is_sent_once(user: Any) -> None:
    attachment = services.attachment_upload(owner=user, data=files.png(), filename="a.png")
    conversation = chat_services.conversation_create(owner=user)
    started = send_with(conversation, "look", [attachment])
    chat_services.reply_finish(
        message_id=started.reply.id,
        outcome=chat_services.ReplyOutcome(status="complete", content="A cat."),
    )
    with pytest.raises(AttachmentRefused, match="already sent"):
        send_with(conversation, "again", [attachment])


def _shared(user: Any, include_attachments: bool) -> tuple[Attachment, str, Any]:
    attachment = services.attachment_upload(owner=user, data=files.png(), filename="cat.png")
    conversation = chat_services.conversation_create(owner=user)
    started = send_with(conversation, "look", [attachment])
    chat_services.reply_finish(
        message_id=started.reply.id,
        outcome=chat_services.ReplyOutcome(status="complete", content="A cat."),
    )
    link, token = sharing_services.share_link_create(
        conversation_id=conversation.id,
        user=user,
        options=ShareOptions(include_attachments=include_attachments),
    )
    return attachment, token, link


def test_shared_attachment_only_when_included_and_until_revoked(user: Any) -> None:
    attachment, token, link = _shared(user, include_attachments=True)
    url = reverse("shared_attachment_file", args=[token, attachment.id])
    anonymous = Client()
    response = anonymous.get(url)
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    page = anonymous.get(reverse("shared_conversation", args=[token])).content.decode()
    assert reverse("shared_attachment_thumbnail", args=[token, attachment.id]) in page

    sharing_services.share_link_revoke(link_id=link.id, user=user)
    assert anonymous.get(url).status_code == 404

    other, token2, _ = _shared(user, include_attachments=False)
    assert (
        anonymous.get(reverse("shared_attachment_file", args=[token2, other.id])).status_code == 404
    )
    page = anonymous.get(reverse("shared_conversation", args=[token2])).content.decode()
    assert "shared_attachment" not in page and str(other.id) not in page


def test_share_token_does_not_open_other_attachments(user: Any) -> None:
    _, token, _ = _shared(user, include_attachments=True)
    unpublished = services.attachment_upload(owner=user, data=files.pdf(), filename="x.pdf")
    url = reverse("shared_attachment_file", args=[token, unpublished.id])
    assert Client().get(url).status_code == 404


def _continue(viewer: Any, token: str) -> Any:
    client = Client()
    client.force_login(viewer)
    return client, client.post(reverse("shared_continue", args=[token]))


def test_continue_copies_the_published_files_as_the_viewers_own(
    user: Any, make_user: Any, media: Any, django_capture_on_commit_callbacks: Any
) -> None:
    original, token, link = _shared(user, include_attachments=True)
    bob = make_user("bob")

    client, response = _continue(bob, token)

    assert response.status_code == 302
    copy_conversation = Conversation.objects.get(owner=bob)
    first = copy_conversation.messages.get(role="user")
    [copy] = [link.attachment for link in MessageAttachment.objects.filter(message=first)]
    assert first.attachment_count == 1
    assert copy.owner == bob and copy.id != original.id
    assert copy.storage_name.startswith(f"attachments/{bob.pk}/")
    assert selectors.attachment_read(attachment=copy) == selectors.attachment_read(
        attachment=original
    )
    # The copier opens their copy, never the owner's row.
    assert client.get(reverse("attachment_file", args=[copy.id])).status_code == 200
    assert client.get(reverse("attachment_thumbnail", args=[copy.id])).status_code == 200
    assert client.get(reverse("attachment_file", args=[original.id])).status_code == 404
    assert selectors.attachment_bytes_for_user(user=bob) == copy.size

    # The owner deleting theirs leaves the copy whole.
    with django_capture_on_commit_callbacks(execute=True):
        chat_services.conversation_delete(conversation_id=link.conversation_id, owner=user)
    assert not Attachment.objects.filter(id=original.id).exists()
    assert client.get(reverse("attachment_file", args=[copy.id])).status_code == 200


def test_continue_copies_no_files_unless_the_link_published_them(user: Any, make_user: Any) -> None:
    _, token, _ = _shared(user, include_attachments=False)
    bob = make_user("bob")

    _, response = _continue(bob, token)

    assert response.status_code == 302
    first = Conversation.objects.get(owner=bob).messages.get(role="user")
    assert first.attachment_count == 0
    assert not Attachment.objects.filter(owner=bob).exists()


def test_continue_takes_only_the_link_owners_files(user: Any, make_user: Any) -> None:
    _, token, link = _shared(user, include_attachments=True)
    carol = make_user("carol")
    theirs = services.attachment_upload(owner=carol, data=files.pdf(), filename="carol.pdf")
    # A snapshot naming someone else's file (it cannot be made so, but the ids are data).
    link.messages[0]["attachments"].append({"id": str(theirs.id)})
    link.save(update_fields=["messages"])
    bob = make_user("bob")

    _continue(bob, token)

    copies = Attachment.objects.filter(owner=bob)
    assert [a.filename for a in copies] == ["cat.png"]


def test_continue_over_the_viewers_quota_is_refused_and_leaves_nothing(
    user: Any, make_user: Any, media: Any, settings: Any
) -> None:
    _, token, _ = _shared(user, include_attachments=True)
    bob = make_user("bob")
    settings.CHAT_ATTACHMENT_QUOTA_BYTES = 10
    before = stored_files(media)

    _, response = _continue(bob, token)

    assert response.status_code == 409
    assert "do not fit in your storage" in response.content.decode()
    assert not Conversation.objects.filter(owner=bob).exists()
    assert not Attachment.objects.filter(owner=bob).exists()
    assert stored_files(media) == before


def _shared_pdfs(user: Any, *, per_message: tuple[int, ...]) -> Any:
    """A link publishing PDFs (no thumbnails: one stored file each), `per_message[i]` of them
    on the i-th user message; every PDF has its own bytes."""
    conversation = chat_services.conversation_create(owner=user)
    pages = 1
    for count in per_message:
        uploads = []
        for _ in range(count):
            uploads.append(
                services.attachment_upload(
                    owner=user, data=files.pdf(pages=pages), filename=f"p{pages}.pdf"
                )
            )
            pages += 1
        started = send_with(conversation, "read", uploads)
        chat_services.reply_finish(
            message_id=started.reply.id,
            outcome=chat_services.ReplyOutcome(status="complete", content="Read."),
        )
    link, _ = sharing_services.share_link_create(
        conversation_id=conversation.id,
        user=user,
        options=ShareOptions(include_attachments=True),
    )
    return link


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("per_message", [(2,), (1, 1)], ids=["one-message", "two-messages"])
def test_continue_whose_storage_fails_on_the_second_file_leaves_no_files_and_no_rows(
    user: Any, make_user: Any, media: Any, settings: Any, per_message: tuple[int, ...]
) -> None:
    link = _shared_pdfs(user, per_message=per_message)
    bob = make_user("bob")
    before = stored_files(media)
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "tests.support.storage.FailingStorage",
            "OPTIONS": {"location": media, "base_url": None, "fail_on": 2},
        },
    }

    with pytest.raises(StorageFailed):
        sharing_services.conversation_create_from_share(link=link, owner=bob)

    assert stored_files(media) == before
    assert not Attachment.objects.filter(owner=bob).exists()
    assert not Conversation.objects.filter(owner=bob).exists()


def test_staff_needs_a_reason_and_each_file_access_is_logged(user: Any, make_user: Any) -> None:
    attachment = services.attachment_upload(owner=user, data=files.pdf(), filename="r.pdf")
    conversation = chat_services.conversation_create(owner=user)
    send_with(conversation, "read this", [attachment])
    staff = make_user("staff", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_conversation"))
    client = Client()
    client.force_login(staff)
    url = reverse("staff_attachment_file", args=[conversation.id, attachment.id])

    assert client.get(url).status_code == 403
    assert client.get(url + "?access=999").status_code == 403
    assert not TranscriptAccess.objects.filter(kind="view_attachment").exists()

    transcript = reverse("admin:conversations_conversation_transcript", args=[conversation.id])
    response = client.post(transcript, {"reason": "Abuse report #12"})
    access = TranscriptAccess.objects.get(kind="view")
    page = client.get(f"{transcript}?access={access.pk}").content.decode()
    assert f"{url}?access={access.pk}" in page

    response = client.get(f"{url}?access={access.pk}")
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment;")
    logged = TranscriptAccess.objects.get(kind="view_attachment")
    assert logged.staff == staff and "Abuse report #12" in logged.reason
    assert "r.pdf" in logged.reason

    # The owner's own URL does not open it for staff.
    assert client.get(reverse("attachment_file", args=[attachment.id])).status_code == 404


# --- Lifecycle --------------------------------------------------------------------------


def test_deleting_a_conversation_removes_its_files(
    user: Any, media: Any, django_capture_on_commit_callbacks: Any
) -> None:
    kept = services.attachment_upload(owner=user, data=files.pdf(pages=2), filename="keep.pdf")
    gone = services.attachment_upload(owner=user, data=files.png(), filename="gone.png")
    first = chat_services.conversation_create(owner=user)
    second = chat_services.conversation_create(owner=user)
    send_with(first, "one", [gone])
    send_with(second, "two", [kept])
    assert len(stored_files(media)) == 3

    with django_capture_on_commit_callbacks(execute=True):
        chat_services.conversation_delete(conversation_id=first.id, owner=user)

    assert list(Attachment.objects.values_list("filename", flat=True)) == ["keep.pdf"]
    assert stored_files(media) == [kept.storage_name]


def test_sweep_removes_unsent_uploads_and_files_without_rows(
    user: Any, media: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    import datetime

    from django.utils import timezone

    fresh = services.attachment_upload(owner=user, data=files.png(), filename="a.png")
    stale = services.attachment_upload(owner=user, data=files.pdf(), filename="b.pdf")
    Attachment.objects.filter(id=stale.id).update(
        created_at=timezone.now()
        - datetime.timedelta(hours=settings.CHAT_ATTACHMENT_UNSENT_TTL_HOURS + 1)
    )
    stray = media / "attachments" / "999" / ("0" * 64 + ".png")
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"left behind by a deleted user")

    later = timezone.now() + datetime.timedelta(hours=1)
    with django_capture_on_commit_callbacks(execute=True):
        result = services.attachments_sweep(now=later)

    assert result.rows == 1
    assert list(Attachment.objects.all()) == [fresh]
    assert sorted(stored_files(media)) == sorted([fresh.storage_name, fresh.thumbnail_name])


def test_editing_keeps_or_removes_attachments(user: Any) -> None:
    image = services.attachment_upload(owner=user, data=files.png(), filename="a.png")
    document = services.attachment_upload(owner=user, data=files.pdf(), filename="b.pdf")
    conversation = chat_services.conversation_create(owner=user)
    started = send_with(conversation, "look", [image, document])
    chat_services.reply_finish(
        message_id=started.reply.id,
        outcome=chat_services.ReplyOutcome(status="complete", content="ok"),
    )
    edited, _ = chat_services.turn_edit(
        conversation_id=conversation.id,
        owner=user,
        message_id=started.user_message.id,
        content="look again",
        settings=turn_settings(),
        model=MODEL,
        keep_attachments=[document.id],
    )
    assert [link.attachment for link in MessageAttachment.objects.filter(message=edited)] == [
        document
    ]
    # The branch shares the row: nothing was copied.
    assert Attachment.objects.count() == 2


def test_storage_per_user_for_staff(user: Any, make_user: Any) -> None:
    services.attachment_upload(owner=user, data=files.pdf(pages=5), filename="a.pdf")
    services.attachment_upload(owner=user, data=files.pdf(pages=5), filename="copy.pdf")
    services.attachment_upload(owner=make_user("bob"), data=b"hi", filename="b.txt")
    rows = selectors.attachment_bytes_by_user()
    assert [(r["username"], r["files"]) for r in rows] == [("alice", 1), ("bob", 1)]
    assert selectors.attachment_bytes_total() == rows[0]["bytes"] + 2


def test_export_json_lists_attachments_and_zip_carries_them(
    owner_client: Client, user: Any
) -> None:
    attachment = services.attachment_upload(owner=user, data=files.pdf(), filename="r.pdf")
    conversation = chat_services.conversation_create(owner=user)
    send_with(conversation, "read", [attachment])
    data = owner_client.get(reverse("conversation_export_json", args=[conversation.id])).json()
    user_message = next(m for m in data["messages"] if m["role"] == "user")
    [listed] = user_message["attachments"]
    assert listed["id"] == str(attachment.id)
    assert (listed["filename"], listed["kind"], listed["page_count"]) == ("r.pdf", "pdf", 3)
    assert (listed["size"], listed["sha256"]) == (attachment.size, attachment.sha256)
    assert "storage_name" not in listed
    markdown = owner_client.get(reverse("conversation_export_markdown", args=[conversation.id]))
    assert "_Attached: `r.pdf`_" in markdown.content.decode()
    response = owner_client.get(reverse("conversation_export_zip", args=[conversation.id]))
    assert response.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert archive.read(f"attachments/{attachment.id}/r.pdf") == files.pdf()
    assert "conversation.json" in archive.namelist()


def test_staff_usage_page_shows_stored_bytes_per_user(user: Any, make_user: Any) -> None:
    services.attachment_upload(owner=user, data=files.pdf(pages=5), filename="a.pdf")
    staff = make_user("staff", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_conversation"))
    client = Client()
    client.force_login(staff)
    page = client.get(reverse("admin:conversations_conversation_usage")).content.decode()
    size = selectors.attachment_bytes_for_user(user=user)
    assert "Attachment storage" in page
    assert f"<td>alice</td><td>1</td><td>{size} bytes</td>" in page
    # Sizes only: no file names.
    assert "a.pdf" not in page


def test_share_preview_shows_attachments_only_when_ticked(owner_client: Client, user: Any) -> None:
    attachment = services.attachment_upload(owner=user, data=files.pdf(), filename="plan.pdf")
    conversation = chat_services.conversation_create(owner=user)
    started = send_with(conversation, "read", [attachment])
    chat_services.reply_finish(
        message_id=started.reply.id,
        outcome=chat_services.ReplyOutcome(status="complete", content="Read."),
    )
    url = reverse("share_preview", args=[conversation.id])
    dialog = owner_client.get(
        reverse("share_dialog", args=[conversation.id]), headers={"HX-Request": "true"}
    ).content.decode()
    assert 'name="include_attachments"' in dialog
    assert 'id="id_include_attachments" checked' not in dialog
    assert "plan.pdf" not in owner_client.get(url).content.decode()
    assert "plan.pdf" in owner_client.get(url, {"include_attachments": "on"}).content.decode()


def test_deleting_a_user_leaves_files_only_until_the_sweep(
    make_user: Any, media: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from django.core.management import call_command

    bob = make_user("bob")
    services.attachment_upload(owner=bob, data=files.png(), filename="a.png")
    services.attachment_upload(owner=bob, data=files.pdf(), filename="b.pdf")
    bob.delete()
    assert not Attachment.objects.exists()
    assert len(stored_files(media)) == 3

    out = io.StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        # The files were written just now: the sweep leaves fresh files alone for a while
        # (an upload may be between writing its file and saving its row), so age them.
        import os
        import time

        for path in media.rglob("*"):
            if path.is_file():
                os.utime(path, (time.time() - 3600, time.time() - 3600))
        call_command("attachments_sweep", stdout=out)
    assert stored_files(media) == []
    assert "3 files" in out.getvalue()
