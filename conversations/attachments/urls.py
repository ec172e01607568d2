from collections.abc import Callable
from typing import Any

from django.urls import URLPattern, path

from conversations.attachments import views


def _file_and_thumbnail(
    route: str, view: Callable[..., Any], *, names: tuple[str, str]
) -> list[URLPattern]:
    """A file at `route` and its thumbnail below it: one view serves both, told which."""
    file_name, thumbnail_name = names
    return [
        path(route, view, name=file_name),
        path(f"{route}thumbnail/", view, {"thumbnail": True}, name=thumbnail_name),
    ]


urlpatterns = [
    path(
        "c/<uuid:conversation_id>/export.zip",
        views.conversation_export_zip,
        name="conversation_export_zip",
    ),
    path("attachments/", views.attachment_upload, name="attachment_upload"),
    # The owner's, a live share link's viewer's, and staff's (with a logged reason) ways in.
    *_file_and_thumbnail(
        "attachments/<uuid:attachment_id>/",
        views.attachment_file,
        names=("attachment_file", "attachment_thumbnail"),
    ),
    *_file_and_thumbnail(
        "s/<str:token>/attachments/<uuid:attachment_id>/",
        views.shared_attachment_file,
        names=("shared_attachment_file", "shared_attachment_thumbnail"),
    ),
    *_file_and_thumbnail(
        "review/c/<uuid:conversation_id>/attachments/<uuid:attachment_id>/",
        views.staff_attachment_file,
        names=("staff_attachment_file", "staff_attachment_thumbnail"),
    ),
]
