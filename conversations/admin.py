from django.contrib import admin

from conversations.models import Conversation, Message


class MessageInline(admin.TabularInline):
    model = Message
    fields = ("role", "status", "content", "model", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ("title", "owner", "updated_at")
    list_select_related = ("owner",)
    search_fields = ("title",)
    raw_id_fields = ("owner", "active_leaf")
    inlines = [MessageInline]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("conversation", "role", "status", "model", "created_at")
    list_filter = ("role", "status", "model")
    raw_id_fields = ("conversation", "parent")


from conversations import admin_limits  # noqa: E402, F401  (quotas and sign-in locks)
