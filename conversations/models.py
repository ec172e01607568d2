import uuid
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import models

from conversations.gateway.profiles import SAMPLING_DEFAULT, STORED_FIELDS, sampling_choices

if TYPE_CHECKING:
    from conversations.chat.selectors import Version


class ReasoningEffort(models.TextChoices):
    OFF = "off", "Off"
    LOW = "low", "Low"
    MEDIUM = "medium", "Medium"
    HIGH = "high", "High"


class TurnSettingsFields(models.Model):
    """The parameters a turn is sent with, as stored by a conversation (for its next turn) and by
    a user's preferences (for new conversations). Limits come from the model's profile, checked
    by `TurnSettings`, never from the columns."""

    # Blank: the user's preference, then the site's CHAT_MODEL.
    model = models.CharField(max_length=100, blank=True)
    system_prompt = models.TextField(blank=True)
    # Claude takes temperature or top_p, never both: a conversation samples with one of them.
    sampling = models.CharField(max_length=16, choices=sampling_choices(), default=SAMPLING_DEFAULT)
    # One column per numeric parameter of `profiles.PARAMETERS`, named as it is; a parameter
    # without a declared default is nullable (blank: the model's own).
    temperature = models.FloatField(default=1.0)
    top_p = models.FloatField(default=1.0)
    reasoning_effort = models.CharField(
        max_length=8, choices=ReasoningEffort, default=ReasoningEffort.OFF
    )
    max_tokens = models.PositiveIntegerField(default=4096)

    class Meta:
        abstract = True

    def settings_values(self) -> dict[str, Any]:
        """The model, system prompt and parameters, by field name (to copy or to show)."""
        return {name: getattr(self, name) for name in ("model", "system_prompt", *STORED_FIELDS)}


class Conversation(TurnSettingsFields):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    title = models.CharField(max_length=200, default="New chat")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    # The settings the next turn is sent with come from TurnSettingsFields; each reply also
    # keeps what was actually sent. Up to four stop sequences, sent upstream as `stop`.
    stop_sequences = models.JSONField(default=list, blank=True)

    # The leaf of the branch on screen; the context sent upstream is the path from the root to it.
    active_leaf = models.ForeignKey(
        "Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Set when the user chose to leave the oldest turns out: upstream sees the path from this
    # message on (the transcript says so there), counted from context_trimmed_at.
    context_from = models.ForeignKey(
        "Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    context_trimmed_at = models.DateTimeField(null=True, blank=True)

    # Set by the owner: pinned conversations head the sidebar (most recently pinned first);
    # archived ones leave the sidebar and search until unarchived. Neither touches updated_at,
    # which is the conversation's last activity.
    pinned_at = models.DateTimeField(null=True, blank=True)
    archived_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-updated_at"]
        indexes = [models.Index(fields=["owner", "-updated_at"])]
        permissions = [
            # Titles are written from the content (often by the model), so they are content:
            # without this, staff lists show a conversation's id instead.
            ("view_conversation_title", "Can see conversation titles in admin lists"),
        ]

    def __str__(self) -> str:
        # Not the title: the admin prints str() in breadcrumbs, history and confirmations.
        return f"Conversation {str(self.id)[:8]}"


class Message(models.Model):
    # Not stored: the thread selectors set these on the messages they hand to the page.
    version: "Version"
    user_feedback: "MessageFeedback | None"

    class Role(models.TextChoices):
        USER = "user", "User"
        ASSISTANT = "assistant", "Assistant"

    class Status(models.TextChoices):
        STREAMING = "streaming", "Streaming"
        COMPLETE = "complete", "Complete"
        STOPPED = "stopped", "Stopped"
        ERROR = "error", "Error"
        INTERRUPTED = "interrupted", "Interrupted"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    # A tree rather than a list, so regenerate and edit can branch without changing the data.
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="children"
    )
    role = models.CharField(max_length=16, choices=Role)
    content = models.TextField(blank=True)
    # Sanitised HTML of the finished content, rendered once so page views never re-render it.
    content_html = models.TextField(blank=True)
    reasoning = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status, default=Status.COMPLETE, db_index=True)
    finish_reason = models.CharField(max_length=32, blank=True)
    error = models.TextField(blank=True)
    refusal = models.TextField(blank=True)
    # url_citation annotations: [{"url": ..., "title": ...}], shown as numbered sources.
    citations = models.JSONField(default=list, blank=True)
    model = models.CharField(max_length=100, blank=True)
    request_params = models.JSONField(default=dict, blank=True)
    # Why the reply comes from another model than the one chosen (a retired model), shown on it.
    model_note = models.CharField(max_length=300, blank=True)
    # The reply before it on its branch came from another model (the transcript says so).
    model_changed = models.BooleanField(default=False)
    # Parameters the user set that the request did not carry, and why, in words shown on it.
    request_notes = models.JSONField(default=list, blank=True)
    # The first data event of a stream the app could not read (bounded, key scrubbed): it is
    # gateway text, so staff read it only in the logged transcript.
    raw_event = models.TextField(blank=True)
    # The request dialect the gateway accepted the reply in (``Dialect.code()``): metadata for
    # staff, empty when no request was accepted.
    dialect = models.CharField(max_length=80, blank=True)
    # How many files the message carries, so rendering a text-only window asks for none.
    attachment_count = models.PositiveSmallIntegerField(default=0)

    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    reasoning_tokens = models.PositiveIntegerField(null=True, blank=True)
    cached_tokens = models.PositiveIntegerField(null=True, blank=True)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    # The token counts are the app's estimate: the stream ended (Stop) before the gateway said.
    usage_estimated = models.BooleanField(default=False)
    # The gateway did not say what the reply cost: cost_usd comes from the profile's prices.
    cost_estimated = models.BooleanField(default=False)
    time_to_first_token_ms = models.PositiveIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    # Which server process generates a streaming reply, and when it last said it was alive:
    # a reply whose process died is marked interrupted by the survivors (see recovery.py).
    worker_id = models.CharField(max_length=128, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["conversation", "created_at"])]

    def __str__(self) -> str:
        # Never the text: the admin prints str() where no reason was given.
        return f"{self.role} message {str(self.id)[:8]}"

    @property
    def is_streaming(self) -> bool:
        return self.status == self.Status.STREAMING


class MessageFeedback(models.Model):
    """The owner's thumbs up or down on one reply, with an optional comment. The comment is
    written by the user, so it is content: staff read it only in the reason-gated transcript."""

    class Rating(models.TextChoices):
        UP = "up", "Good reply"
        DOWN = "down", "Bad reply"

    COMMENT_MAX_CHARS = 1000

    message = models.OneToOneField(
        Message, on_delete=models.CASCADE, primary_key=True, related_name="feedback"
    )
    rating = models.CharField(max_length=8, choices=Rating, db_index=True)
    comment = models.TextField(blank=True, max_length=COMMENT_MAX_CHARS)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "reply feedback"
        verbose_name_plural = "reply feedback"

    def __str__(self) -> str:
        # Never the comment: the admin prints str() where no reason was given.
        return f"feedback on {self.message}"


class ShareLink(models.Model):
    """A published snapshot of one branch of a conversation, reachable at /s/<token>/.

    The token is looked up by its SHA-256 digest (an indexed equality match on a value an
    attacker cannot steer), so response timing says nothing about how close a guess was. The
    token itself is kept too, because the owner must be able to copy the same link again; it
    protects no more than the conversation rows stored beside it.
    """

    class Visibility(models.TextChoices):
        ANYONE = "anyone", "Anyone with the link"
        SIGNED_IN = "signed_in", "Signed-in users only"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Cascade: deleting a conversation kills its links at once.
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="share_links"
    )
    token = models.CharField(max_length=64, editable=False)
    token_digest = models.CharField(max_length=64, unique=True, editable=False)

    include_system_prompt = models.BooleanField(default=False)
    include_thinking = models.BooleanField(default=False)
    include_attachments = models.BooleanField(default=False)
    visibility = models.CharField(max_length=16, choices=Visibility, default=Visibility.ANYONE)
    # The owner's choice (0 = never); expires_at counts it from the last create or update.
    expiry_days = models.PositiveSmallIntegerField(default=0)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    view_count = models.PositiveIntegerField(default=0)

    # The snapshot: what the public page shows, frozen until the owner presses Update link.
    title = models.CharField(max_length=200)
    system_prompt = models.TextField(blank=True)
    messages = models.JSONField(default=list, blank=True)
    snapshot_at = models.DateTimeField()

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["conversation", "revoked_at"])]

    def __str__(self) -> str:
        return f"Share link {str(self.id)[:8]}"

    @property
    def status(self) -> str:
        """active, revoked or expired; the public page answers only for active links."""
        # Imported here so this block stays self-contained at the end of the module.
        from django.utils import timezone

        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= timezone.now():
            return "expired"
        return "active"


class ConversationReview(models.Model):
    """Staff review of one conversation. The note and who reviewed it are shown to the owner."""

    conversation = models.OneToOneField(
        Conversation, on_delete=models.CASCADE, primary_key=True, related_name="review"
    )
    flagged = models.BooleanField(default=False, db_index=True)
    flagged_at = models.DateTimeField(null=True, blank=True)
    flagged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    note = models.TextField(
        "Review note",
        blank=True,
        help_text="Shown to the conversation's owner on their conversation page.",
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"Review of {self.conversation}"


class TranscriptAccess(models.Model):
    """Append-only log: a staff member opened (or exported) a transcript, and why.

    It outlives the conversation and the staff account (SET_NULL plus copies of the ids and
    names), because an audit trail that can be erased by deleting its subject is no trail.
    """

    class Kind(models.TextChoices):
        VIEW = "view", "Viewed transcript"
        EXPORT_JSON = "export_json", "Exported as JSON"
        EXPORT_MARKDOWN = "export_markdown", "Exported as Markdown"
        SEARCH = "search", "Searched content"
        SYSTEM_PROMPT = "system_prompt", "Read default system prompt"
        VIEW_ATTACHMENT = "view_attachment", "Opened an attachment"

    conversation = models.ForeignKey(
        Conversation, null=True, on_delete=models.SET_NULL, related_name="transcript_accesses"
    )
    # Empty for reads that concern no conversation: a search that matched nothing, or a
    # user's default system prompt.
    conversation_uuid = models.UUIDField(null=True, blank=True, db_index=True)
    conversation_title = models.CharField(max_length=200, blank=True)
    # Whose content was read, kept when the account goes.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="content_reads",
    )
    owner_username = models.CharField(max_length=150, blank=True)
    # What a content search looked for, exactly as typed.
    search_terms = models.CharField(max_length=500, blank=True)
    staff = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    staff_username = models.CharField(max_length=150)
    kind = models.CharField(max_length=16, choices=Kind, default=Kind.VIEW)
    reason = models.TextField(blank=True)
    accessed_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-accessed_at"]
        verbose_name = "transcript access"
        verbose_name_plural = "transcript access log"

    def __str__(self) -> str:
        return f"{self.staff_username} → {self.get_kind_display()}"


class UserPreferences(TurnSettingsFields):
    """What a new conversation starts with: the user's default model, system prompt and
    parameters."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_preferences"
    )

    class Meta:
        verbose_name_plural = "user preferences"

    def __str__(self) -> str:
        return f"preferences of {self.user}"


class UserQuota(models.Model):
    """Per-user overrides of the site-wide limits; a blank field means the site default."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_quota"
    )
    messages_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="Blank: the site default. 0: no limit."
    )
    messages_per_day = models.PositiveIntegerField(
        null=True, blank=True, help_text="Blank: the site default. 0: no limit."
    )
    tokens_per_day = models.PositiveIntegerField(
        null=True, blank=True, help_text="Blank: the site default. 0: no limit."
    )
    note = models.CharField(max_length=200, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "user quota"

    def __str__(self) -> str:
        return f"quota of {self.user}"


class LoginThrottle(models.Model):
    """Failed sign-ins per key (username+address, or address), shared by all processes."""

    key = models.CharField(max_length=200, unique=True)
    failures = models.PositiveIntegerField(default=0)
    window_started_at = models.DateTimeField()
    locked_until = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.key


class UsageRecord(models.Model):
    """The usage ledger: one row per reply started, whatever becomes of it.

    Written when the turn starts (reserving its max_tokens against the token quota) and
    settled once when the reply ends. Quotas and the admin's totals read this, not messages,
    so deleting conversations or accounts changes nothing that was used.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        on_delete=models.SET_NULL,
        related_name="usage_records",
    )
    username = models.CharField(max_length=150)
    conversation_uuid = models.UUIDField(null=True, blank=True)
    message_uuid = models.UUIDField(unique=True)
    model = models.CharField(max_length=100, blank=True)
    reserved_tokens = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    # The token counts are the app's estimate (the stream stopped before reporting usage).
    estimated = models.BooleanField(default=False)
    status = models.CharField(max_length=16, blank=True)
    started_at = models.DateTimeField(db_index=True)
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["user", "started_at"])]
        verbose_name = "usage record"
        verbose_name_plural = "usage ledger"

    def __str__(self) -> str:
        return f"usage of {self.username} at {self.started_at:%Y-%m-%d %H:%M}"


# Models: what the gateway says about them, which ones staff offer, how each is spoken to.


class GatewayModel(models.Model):
    """What the gateway's models and deprecations endpoints last said about one model id;
    refreshed in the background, read by the catalogue over the built-in profiles."""

    model_id = models.CharField(max_length=100, unique=True)
    display_name = models.CharField(max_length=100, blank=True)
    # Which built-in kind of profile an unknown id follows (see profiles.PROFILE_KINDS).
    kind = models.CharField(max_length=16, blank=True)
    context_window = models.PositiveIntegerField(null=True, blank=True)
    max_output_tokens = models.PositiveIntegerField(null=True, blank=True)
    input_price_per_mtok = models.DecimalField(
        max_digits=12, decimal_places=6, null=True, blank=True
    )
    output_price_per_mtok = models.DecimalField(
        max_digits=12, decimal_places=6, null=True, blank=True
    )
    status = models.CharField(max_length=32, blank=True)
    deprecated_at = models.DateField(null=True, blank=True)
    shutdown_at = models.DateField(null=True, blank=True)
    replaced_by = models.CharField(max_length=100, blank=True)
    listed = models.BooleanField(default=False, help_text="Present in the last models list.")
    refreshed_at = models.DateTimeField()

    class Meta:
        ordering = ["model_id"]

    def __str__(self) -> str:
        return self.model_id


class ModelOffer(models.Model):
    """A model staff offer in the picker. With no offers at all, every model of the catalogue
    is offered; an offer without groups is for everyone."""

    model_id = models.CharField(max_length=100, unique=True)
    groups = models.ManyToManyField(
        "auth.Group", blank=True, help_text="Blank: offered to every user."
    )

    class Meta:
        ordering = ["model_id"]

    def __str__(self) -> str:
        return self.model_id


class ModelDialect(models.Model):
    """The request dialect that worked for a model at a gateway, shared by every server
    process: two gateways may take the same model id in different shapes."""

    gateway = models.CharField(max_length=200, default="")
    model_id = models.CharField(max_length=100)
    dialect = models.JSONField(default=dict)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["gateway", "model_id"], name="model_dialect_per_gateway"
            )
        ]

    def __str__(self) -> str:
        return self.model_id


# Attachments keep their own module; imported here so Django finds them as this app's models.
from conversations.attachments.models import Attachment, MessageAttachment  # noqa: E402

__all__ = [
    "Attachment",
    "Conversation",
    "ConversationReview",
    "GatewayModel",
    "LoginThrottle",
    "Message",
    "MessageAttachment",
    "ModelDialect",
    "ModelOffer",
    "ReasoningEffort",
    "ShareLink",
    "TranscriptAccess",
    "TurnSettingsFields",
    "UsageRecord",
    "UserPreferences",
    "UserQuota",
]
