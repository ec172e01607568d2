"""Admin for per-user quotas and sign-in locks."""

from django.contrib import admin

from conversations.accounts.login import ThrottledAdminAuthenticationForm
from conversations.models import LoginThrottle, UserQuota

# The admin's sign-in says when it is locked, like the app's (the backend enforces the lock).
admin.site.login_form = ThrottledAdminAuthenticationForm


@admin.register(UserQuota)
class UserQuotaAdmin(admin.ModelAdmin[UserQuota]):
    list_display = ("user", "messages_per_minute", "messages_per_day", "tokens_per_day", "note")
    list_select_related = ("user",)
    search_fields = ("user__username", "user__email", "note")
    autocomplete_fields = ("user",)


@admin.register(LoginThrottle)
class LoginThrottleAdmin(admin.ModelAdmin[LoginThrottle]):
    """Staff can lift a lock by deleting its row."""

    list_display = ("key", "failures", "window_started_at", "locked_until")
    search_fields = ("key",)
    readonly_fields = ("key", "failures", "window_started_at")
