"""Sign-in with brute-force throttling (failures counted in the database, so per site, not
per process)."""

from typing import Any

from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView
from django.core.exceptions import ValidationError

from conversations.accounts import limits


def client_address(request: Any) -> str:
    # Behind a proxy, Daphne's --proxy-headers puts the real client address here.
    return str(request.META.get("REMOTE_ADDR") or "unknown")[:64]


class ThrottledAuthenticationForm(AuthenticationForm):
    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username") or ""
        address = client_address(self.request)
        wait = limits.login_locked_for(username=username, address=address)
        if wait:
            # Checked before the password, so a locked account cannot be probed at all.
            raise ValidationError(
                "Too many failed sign-in attempts. Sign-in is locked for "
                f"{limits.lock_wait_text(wait)}; try again later.",
                code="throttled",
            )
        try:
            cleaned = super().clean()
        except ValidationError:
            limits.login_failure_record(username=username, address=address)
            raise
        limits.login_success_record(username=username, address=address)
        return cleaned


class ThrottledLoginView(LoginView):
    authentication_form = ThrottledAuthenticationForm
