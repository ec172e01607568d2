"""Sign-in forms that say when the throttle has locked them (the throttle itself is in the
authentication backend, so it holds for every form)."""

from typing import Any

from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView
from django.core.exceptions import ValidationError

from conversations.accounts import limits
from conversations.accounts.backends import client_address


def _refuse_if_locked(form: AuthenticationForm) -> None:
    username = form.cleaned_data.get("username") or ""
    wait = limits.login_locked_for(username=username, address=client_address(form.request))
    if wait:
        raise ValidationError(
            "Too many failed sign-in attempts. Sign-in is locked for "
            f"{limits.lock_wait_text(wait)}; try again later.",
            code="throttled",
        )


class ThrottledAuthenticationForm(AuthenticationForm):
    def clean(self) -> dict[str, Any]:
        _refuse_if_locked(self)
        return super().clean()


class ThrottledAdminAuthenticationForm(AdminAuthenticationForm):
    def clean(self) -> dict[str, Any]:
        _refuse_if_locked(self)
        return super().clean()


class ThrottledLoginView(LoginView):
    authentication_form = ThrottledAuthenticationForm
