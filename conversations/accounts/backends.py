"""One sign-in throttle for every sign-in form.

The throttle sits in the authentication backend, which every form reaches through
`django.contrib.auth.authenticate` — the app's sign-in, the admin's, and any added later — so
no form can be a way around it. Failures count per username *and* client address (so a
stranger elsewhere cannot lock the owner out) and per address (so one address cannot try many
usernames).
"""

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from conversations.accounts import limits


def client_address(request: HttpRequest | None) -> str:
    # REMOTE_ADDR comes from the ASGI scope, which chatsite.proxy fills from trusted proxies only.
    if request is None:
        return "unknown"
    return str(request.META.get("REMOTE_ADDR") or "unknown")[:64]


class ThrottledModelBackend(ModelBackend):
    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> Any:
        if username is None:
            username = kwargs.get(get_user_model().USERNAME_FIELD)
        if username is None or password is None:
            return None
        address = client_address(request)
        if limits.login_locked_for(username=username, address=address):
            # Checked before the password, so a locked account cannot be probed at all;
            # PermissionDenied also stops any other backend from trying.
            raise PermissionDenied("sign-in locked")
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is None:
            limits.login_failure_record(username=username, address=address)
        else:
            limits.login_success_record(username=username, address=address)
        return user
