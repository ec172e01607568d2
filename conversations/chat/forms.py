from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth.forms import UserCreationForm

from conversations.chat.services import TurnSettings
from conversations.models import ReasoningEffort, Sampling

MAX_TOKENS_LIMIT = 64_000
STOP_FIELDS = ("stop_1", "stop_2", "stop_3", "stop_4")
STOP_MAX_CHARS = 200
SYSTEM_PROMPT_MAX_CHARS = 20_000
TITLE_MAX_CHARS = 200
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
    system_prompt = forms.CharField(
        required=False, strip=False, max_length=SYSTEM_PROMPT_MAX_CHARS, widget=forms.Textarea
    )
    # Up to four, as the gateway's schema allows; kept verbatim (a leading space can matter).
    stop_1 = forms.CharField(
        label="Stop sequence 1", required=False, strip=False, max_length=STOP_MAX_CHARS
    )
    stop_2 = forms.CharField(
        label="Stop sequence 2", required=False, strip=False, max_length=STOP_MAX_CHARS
    )
    stop_3 = forms.CharField(
        label="Stop sequence 3", required=False, strip=False, max_length=STOP_MAX_CHARS
    )
    stop_4 = forms.CharField(
        label="Stop sequence 4", required=False, strip=False, max_length=STOP_MAX_CHARS
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        stops: list[str] = []
        for name in STOP_FIELDS:
            value = cleaned.get(name) or ""
            if value and not value.strip():
                self.add_error(name, "A stop sequence cannot be only spaces; leave it empty.")
            elif value and value not in stops:
                stops.append(value)
        cleaned["stop"] = tuple(stops)
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


def turn_settings_from(*, form: TurnSettingsForm, frame: dict[str, Any]) -> TurnSettings:
    """The validated controls of a turn. A frame without a system prompt leaves the
    conversation's as it is (None), rather than clearing it."""
    data = form.cleaned_data
    return TurnSettings(
        sampling=data["sampling"],
        temperature=data["temperature"],
        top_p=data["top_p"],
        reasoning_effort=data["reasoning_effort"],
        max_tokens=data["max_tokens"],
        stop=data["stop"],
        system_prompt=data["system_prompt"] if "system_prompt" in frame else None,
    )


class PreferencesForm(TurnSettingsForm):
    """The per-user defaults a new conversation starts with."""

    field_order = ["system_prompt", "sampling", "temperature", "top_p"]

    system_prompt = forms.CharField(
        label="Default system prompt",
        required=False,
        strip=False,
        max_length=SYSTEM_PROMPT_MAX_CHARS,
        widget=forms.Textarea(attrs={"rows": 6}),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in STOP_FIELDS:
            del self.fields[name]
        self.fields["max_tokens"].label = "Max tokens"
        self.fields["reasoning_effort"].label = "Reasoning effort"
        self.fields["sampling"].label = "Sampling"
        sampling = self.fields["sampling"]
        sampling.help_text = "Claude takes temperature or Top P, never both: this picks which."


class RenameForm(forms.Form):
    title = forms.CharField(max_length=TITLE_MAX_CHARS)

    def clean_title(self) -> str:
        title = " ".join(self.cleaned_data["title"].split())
        if not title:
            raise forms.ValidationError("A title cannot be empty.")
        return title


class SignupForm(UserCreationForm):
    pass
