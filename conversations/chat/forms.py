from collections.abc import Sequence
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.models import User

from conversations.catalogue.selectors import ModelChoice
from conversations.gateway.profiles import (
    SAMPLING_DEFAULT,
    NumericParam,
    TurnSettings,
    parameters,
    sampling_choices,
)
from conversations.models import MessageFeedback, ReasoningEffort

STOP_FIELDS = ("stop_1", "stop_2", "stop_3", "stop_4")
STOP_MAX_CHARS = 200
SYSTEM_PROMPT_MAX_CHARS = 20_000
TITLE_MAX_CHARS = 200
MODEL_ID_MAX_CHARS = 100


def parameter_field(spec: NumericParam) -> forms.Field:
    """The form field of a numeric parameter, in the wire schema's bounds whatever the model:
    an inactive control is stored with the conversation too, so nothing outside them may pass
    even when it would not be sent. One without a default may be left blank (the model's)."""
    field_class = forms.IntegerField if spec.integer else forms.FloatField
    bounds: dict[str, Any] = {"min_value": spec.of(spec.low), "max_value": spec.of(spec.high)}
    return field_class(
        label=spec.label, required=spec.default is not None, initial=spec.default, **bounds
    )


def parameter_fields() -> dict[str, forms.Field]:
    return {spec.name: parameter_field(spec) for spec in parameters()}


class TurnSettingsForm(forms.Form):
    """The controls beside the composer. Ranges and either/or rules are not written here: the
    chosen model's profile checks the settings (`TurnSettings.problems`), so nothing the model
    would refuse is ever sent. The numeric parameters' fields come from their declarations
    (`parameter_fields`), after the sampling choice."""

    model = forms.CharField(required=False, max_length=MODEL_ID_MAX_CHARS)
    sampling = forms.ChoiceField(choices=sampling_choices, initial=SAMPLING_DEFAULT)
    reasoning_effort = forms.ChoiceField(choices=ReasoningEffort, initial=ReasoningEffort.OFF)
    # Blank means the model's default; the range is the profile's, checked in its words.
    max_tokens = forms.IntegerField(required=False)
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

    @classmethod
    def control_fields(cls) -> dict[str, forms.Field]:
        """Every control a frame may carry, by name (the declared fields and the parameters)."""
        return {**cls.base_fields, **parameter_fields()}

    def __init__(self, *args: Any, choice: ModelChoice, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.choice = choice
        fields = list(self.fields.items())
        at = [name for name, _ in fields].index("sampling") + 1
        self.fields = dict([*fields[:at], *parameter_fields().items(), *fields[at:]])

    def clean_model(self) -> str:
        model: str = self.cleaned_data.get("model") or ""
        if model and model not in self.choice.allowed_ids:
            raise forms.ValidationError("That model is not offered here; pick another.")
        return model

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        stops: list[str] = []
        for name in STOP_FIELDS:
            value = cleaned.get(name) or ""
            if value and not value.strip():
                self.add_error(name, "A stop sequence cannot be only spaces; leave it empty.")
            elif value and value not in stops:
                stops.append(value)
        cleaned["stop"] = tuple(stops)
        profile = self.choice.catalogue.profile(cleaned.get("model") or self.choice.current)
        if cleaned.get("max_tokens") is None and "max_tokens" not in self.errors:
            cleaned["max_tokens"] = profile.default_max_tokens
        if self.errors:
            return cleaned
        for field, problem in settings_of(cleaned).problems(profile).items():
            self.add_error(field if field in self.fields else None, problem)
        return cleaned


def settings_of(data: dict[str, Any], *, system_prompt: str | None = None) -> TurnSettings:
    return TurnSettings(
        model=data.get("model") or "",
        sampling=data["sampling"],
        values={spec.name: data[spec.name] for spec in parameters()},
        reasoning_effort=data["reasoning_effort"],
        max_tokens=data["max_tokens"],
        stop=data.get("stop", ()),
        system_prompt=system_prompt,
    )


class TurnForm(TurnSettingsForm):
    # Not required as a field: an empty message gets the same words as a blank one.
    message = forms.CharField(strip=False, required=False)
    # Whether the turn needs words; a message that carries files may be the files alone.
    text_required = True

    def clean_message(self) -> str:
        message: str = self.cleaned_data.get("message") or ""
        if not message.strip():
            if not self.text_required:
                return ""
            raise forms.ValidationError("Type a message before sending.")
        if len(message) > settings.CHAT_MAX_MESSAGE_CHARS:
            raise forms.ValidationError(
                f"That message is {len(message):,} characters long; the limit is "
                f"{settings.CHAT_MAX_MESSAGE_CHARS:,}. Shorten it or split it into parts."
            )
        return message


class TurnWithFilesForm(TurnForm):
    """A turn whose message carries attachments: the text may be left empty."""

    text_required = False


def form_error_text(form: forms.Form) -> str:
    """One readable sentence per problem, naming the control it concerns."""
    problems = []
    for field, errors in form.errors.items():
        label = form.fields[field].label or field.replace("_", " ").capitalize()
        for error in errors:
            problems.append(str(error) if field in ("message", "__all__") else f"{label}: {error}")
    return " ".join(problems)


def turn_settings_from(*, form: TurnSettingsForm, frame: dict[str, Any]) -> TurnSettings:
    """The validated controls of a turn. A frame without a system prompt leaves the
    conversation's as it is (None), rather than clearing it."""
    data = form.cleaned_data
    return settings_of(
        data, system_prompt=data["system_prompt"] if "system_prompt" in frame else None
    )


class PreferencesForm(TurnSettingsForm):
    """The per-user defaults a new conversation starts with."""

    # The numeric parameters follow the sampling choice.
    field_order = ["model", "system_prompt", "sampling"]

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
        offered: Sequence[Any] = self.choice.picker()
        self.fields["model"] = forms.ChoiceField(
            label="Model",
            required=False,
            choices=[(p.id, p.display_name) for p in offered],
        )
        self.fields["max_tokens"].label = "Max tokens"
        self.fields["max_tokens"].help_text = "Leave blank for the model's default."
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


class SwitchForm(forms.Form):
    """On or off, for pin and archive: explicit, so a repeated request changes nothing."""

    state = forms.ChoiceField(choices=[("on", "on"), ("off", "off")])

    @property
    def is_on(self) -> bool:
        return bool(self.cleaned_data["state"] == "on")


class FeedbackForm(forms.Form):
    """A rating (blank: take the feedback back) and an optional comment."""

    rating = forms.ChoiceField(
        choices=[("", "none"), *MessageFeedback.Rating.choices], required=False
    )
    comment = forms.CharField(
        required=False, max_length=MessageFeedback.COMMENT_MAX_CHARS, widget=forms.Textarea
    )


class SignupForm(UserCreationForm[User]):
    pass


def turn_form_checked(
    *, form_class: type[TurnSettingsForm], frame: dict[str, Any], choice: ModelChoice
) -> TurnSettingsForm:
    """A bound form, validated (sync: the profile may come from the database)."""
    form = form_class(data=frame, choice=choice)
    form.is_valid()
    return form
