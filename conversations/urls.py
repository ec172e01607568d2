from django.urls import path

from conversations import views

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
    # Browsers ask for /favicon.ico whatever the page says; answer instead of logging a 404.
    path("favicon.ico", views.favicon),
]
