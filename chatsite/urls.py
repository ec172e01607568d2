from django.contrib import admin
from django.urls import include, path

from conversations.accounts.login import ThrottledLoginView

urlpatterns = [
    path("admin/", admin.site.urls),
    # Before the auth URLs, so that sign-in goes through the brute-force throttle.
    path("accounts/login/", ThrottledLoginView.as_view(), name="login"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("conversations.urls")),
]
