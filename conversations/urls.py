from django.urls import path

from conversations import views

urlpatterns = [
    path("", views.home, name="home"),
    path("c/<uuid:conversation_id>/", views.conversation_detail, name="conversation"),
    path("accounts/signup/", views.signup, name="signup"),
]
