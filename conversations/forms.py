from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth.forms import UserCreationForm

from conversations.models import ReasoningEffort, Sampling

MAX_TOKENS_LIMIT = 64_000
# With thinking on, Claude only accepts top_p in this range.
REASONING_TOP_P_MIN = 0.95


class TurnSettingsForm(forms.Form):
    """The sampling controls beside the composer. Every value is checked here so that nothing
    out of range is ever sent upstream."""

    sampling = forms.ChoiceField(choices=Sampling, initial=Sampling.DEFAULT)
    temperature = forms.FloatField(min_value=0.0, max_value=1.0, initial=1.0)
    top_p = forms.FloatField(label="Top P", min_value=0.0, max_value=1.0, initial=1.0)
    reasoning_effort = forms.ChoiceField(choices=ReasoningEffort, initial=ReasoningEffort.OFF)
    max_tokens = forms.IntegerField(min_value=1, max_value=MAX_TOKENS_LIMIT)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        reasoning_on = cleaned.get("reasoning_effort", ReasoningEffort.OFF) != ReasoningEffort.OFF
        top_p = cleaned.get("top_p")
        if (
            reasoning_on
            and cleaned.get("sampling") == Sampling.TOP_P
            and top_p is not None
            and top_p < REASONING_TOP_P_MIN
        ):
            self.add_error(
                "top_p",
                f"With reasoning on, Claude only accepts Top P from {REASONING_TOP_P_MIN} to 1 "
                f"(you chose {top_p:g}). Raise Top P or reset sampling to the model default.",
            )
        return cleaned


class TurnForm(TurnSettingsForm):
    message = forms.CharField(strip=False)

    def clean_message(self) -> str:
        message: str = self.cleaned_data["message"]
        if not message.strip():
            raise forms.ValidationError("Type a message before sending.")
        if len(message) > settings.CHAT_MAX_MESSAGE_CHARS:
            raise forms.ValidationError(
                f"That message is {len(message):,} characters long; the limit is "
                f"{settings.CHAT_MAX_MESSAGE_CHARS:,}. Shorten it or split it into parts."
            )
        return message


def form_error_text(form: forms.Form) -> str:
    """One readable sentence per problem, naming the control it concerns."""
    problems = []
    for field, errors in form.errors.items():
        label = form.fields[field].label or field.replace("_", " ").capitalize()
        for error in errors:
            problems.append(error if field in ("message", "__all__") else f"{label}: {error}")
    return " ".join(problems)


class SignupForm(UserCreationForm):
    pass
