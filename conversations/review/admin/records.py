"""Admin of the records around conversations: share links, the access log, preferences and the
usage ledger."""

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html

from conversations.http import staff_member
from conversations.models import (
    ShareLink,
    TranscriptAccess,
    UsageRecord,
    UserPreferences,
)
from conversations.review import services as review_services
from conversations.review.admin.gate import (
    ReadOnlyAdmin,
    can_see_titles,
    reason_required_form,
    viewable_or_404,
)


@admin.register(ShareLink)
class ShareLinkAdmin(admin.ModelAdmin[ShareLink]):
    """Which conversations are public, and a way to take a link down; never the token or the
    published text."""

    list_display = (
        "label_column",
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
    search_fields = ("conversation__owner__username",)
    fields = (
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

    def get_list_display(self, request: HttpRequest) -> tuple[Any, ...]:
        columns = tuple(super().get_list_display(request))
        return ("title", *columns) if can_see_titles(request) else columns

    @admin.display(description="link")
    def label_column(self, obj: ShareLink) -> str:
        return str(obj)

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
class TranscriptAccessAdmin(ReadOnlyAdmin[TranscriptAccess]):
    """Append-only: nobody, not even a superuser, edits or deletes entries from the admin."""

    list_display = (
        "accessed_at",
        "staff_username",
        "kind",
        "owner_username",
        "conversation_uuid",
        "search_terms",
        "reason",
    )
    list_filter = ("kind", ("accessed_at", admin.DateFieldListFilter), "staff_username")
    search_fields = ("staff_username", "owner_username", "reason", "search_terms")
    date_hierarchy = "accessed_at"
    exclude = ("conversation_title",)

    def get_list_display(self, request: HttpRequest) -> tuple[Any, ...]:
        columns = tuple(super().get_list_display(request))
        return (*columns, "conversation_title") if can_see_titles(request) else columns

    def get_exclude(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return () if can_see_titles(request) else ("conversation_title",)


@admin.register(UserPreferences)
class UserPreferencesAdmin(admin.ModelAdmin[UserPreferences]):
    """Defaults without the system prompt: reading that is a logged read, like a transcript."""

    list_display = ("user", "sampling", "reasoning_effort", "max_tokens", "has_system_prompt")
    raw_id_fields = ("user",)
    exclude = ("system_prompt",)
    readonly_fields = ("system_prompt_link",)

    @admin.display(description="default system prompt", boolean=True)
    def has_system_prompt(self, obj: UserPreferences) -> bool:
        return bool(obj.system_prompt)

    @admin.display(description="default system prompt")
    def system_prompt_link(self, obj: UserPreferences) -> str:
        if obj.pk is None:
            return "–"
        url = reverse("admin:conversations_userpreferences_system_prompt", args=[obj.pk])
        return format_html('<a href="{}">Read the default system prompt (logged)</a>', url)

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "<path:object_id>/system-prompt/",
                self.admin_site.admin_view(self.system_prompt_view),
                name="conversations_userpreferences_system_prompt",
            ),
            *super().get_urls(),
        ]

    def system_prompt_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        preferences = viewable_or_404(self, request, object_id, what="preferences")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "subject": preferences.user.get_username(),
        }
        form, reason = reason_required_form(request)
        if request.method != "POST" or reason is None:
            return TemplateResponse(
                request,
                "admin/conversations/system_prompt_reason.html",
                {**context, "form": form, "title": "Why are you reading this system prompt?"},
            )
        access = review_services.system_prompt_read_record(
            preferences=preferences, staff=staff_member(request), reason=reason
        )
        # Shown in answer to the logged POST only: a reload asks again.
        return TemplateResponse(
            request,
            "admin/conversations/system_prompt.html",
            {
                **context,
                "access": access,
                "system_prompt": preferences.system_prompt,
                "title": f"Default system prompt of {preferences.user.get_username()}",
            },
        )


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin[UsageRecord]):
    """The usage ledger, read-only: what each reply used, kept when conversations and accounts
    are deleted."""

    list_display = (
        "started_at",
        "user_column",
        "model",
        "status",
        "prompt_tokens",
        "completion_tokens",
        "estimated",
        "cost_usd",
        "settled_at",
    )
    list_filter = ("model", "status", "estimated", ("started_at", admin.DateFieldListFilter))
    search_fields = ("username",)
    date_hierarchy = "started_at"

    @admin.display(description="user", ordering="username")
    def user_column(self, obj: UsageRecord) -> str:
        return obj.username if obj.user_id else f"{obj.username} (deleted user)"
