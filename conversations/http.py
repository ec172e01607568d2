"""Request types for views (what the middleware and decorators guarantee, for the type checker),
and the one 404 that views answer for an id that is not the user's."""

from typing import TypeVar

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest
from django_htmx.middleware import HtmxDetails

from conversations.chat.selectors import conversation_get_for_user
from conversations.models import Conversation

FoundT = TypeVar("FoundT")


class HtmxHttpRequest(HttpRequest):
    """Any request: `HtmxMiddleware` sets `htmx` on every one."""

    htmx: HtmxDetails


class AuthenticatedHttpRequest(HtmxHttpRequest):
    """A request that passed `login_required`: its user is signed in."""

    user: User


def staff_member(request: HttpRequest) -> User:
    """The staff member behind an admin request (the admin site lets no one else in)."""
    if not isinstance(request.user, User) or not request.user.is_staff:
        raise PermissionDenied
    return request.user


def found_or_404(found: FoundT | None, *, what: str) -> FoundT:
    """What a selector found for the user, or a 404: the selectors answer None alike for no such
    id and someone else's, and so does this page."""
    if found is None:
        raise Http404(f"No such {what}.")
    return found


def owned_conversation_or_404(
    request: AuthenticatedHttpRequest, conversation_id: str
) -> Conversation:
    """The signed-in user's conversation; anyone else's, or no such id, is a 404 alike."""
    return found_or_404(
        conversation_get_for_user(conversation_id=conversation_id, user=request.user),
        what="conversation",
    )
