"""Request types for views: what the middleware and decorators guarantee, for the type checker."""

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails


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
