"""Files a user attached to their messages.

The bytes live in `STORAGES["default"]` under a name made of the owner and the content's
SHA-256, so the same file uploaded twice by one owner is stored once; each upload still gets its
own row (its own display name), and a message lists its attachments through `MessageAttachment`
so that a branch (an edit, a regenerate) can share them without copying anything.
"""

import uuid

from django.conf import settings
from django.db import models


class Attachment(models.Model):
    class Kind(models.TextChoices):
        IMAGE = "image", "Image"
        PDF = "pdf", "PDF"
        TEXT = "text", "Text file"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="attachments"
    )
    kind = models.CharField(max_length=8, choices=Kind)
    # Decided from the bytes, never from the name or the browser's claim.
    media_type = models.CharField(max_length=64)
    # For display and downloads only: the name on disk is the content hash.
    filename = models.CharField(max_length=200)
    sha256 = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField()
    storage_name = models.CharField(max_length=255)
    thumbnail_name = models.CharField(max_length=255, blank=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    page_count = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Set when a message first carried it: an upload never sent is swept after a while, one
    # that was sent is removed as soon as no message refers to it any more.
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["owner", "sha256"])]

    def __str__(self) -> str:
        return self.filename

    @property
    def is_image(self) -> bool:
        return self.kind == self.Kind.IMAGE


class MessageAttachment(models.Model):
    message = models.ForeignKey(
        "conversations.Message", on_delete=models.CASCADE, related_name="attachment_links"
    )
    attachment = models.ForeignKey(
        Attachment, on_delete=models.CASCADE, related_name="message_links"
    )
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(
                fields=["message", "attachment"], name="message_attachment_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.attachment_id} on {self.message_id}"
