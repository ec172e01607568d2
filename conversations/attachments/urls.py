from django.urls import path

from conversations.attachments import views

urlpatterns = [
    path(
        "c/<uuid:conversation_id>/export.zip",
        views.conversation_export_zip,
        name="conversation_export_zip",
    ),
    path("attachments/", views.attachment_upload, name="attachment_upload"),
    path("attachments/<uuid:attachment_id>/", views.attachment_file, name="attachment_file"),
    path(
        "attachments/<uuid:attachment_id>/thumbnail/",
        views.attachment_file,
        {"thumbnail": True},
        name="attachment_thumbnail",
    ),
    path(
        "s/<str:token>/attachments/<uuid:attachment_id>/",
        views.shared_attachment_file,
        name="shared_attachment_file",
    ),
    path(
        "s/<str:token>/attachments/<uuid:attachment_id>/thumbnail/",
        views.shared_attachment_file,
        {"thumbnail": True},
        name="shared_attachment_thumbnail",
    ),
    path(
        "review/c/<uuid:conversation_id>/attachments/<uuid:attachment_id>/",
        views.staff_attachment_file,
        name="staff_attachment_file",
    ),
    path(
        "review/c/<uuid:conversation_id>/attachments/<uuid:attachment_id>/thumbnail/",
        views.staff_attachment_file,
        {"thumbnail": True},
        name="staff_attachment_thumbnail",
    ),
]
