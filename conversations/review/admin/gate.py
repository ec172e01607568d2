"""What every admin page that shows content shares: who may see titles, the reason form, and
small labels."""

from typing import Any, TypeVar

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Model
from django.http import Http404, HttpRequest

from conversations.models import Conversation, ConversationReview
from conversations.review.forms import TranscriptReasonForm

USAGE_CHART_DAYS = 30
TITLE_PERMISSION = "conversations.view_conversation_title"
# Where a granted content search is remembered: {"terms": ..., "access": id}.
CONTENT_SEARCH_SESSION_KEY = "review_content_search"


def can_see_titles(request: HttpRequest) -> bool:
    return request.user.has_perm(TITLE_PERMISSION)


def reason_required_form(request: HttpRequest) -> tuple[TranscriptReasonForm, str | None]:
    """The reason form bound to this request and, once valid (or when reasons are not
    required), the reason to log."""
    form = TranscriptReasonForm(request.POST if "reason" in request.POST else None)
    if not settings.CHAT_REVIEW_REASON_REQUIRED:
        return form, ""
    if form.is_valid():
        return form, form.cleaned_data["reason"]
    return form, None


def review_of(conversation: Conversation) -> ConversationReview | None:
    try:
        return conversation.review
    except ConversationReview.DoesNotExist:
        return None


def username_of(user: Any) -> str:
    return user.get_username() if user is not None else "(deleted user)"


RecordModel = TypeVar("RecordModel", bound=Model)


def viewable_or_404(
    model_admin: admin.ModelAdmin[RecordModel], request: HttpRequest, object_id: str, *, what: str
) -> RecordModel:
    """The admin's object for a page of its own: no such id is a 404, no view permission a 403."""
    found = model_admin.get_object(request, object_id)
    if found is None:
        raise Http404(f"No such {what}.")
    if not model_admin.has_view_permission(request, found):
        raise PermissionDenied
    return found


class ReadOnlyAdmin(admin.ModelAdmin[RecordModel]):
    """Records that only the app writes (the access log, the usage ledger): staff read them."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
