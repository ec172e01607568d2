"""The conversation admin: the list, the reason-gated transcript, review actions and exports."""

from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.views.main import SEARCH_VAR
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html

from conversations.catalogue.admin import RetiringModelFilter
from conversations.chat import selectors
from conversations.chat.exports import json_attachment, markdown_attachment
from conversations.http import staff_member
from conversations.models import (
    Conversation,
    ConversationReview,
    TranscriptAccess,
)
from conversations.review import selectors as review_selectors
from conversations.review import services as review_services
from conversations.review.charts import tokens_per_day_svg
from conversations.review.forms import ReviewForm, TranscriptReasonForm

if TYPE_CHECKING:
    from conversations.review.selectors import ConversationWithTotals


from conversations.review.admin.filters import (
    EmptyConversationFilter,
    FlaggedFilter,
    HasErrorFilter,
    MessageStatusFilter,
    ModelFilter,
    NegativeFeedbackFilter,
    ReviewedFilter,
    SharedFilter,
)
from conversations.review.admin.gate import (
    CONTENT_SEARCH_SESSION_KEY,
    USAGE_CHART_DAYS,
    can_see_titles,
    reason_required_form,
    review_of,
    username_of,
    viewable_or_404,
)


class ConversationReviewInline(admin.StackedInline[ConversationReview, Conversation]):
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
class ConversationAdmin(admin.ModelAdmin[Conversation]):
    # Fits a 1280 px screen beside the filters: creation date is in the date filter instead.
    list_display = (
        "label_column",
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
        RetiringModelFilter,
        MessageStatusFilter,
        HasErrorFilter,
        NegativeFeedbackFilter,
        SharedFilter,
        FlaggedFilter,
        ReviewedFilter,
    )
    search_fields = ("title", "messages__content")
    search_help_text = (
        "Searches conversation titles and the text of every message: you will be asked why, and "
        "the search is logged against every conversation it matches."
    )
    date_hierarchy = "created_at"
    # No title, system prompt or message text here: content is read through the logged gate.
    fields = (
        "label_column",
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
        return review_selectors.conversation_with_totals(queryset=super().get_queryset(request))

    def get_list_display(self, request: HttpRequest) -> tuple[Any, ...]:
        columns = tuple(super().get_list_display(request))
        if can_see_titles(request):
            # The title names the row; the short label beside it would only cost width.
            return ("title", *(column for column in columns if column != "label_column"))
        return columns

    def get_fields(self, request: HttpRequest, obj: Any = None) -> tuple[Any, ...]:
        fields = tuple(super().get_fields(request, obj))
        return ("title", *fields) if can_see_titles(request) else fields

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [name for name in self.get_fields(request, obj) if isinstance(name, str)]

    # Content search: a search reads every conversation it matches, so it goes through the gate.

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        terms = request.GET.get(SEARCH_VAR, "").strip()
        if terms and not self._content_search_granted(request, terms):
            return self._content_search_gate(request, terms)
        return super().changelist_view(request, extra_context)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Conversation], search_term: str
    ) -> tuple[QuerySet[Conversation], bool]:
        # Every route to a search (the list, autocomplete, anything added later) needs a
        # logged search of exactly these terms by this staff member.
        if search_term.strip() and not self._content_search_granted(request, search_term.strip()):
            return queryset.none(), False
        return super().get_search_results(request, queryset, search_term)

    def _content_search_granted(self, request: HttpRequest, terms: str) -> bool:
        granted = request.session.get(CONTENT_SEARCH_SESSION_KEY) or {}
        if granted.get("terms") != terms:
            return False
        return (
            review_selectors.content_search_recent_for_staff(
                staff=staff_member(request), access_id=granted.get("access"), terms=terms
            )
            is not None
        )

    def _content_search_gate(self, request: HttpRequest, terms: str) -> HttpResponse:
        """Ask why before searching content; the page says nothing about what would match."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        form, reason = reason_required_form(request)
        if request.method != "POST" or reason is None:
            return TemplateResponse(
                request,
                "admin/conversations/search_reason.html",
                {
                    **self.admin_site.each_context(request),
                    "opts": self.opts,
                    "form": form,
                    "terms": terms,
                    "title": "Why are you searching conversation content?",
                },
            )
        matched, _ = super().get_search_results(request, self.get_queryset(request), terms)
        access = review_services.content_search_record(
            staff=staff_member(request),
            terms=terms,
            reason=reason,
            matched=matched.select_related("owner").distinct(),
        )
        request.session[CONTENT_SEARCH_SESSION_KEY] = {"terms": terms, "access": access.pk}
        # Redirect so a reload neither re-posts nor logs a second entry.
        return HttpResponseRedirect(request.get_full_path())

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Conversations are made by their owners; staff only read and review them.
        return False

    # Columns -------------------------------------------------------------------------------

    @admin.display(description="conversation")
    def label_column(self, obj: Conversation) -> str:
        return str(obj)

    @admin.display(description="messages", ordering="message_total")
    def messages_column(self, obj: "ConversationWithTotals") -> int:
        return obj.message_total

    @admin.display(description="tokens", ordering="token_total")
    def tokens_column(self, obj: "ConversationWithTotals") -> str:
        return f"{obj.token_total:,}"

    @admin.display(description="cost (USD)", ordering="cost_total")
    def cost_column(self, obj: "ConversationWithTotals") -> str:
        return f"{obj.cost_total:.4f}" if obj.cost_total is not None else "–"

    @admin.display(description="shared", boolean=True, ordering="has_live_link")
    def shared_column(self, obj: "ConversationWithTotals") -> bool:
        return obj.has_live_link

    @admin.display(description="flagged", boolean=True, ordering="review__flagged")
    def flagged_column(self, obj: Conversation) -> bool:
        review = review_of(obj)
        return bool(review and review.flagged)

    @admin.display(description="reviewed", ordering="review__reviewed_at")
    def reviewed_column(self, obj: Conversation) -> str:
        review = review_of(obj)
        if review is None or review.reviewed_at is None:
            return "–"
        return f"{review.reviewed_at:%d %b} by {username_of(review.reviewed_by)}"

    @admin.display(description="transcript")
    def transcript_link(self, obj: Conversation) -> str:
        url = reverse("admin:conversations_conversation_transcript", args=[obj.pk])
        return format_html('<a href="{}">Open transcript (logged)</a>', url)

    @admin.display(description="totals")
    def totals(self, obj: "ConversationWithTotals") -> str:
        cost = f"${obj.cost_total:.4f}" if obj.cost_total is not None else "no cost reported"
        return f"{obj.message_total} messages · {obj.token_total:,} tokens · {cost}"

    @admin.display(description="share links")
    def share_links_summary(self, obj: Conversation) -> str:
        links = list(obj.share_links.all())
        live = sum(1 for link in links if link.status == "active")
        return f"{live} live of {len(links)}" if links else "never shared"

    def get_deleted_objects(
        self, objs: Any, request: HttpRequest
    ) -> tuple[list[Any], dict[Any, Any], set[Any], list[Any]]:
        # Django lists every related object by its str(); the confirmation names the
        # conversations (by title only for staff who may see titles) and counts the rest.
        _, model_count, perms_needed, protected = super().get_deleted_objects(objs, request)
        show_title = can_see_titles(request)
        names = [obj.title if show_title else str(obj) for obj in objs]
        return names, model_count, perms_needed, protected

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

    def transcript_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The conversation as its owner saw it. Without a fresh access entry of the viewer's
        own, it first asks why (when required) and records the access."""
        conversation = viewable_or_404(self, request, object_id, what="conversation")
        url = reverse("admin:conversations_conversation_transcript", args=[conversation.pk])
        access = review_selectors.transcript_access_recent_for_staff(
            conversation=conversation,
            staff=staff_member(request),
            access_id=request.GET.get("access"),
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
                            "show_title": can_see_titles(request),
                            "form": form,
                            "title": "Why are you opening this transcript?",
                        },
                    )
                reason = form.cleaned_data["reason"]
            else:
                reason = ""
            access = review_services.transcript_access_record(
                conversation=conversation,
                staff=staff_member(request),
                reason=reason,
                kind=TranscriptAccess.Kind.VIEW,
            )
            # Redirect so a reload neither re-posts nor logs a second entry.
            return HttpResponseRedirect(f"{url}?access={access.pk}")

        review = review_of(conversation)
        can_review = self.has_change_permission(request, conversation)
        return TemplateResponse(
            request,
            "admin/conversations/transcript.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "conversation": conversation,
                "thread": selectors.messages_with_feedback(
                    messages=selectors.thread_path(conversation=conversation)
                ),
                "totals": review_selectors.usage_totals_for_conversation(conversation=conversation),
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
        conversation = viewable_or_404(self, request, object_id, what="conversation")
        if not self.has_change_permission(request, conversation):
            raise PermissionDenied
        form = ReviewForm(request.POST)
        if form.is_valid():
            review_services.conversation_review_update(
                conversation=conversation,
                reviewer=staff_member(request),
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
        points = review_selectors.usage_tokens_per_day(days=USAGE_CHART_DAYS)
        return TemplateResponse(
            request,
            "admin/conversations/usage.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": "Usage: tokens and cost",
                "per_user": review_selectors.usage_totals_by_user(),
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
        flagged: bool | None = None,
        mark_reviewed: bool = False,
    ) -> None:
        for conversation in queryset:
            review_services.conversation_review_update(
                conversation=conversation,
                reviewer=staff_member(request),
                flagged=flagged,
                mark_reviewed=mark_reviewed,
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
            form = TranscriptReasonForm(request.POST if "reason" in request.POST else None)
            if not form.is_valid():
                return TemplateResponse(
                    request,
                    "admin/conversations/export_reason.html",
                    {
                        **self.admin_site.each_context(request),
                        "opts": self.opts,
                        "title": "Why are you exporting these transcripts?",
                        "form": form,
                        "show_title": can_see_titles(request),
                        "conversations": queryset,
                        "action": request.POST.get("action", ""),
                        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                        "select_across": request.POST.get("select_across", "0"),
                    },
                )
            reason = form.cleaned_data["reason"]
        conversations = list(queryset.select_related("owner"))
        for conversation in conversations:
            review_services.transcript_access_record(
                conversation=conversation, staff=staff_member(request), reason=reason, kind=kind
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
