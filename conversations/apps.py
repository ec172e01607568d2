from django.apps import AppConfig


class ConversationsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "conversations"

    def ready(self) -> None:
        # The admin lives with the sub-domains it serves, not in a top-level admin module.
        from conversations.accounts import admin as accounts_admin  # noqa: F401
        from conversations.accounts import sessions
        from conversations.catalogue import admin as catalogue_admin  # noqa: F401
        from conversations.review import admin as review_admin  # noqa: F401

        sessions.connect_signals()
