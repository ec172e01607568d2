from django.urls import include, path

from conversations.chat import exports as views_export
from conversations.chat import views
from conversations.sharing import views as views_sharing

urlpatterns = [
    path("", views.home, name="home"),
    path("c/<uuid:conversation_id>/", views.conversation_detail, name="conversation"),
    path("c/<uuid:conversation_id>/older/", views.conversation_older, name="conversation_older"),
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
        views_export.conversation_export_json,
        name="conversation_export_json",
    ),
    path(
        "c/<uuid:conversation_id>/export.md",
        views_export.conversation_export_markdown,
        name="conversation_export_markdown",
    ),
    path("", include("conversations.attachments.urls")),
    # Browsers ask for /favicon.ico whatever the page says; answer instead of logging a 404.
    path("favicon.ico", views.favicon),
]
