"""Admin review of transcripts, with accountability.

Message text is shown in one place only, the transcript view, and opening it is logged with the
staff member, the time and (when CHAT_REVIEW_REASON_REQUIRED) the reason they typed. The list
and change pages show metadata and totals, never content; a message's change page sends the
reader through the same logged gate.
"""

from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html

from conversations.chat import selectors, services
from conversations.chat.exports import json_attachment, markdown_attachment
from conversations.models import (
    Conversation,
    ConversationReview,
    Message,
    ShareLink,
    TranscriptAccess,
    UserPreferences,
)
from conversations.review.charts import tokens_per_day_svg
from conversations.sharing.forms import ExportReasonForm, ReviewForm, TranscriptReasonForm

USAGE_CHART_DAYS = 30


# --- List filters ------------------------------------------------------------------------


class _YesNoFilter(admin.SimpleListFilter):
    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple]:
        return [("yes", "Yes"), ("no", "No")]

    def condition(self) -> Q:
        raise NotImplementedError

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "yes":
            return queryset.filter(self.condition())
        if self.value() == "no":
            return queryset.exclude(self.condition())
        return queryset


class ModelFilter(admin.SimpleListFilter):
    title = "model"
    parameter_name = "model"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple]:
        models = (
            Message.objects.exclude(model="")
            .order_by("model")
            .values_list("model", flat=True)
            .distinct()
        )
        return [(model, model) for model in models]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value():
            return queryset.filter(
                Exists(Message.objects.filter(conversation=OuterRef("pk"), model=self.value()))
            )
        return queryset


class MessageStatusFilter(admin.SimpleListFilter):
    title = "message status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple]:
        return list(Message.Status.choices)

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() in Message.Status.values:
            return queryset.filter(
                Exists(Message.objects.filter(conversation=OuterRef("pk"), status=self.value()))
            )
        return queryset


class HasErrorFilter(_YesNoFilter):
    title = "has error"
    parameter_name = "has_error"

    def condition(self) -> Q:
        return Q(
            Exists(Message.objects.filter(conversation=OuterRef("pk"), status=Message.Status.ERROR))
        )


class SharedFilter(_YesNoFilter):
    title = "shared (live link)"
    parameter_name = "shared"

    def condition(self) -> Q:
        return Q(
            Exists(
                ShareLink.objects.filter(selectors.share_link_live_q(), conversation=OuterRef("pk"))
            )
        )


class FlaggedFilter(_YesNoFilter):
    title = "flagged"
    parameter_name = "flagged"

    def condition(self) -> Q:
        return Q(review__flagged=True)


class ReviewedFilter(_YesNoFilter):
    title = "reviewed"
    parameter_name = "reviewed"

    def condition(self) -> Q:
        return Q(review__reviewed_at__isnull=False)


class EmptyConversationFilter(admin.SimpleListFilter):
    """Blank "New chat" rows (no message) only clutter the list: hidden unless asked for."""

    title = "messages"
    parameter_name = "empty"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("include", "Including empty"), ("only", "Empty only")]

    def choices(self, changelist: Any) -> Any:
        for choice in super().choices(changelist):
            if choice["query_string"] == changelist.get_query_string(remove=[self.parameter_name]):
                choice["display"] = "With messages"
            yield choice

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        has_messages = Exists(Message.objects.filter(conversation=OuterRef("pk")))
        if self.value() == "include":
            return queryset
        if self.value() == "only":
            return queryset.filter(~has_messages)
        return queryset.filter(has_messages)


# --- Conversations -----------------------------------------------------------------------


class ConversationReviewInline(admin.StackedInline):
    """Shown read-only here; the review is written from the transcript page and the actions,
    so every change is stamped with who made it."""

    model = ConversationReview
    fields = ("flagged", "flagged_by", "flagged_at", "note", "reviewed_by", "reviewed_at")
    readonly_fields = fields
    can_delete = False
    extra = 0
    max_num = 1

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    # Fits a 1280 px screen beside the filters: creation date is in the date filter instead.
    list_display = (
        "title",
        "owner",
        "updated_at",
        "messages_column",
        "tokens_column",
        "cost_column",
        "shared_column",
        "flagged_column",
        "reviewed_column",
        "transcript_link",
    )
    list_select_related = ("owner", "review")
    list_filter = (
        EmptyConversationFilter,
        ("owner", admin.RelatedOnlyFieldListFilter),
        ("created_at", admin.DateFieldListFilter),
        ModelFilter,
        MessageStatusFilter,
        HasErrorFilter,
        SharedFilter,
        FlaggedFilter,
        ReviewedFilter,
    )
    search_fields = ("title", "messages__content")
    search_help_text = "Searches conversation titles and the text of every message."
    date_hierarchy = "created_at"
    # No system prompt or message text here: content is read through the logged transcript.
    fields = (
        "title",
        "owner",
        "created_at",
        "updated_at",
        "totals",
        "share_links_summary",
        "transcript_link",
    )
    readonly_fields = fields
    inlines = [ConversationReviewInline]
    actions = ["flag_selected", "unflag_selected", "mark_reviewed", "export_json", "export_md"]
    change_list_template = "admin/conversations/conversation/change_list.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Conversation]:
        return selectors.conversation_with_totals(queryset=super().get_queryset(request))

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Conversations are made by their owners; staff only read and review them.
        return False

    # Columns -------------------------------------------------------------------------------

    @admin.display(description="messages", ordering="message_total")
    def messages_column(self, obj: Conversation) -> int:
        return obj.message_total

    @admin.display(description="tokens", ordering="token_total")
    def tokens_column(self, obj: Conversation) -> str:
        return f"{obj.token_total:,}"

    @admin.display(description="cost (USD)", ordering="cost_total")
    def cost_column(self, obj: Conversation) -> str:
        return f"{obj.cost_total:.4f}" if obj.cost_total is not None else "–"

    @admin.display(description="shared", boolean=True, ordering="has_live_link")
    def shared_column(self, obj: Conversation) -> bool:
        return obj.has_live_link

    @admin.display(description="flagged", boolean=True, ordering="review__flagged")
    def flagged_column(self, obj: Conversation) -> bool:
        review = _review_of(obj)
        return bool(review and review.flagged)

    @admin.display(description="reviewed", ordering="review__reviewed_at")
    def reviewed_column(self, obj: Conversation) -> str:
        review = _review_of(obj)
        if review is None or review.reviewed_at is None:
            return "–"
        return f"{review.reviewed_at:%d %b} by {_username(review.reviewed_by)}"

    @admin.display(description="transcript")
    def transcript_link(self, obj: Conversation) -> str:
        url = reverse("admin:conversations_conversation_transcript", args=[obj.pk])
        return format_html('<a href="{}">Open transcript (logged)</a>', url)

    @admin.display(description="totals")
    def totals(self, obj: Conversation) -> str:
        cost = f"${obj.cost_total:.4f}" if obj.cost_total is not None else "no cost reported"
        return f"{obj.message_total} messages · {obj.token_total:,} tokens · {cost}"

    @admin.display(description="share links")
    def share_links_summary(self, obj: Conversation) -> str:
        links = list(obj.share_links.all())
        live = sum(1 for link in links if link.status == "active")
        return f"{live} live of {len(links)}" if links else "never shared"

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> tuple:
        # Django lists every related object by its str(), which for a message is its text;
        # the confirmation names the conversations and counts the rest instead.
        _, model_count, perms_needed, protected = super().get_deleted_objects(objs, request)
        return [str(obj) for obj in objs], model_count, perms_needed, protected

    # Views ---------------------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path(
                "<path:object_id>/transcript/",
                wrap(self.transcript_view),
                name="conversations_conversation_transcript",
            ),
            path(
                "<path:object_id>/review/",
                wrap(self.review_view),
                name="conversations_conversation_review",
            ),
            path("usage/", wrap(self.usage_view), name="conversations_conversation_usage"),
            *super().get_urls(),
        ]

    def _get_viewable(self, request: HttpRequest, object_id: str) -> Conversation:
        conversation = self.get_object(request, object_id)
        if conversation is None:
            raise Http404("No such conversation.")
        if not self.has_view_permission(request, conversation):
            raise PermissionDenied
        return conversation

    def transcript_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The conversation as its owner saw it. Without a fresh access entry of the viewer's
        own, it first asks why (when required) and records the access."""
        conversation = self._get_viewable(request, object_id)
        url = reverse("admin:conversations_conversation_transcript", args=[conversation.pk])
        access = selectors.transcript_access_recent_for_staff(
            conversation=conversation, staff=request.user, access_id=request.GET.get("access")
        )
        if access is None:
            if settings.CHAT_REVIEW_REASON_REQUIRED:
                form = TranscriptReasonForm(request.POST if request.method == "POST" else None)
                if not form.is_valid():
                    return TemplateResponse(
                        request,
                        "admin/conversations/transcript_reason.html",
                        {
                            **self.admin_site.each_context(request),
                            "opts": self.opts,
                            "conversation": conversation,
                            "form": form,
                            "title": "Why are you opening this transcript?",
                        },
                    )
                reason = form.cleaned_data["reason"]
            else:
                reason = ""
            access = services.transcript_access_record(
                conversation=conversation,
                staff=request.user,
                reason=reason,
                kind=TranscriptAccess.Kind.VIEW,
            )
            # Redirect so a reload neither re-posts nor logs a second entry.
            return HttpResponseRedirect(f"{url}?access={access.pk}")

        review = _review_of(conversation)
        can_review = self.has_change_permission(request, conversation)
        return TemplateResponse(
            request,
            "admin/conversations/transcript.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "conversation": conversation,
                "thread": selectors.thread_path(conversation=conversation),
                "totals": selectors.usage_totals_for_conversation(conversation=conversation),
                "branch_count": conversation.messages.count(),
                "access": access,
                "review": review,
                "can_review": can_review,
                "review_form": ReviewForm(
                    initial={
                        "note": review.note if review else "",
                        "flagged": bool(review and review.flagged),
                    }
                ),
                "title": f"Transcript: {conversation.title}",
            },
        )

    def review_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if request.method != "POST":
            raise Http404
        conversation = self._get_viewable(request, object_id)
        if not self.has_change_permission(request, conversation):
            raise PermissionDenied
        form = ReviewForm(request.POST)
        if form.is_valid():
            services.conversation_review_update(
                conversation=conversation,
                reviewer=request.user,
                note=form.cleaned_data["note"],
                flagged=form.cleaned_data["flagged"],
                mark_reviewed="mark_reviewed" in request.POST,
            )
            self.message_user(request, "Review saved.", messages.SUCCESS)
        else:
            self.message_user(request, "The review was not saved: check the note.", messages.ERROR)
        url = reverse("admin:conversations_conversation_transcript", args=[conversation.pk])
        access = request.POST.get("access", "")
        return redirect(f"{url}?access={access}" if access.isdigit() else url)

    def usage_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        points = selectors.usage_tokens_per_day(days=USAGE_CHART_DAYS)
        return TemplateResponse(
            request,
            "admin/conversations/usage.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": "Usage: tokens and cost",
                "per_user": selectors.usage_totals_by_user(),
                "chart": tokens_per_day_svg(points=points),
                "points": points,
                "days": USAGE_CHART_DAYS,
            },
        )

    # Actions -------------------------------------------------------------------------------

    @admin.action(description="Flag selected conversations", permissions=["change"])
    def flag_selected(self, request: HttpRequest, queryset: QuerySet[Conversation]) -> None:
        self._review_selected(request, queryset, "Flagged", flagged=True)

    @admin.action(description="Remove flag from selected conversations", permissions=["change"])
    def unflag_selected(self, request: HttpRequest, queryset: QuerySet[Conversation]) -> None:
        self._review_selected(request, queryset, "Unflagged", flagged=False)

    @admin.action(description="Mark selected conversations reviewed", permissions=["change"])
    def mark_reviewed(self, request: HttpRequest, queryset: QuerySet[Conversation]) -> None:
        self._review_selected(request, queryset, "Marked", mark_reviewed=True, done="reviewed")

    def _review_selected(
        self,
        request: HttpRequest,
        queryset: QuerySet[Conversation],
        verb: str,
        *,
        done: str = "",
        **change: bool,
    ) -> None:
        for conversation in queryset:
            services.conversation_review_update(
                conversation=conversation, reviewer=request.user, **change
            )
        suffix = f" {done}" if done else ""
        self.message_user(request, f"{verb} {queryset.count()} conversation(s){suffix}.")

    @admin.action(description="Export selected as JSON (logged)", permissions=["view"])
    def export_json(
        self, request: HttpRequest, queryset: QuerySet[Conversation]
    ) -> HttpResponse | None:
        return self._export(request, queryset, kind=TranscriptAccess.Kind.EXPORT_JSON)

    @admin.action(description="Export selected as Markdown (logged)", permissions=["view"])
    def export_md(
        self, request: HttpRequest, queryset: QuerySet[Conversation]
    ) -> HttpResponse | None:
        return self._export(request, queryset, kind=TranscriptAccess.Kind.EXPORT_MARKDOWN)

    def _export(
        self, request: HttpRequest, queryset: QuerySet[Conversation], *, kind: str
    ) -> HttpResponse:
        """An export is an access to every transcript in it: same reason prompt, same log,
        asked for on an intermediate page like Django's own delete confirmation."""
        reason = ""
        if settings.CHAT_REVIEW_REASON_REQUIRED:
            form = ExportReasonForm(request.POST if "reason" in request.POST else None)
            if not form.is_valid():
                return TemplateResponse(
                    request,
                    "admin/conversations/export_reason.html",
                    {
                        **self.admin_site.each_context(request),
                        "opts": self.opts,
                        "title": "Why are you exporting these transcripts?",
                        "form": form,
                        "conversations": queryset,
                        "action": request.POST.get("action", ""),
                        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                        "select_across": request.POST.get("select_across", "0"),
                    },
                )
            reason = form.cleaned_data["reason"]
        conversations = list(queryset.select_related("owner"))
        for conversation in conversations:
            services.transcript_access_record(
                conversation=conversation, staff=request.user, reason=reason, kind=kind
            )
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        if kind == TranscriptAccess.Kind.EXPORT_JSON:
            data = [
                {
                    "owner": conversation.owner.get_username(),
                    **selectors.conversation_export_data(conversation=conversation),
                }
                for conversation in conversations
            ]
            return json_attachment(data=data, filename=f"conversations-{stamp}.json")
        parts = [
            f"<!-- owner: {conversation.owner.get_username()} -->\n"
            + selectors.conversation_export_markdown(conversation=conversation)
            for conversation in conversations
        ]
        return markdown_attachment(
            text="\n---\n\n".join(parts), filename=f"conversations-{stamp}.md"
        )


def _review_of(conversation: Conversation) -> ConversationReview | None:
    try:
        return conversation.review
    except ConversationReview.DoesNotExist:
        return None


def _username(user: Any) -> str:
    return user.get_username() if user is not None else "(deleted user)"


# --- Messages ----------------------------------------------------------------------------


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    """Metadata and usage per message. Opening one leads to its conversation's logged
    transcript, so no message text is readable here without an access entry."""

    list_display = (
        "conversation",
        "role",
        "status",
        "model",
        "prompt_tokens",
        "completion_tokens",
        "cost_usd",
        "has_error",
        "created_at",
    )
    list_select_related = ("conversation",)
    list_filter = ("role", "status", "model", ("created_at", admin.DateFieldListFilter))
    search_fields = ("conversation__title", "content")
    search_help_text = "Searches message text and conversation titles."
    date_hierarchy = "created_at"

    @admin.display(description="error", boolean=True)
    def has_error(self, obj: Message) -> bool:
        return obj.status == Message.Status.ERROR

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Messages form a tree; deleting one would silently cut a branch off.
        return False

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        message = self.get_object(request, object_id)
        if message is None or not self.has_view_permission(request, message):
            raise PermissionDenied
        url = reverse("admin:conversations_conversation_transcript", args=[message.conversation_id])
        return redirect(f"{url}#msg-{message.pk}")


# --- Share links and the access log ------------------------------------------------------


@admin.register(ShareLink)
class ShareLinkAdmin(admin.ModelAdmin):
    """Which conversations are public, and a way to take a link down; never the token or the
    published text."""

    list_display = (
        "title",
        "owner",
        "status_column",
        "visibility",
        "view_count",
        "created_at",
        "expires_at",
        "revoked_at",
    )
    list_select_related = ("conversation__owner",)
    list_filter = ("visibility", "revoked_at", "created_at")
    search_fields = ("title", "conversation__owner__username")
    fields = (
        "title",
        "conversation",
        "visibility",
        "include_system_prompt",
        "include_thinking",
        "view_count",
        "snapshot_at",
        "expires_at",
        "revoked_at",
        "created_at",
    )
    readonly_fields = fields
    actions = ["revoke_selected"]

    @admin.display(description="owner")
    def owner(self, obj: ShareLink) -> str:
        return obj.conversation.owner.get_username()

    @admin.display(description="status")
    def status_column(self, obj: ShareLink) -> str:
        return obj.status

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Revoke selected links", permissions=["change"])
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[ShareLink]) -> None:
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} link(s).")


@admin.register(TranscriptAccess)
class TranscriptAccessAdmin(admin.ModelAdmin):
    """Append-only: nobody, not even a superuser, edits or deletes entries from the admin."""

    list_display = ("accessed_at", "staff_username", "kind", "conversation_title", "reason")
    list_filter = ("kind", ("accessed_at", admin.DateFieldListFilter), "staff_username")
    search_fields = ("staff_username", "conversation_title", "reason", "conversation_uuid")
    date_hierarchy = "accessed_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(UserPreferences)
class UserPreferencesAdmin(admin.ModelAdmin):
    list_display = ("user", "sampling", "reasoning_effort", "max_tokens")
    raw_id_fields = ("user",)
