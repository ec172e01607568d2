from django.urls import include, path

from conversations.catalogue import views as views_context
from conversations.chat import exports as views_export
from conversations.chat import organise, views
from conversations.sharing import views as views_sharing

# Everything about one conversation, under its id.
conversation_patterns = [
    path("", views.conversation_detail, name="conversation"),
    path("older/", views.conversation_older, name="conversation_older"),
    path("m/<uuid:message_id>/text/", views.message_text, name="message_text"),
    path("rename/", views.conversation_rename, name="conversation_rename"),
    path("delete/", views.conversation_delete, name="conversation_delete"),
    path("pin/", organise.conversation_pin, name="conversation_pin"),
    path("archive/", organise.conversation_archive, name="conversation_archive"),
    # Sharing and export.
    path("share/", views_sharing.share_dialog, name="share_dialog"),
    path("share/preview/", views_sharing.share_preview, name="share_preview"),
    path(
        "export.json",
        views_export.conversation_export,
        {"extension": "json"},
        name="conversation_export_json",
    ),
    path(
        "export.md",
        views_export.conversation_export,
        {"extension": "md"},
        name="conversation_export_markdown",
    ),
    # The context meter and the ways on when a conversation outgrows its model's context.
    path("context/", views_context.context_meter, name="conversation_context"),
    path("context/offers/", views_context.context_offers, name="conversation_context_offers"),
    path("context/trim/", views_context.context_trim, name="conversation_context_trim"),
    path("context/summary/", views_context.context_summary, name="conversation_context_summary"),
    path("context/continue/", views_context.context_continue, name="conversation_context_continue"),
]

urlpatterns = [
    path("", views.home, name="home"),
    path("c/<uuid:conversation_id>/", include(conversation_patterns)),
    path("search/", views.conversation_search, name="search"),
    path("settings/", views.preferences, name="preferences"),
    path("accounts/signup/", views.signup, name="signup"),
    path("archived/", organise.archived, name="archived"),
    path("m/<uuid:message_id>/feedback/", organise.message_feedback, name="message_feedback"),
    # Share links, and the public page of each.
    path("share-links/", views_sharing.shared_links, name="shared_links"),
    path(
        "share-links/<uuid:link_id>/revoke/",
        views_sharing.share_link_revoke,
        name="share_link_revoke",
    ),
    path("s/<str:token>/", views_sharing.shared_conversation, name="shared_conversation"),
    path("s/<str:token>/continue/", views_sharing.shared_continue, name="shared_continue"),
    path("", include("conversations.attachments.urls")),
    # Browsers ask for /favicon.ico whatever the page says; answer instead of logging a 404.
    path("favicon.ico", views.favicon),
]
