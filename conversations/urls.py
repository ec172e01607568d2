from django.urls import include, path

from conversations.catalogue import views as views_context
from conversations.chat import exports as views_export
from conversations.chat import organise, views
from conversations.sharing import views as views_sharing

urlpatterns = [
    path("", views.home, name="home"),
    path("c/<uuid:conversation_id>/", views.conversation_detail, name="conversation"),
    path("c/<uuid:conversation_id>/older/", views.conversation_older, name="conversation_older"),
    path(
        "c/<uuid:conversation_id>/m/<uuid:message_id>/text/",
        views.message_text,
        name="message_text",
    ),
    path(
        "c/<uuid:conversation_id>/rename/",
        views.conversation_rename,
        name="conversation_rename",
    ),
    path(
        "c/<uuid:conversation_id>/delete/",
        views.conversation_delete,
        name="conversation_delete",
    ),
    path("search/", views.conversation_search, name="search"),
    path("settings/", views.preferences, name="preferences"),
    path("accounts/signup/", views.signup, name="signup"),
    # Sharing and export.
    path("c/<uuid:conversation_id>/share/", views_sharing.share_dialog, name="share_dialog"),
    path(
        "c/<uuid:conversation_id>/share/preview/",
        views_sharing.share_preview,
        name="share_preview",
    ),
    path(
        "share-links/<uuid:link_id>/revoke/",
        views_sharing.share_link_revoke,
        name="share_link_revoke",
    ),
    path("share-links/", views_sharing.shared_links, name="shared_links"),
    path("s/<str:token>/", views_sharing.shared_conversation, name="shared_conversation"),
    path("s/<str:token>/continue/", views_sharing.shared_continue, name="shared_continue"),
    path(
        "c/<uuid:conversation_id>/export.json",
        views_export.conversation_export,
        {"extension": "json"},
        name="conversation_export_json",
    ),
    path(
        "c/<uuid:conversation_id>/export.md",
        views_export.conversation_export,
        {"extension": "md"},
        name="conversation_export_markdown",
    ),
    # The context meter and the ways on when a conversation outgrows its model's context.
    path(
        "c/<uuid:conversation_id>/context/",
        views_context.context_meter,
        name="conversation_context",
    ),
    path(
        "c/<uuid:conversation_id>/context/offers/",
        views_context.context_offers,
        name="conversation_context_offers",
    ),
    path(
        "c/<uuid:conversation_id>/context/trim/",
        views_context.context_trim,
        name="conversation_context_trim",
    ),
    path(
        "c/<uuid:conversation_id>/context/summary/",
        views_context.context_summary,
        name="conversation_context_summary",
    ),
    path(
        "c/<uuid:conversation_id>/context/continue/",
        views_context.context_continue,
        name="conversation_context_continue",
    ),
    path("", include("conversations.attachments.urls")),
    # Keeping conversations in order, and feedback on replies.
    path("c/<uuid:conversation_id>/pin/", organise.conversation_pin, name="conversation_pin"),
    path(
        "c/<uuid:conversation_id>/archive/",
        organise.conversation_archive,
        name="conversation_archive",
    ),
    path("archived/", organise.archived, name="archived"),
    path("m/<uuid:message_id>/feedback/", organise.message_feedback, name="message_feedback"),
    # Browsers ask for /favicon.ico whatever the page says; answer instead of logging a 404.
    path("favicon.ico", views.favicon),
]
