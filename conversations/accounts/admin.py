"""Admin for per-user quotas and sign-in locks (imported at the end of admin.py)."""

from django.contrib import admin

from conversations.models import LoginThrottle, UserQuota


@admin.register(UserQuota)
class UserQuotaAdmin(admin.ModelAdmin):
    list_display = ("user", "messages_per_minute", "messages_per_day", "tokens_per_day", "note")
    list_select_related = ("user",)
    search_fields = ("user__username", "user__email", "note")
    autocomplete_fields = ("user",)


@admin.register(LoginThrottle)
class LoginThrottleAdmin(admin.ModelAdmin):
    """Staff can lift a lock by deleting its row."""

    list_display = ("key", "failures", "window_started_at", "locked_until")
    search_fields = ("key",)
    readonly_fields = ("key", "failures", "window_started_at")
