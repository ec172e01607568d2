from typing import Any

from django import forms

from conversations.chat.services import ShareOptions
from conversations.models import ShareLink

EXPIRY_CHOICES = [(0, "Never"), (1, "1 day"), (7, "7 days"), (30, "30 days")]


class ShareOptionsForm(forms.Form):
    include_system_prompt = forms.BooleanField(required=False, label="Include system prompt")
    include_thinking = forms.BooleanField(required=False, label="Include thinking")
    visibility = forms.ChoiceField(
        choices=ShareLink.Visibility, initial=ShareLink.Visibility.ANYONE, label="Who can open it"
    )
    expiry_days = forms.TypedChoiceField(
        choices=EXPIRY_CHOICES, coerce=int, initial=0, label="Link expires"
    )

    @classmethod
    def for_link(cls, link: ShareLink | None) -> "ShareOptionsForm":
        if link is None:
            return cls()
        return cls(
            initial={
                "include_system_prompt": link.include_system_prompt,
                "include_thinking": link.include_thinking,
                "visibility": link.visibility,
                "expiry_days": link.expiry_days,
            }
        )

    def options(self) -> ShareOptions:
        data = self.cleaned_data
        return ShareOptions(
            include_system_prompt=data["include_system_prompt"],
            include_thinking=data["include_thinking"],
            visibility=data["visibility"],
            expiry_days=data["expiry_days"],
        )


class TranscriptReasonForm(forms.Form):
    reason = forms.CharField(
        label="Why are you opening this transcript?",
        min_length=5,
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Recorded in the transcript access log with your name and the time.",
    )


class ExportReasonForm(TranscriptReasonForm):
    """The same gate as opening a transcript, asked in the words of an export."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["reason"].label = "Why are you exporting these transcripts?"


class ReviewForm(forms.Form):
    note = forms.CharField(
        label="Review note (shown to the owner)",
        required=False,
        max_length=5000,
        widget=forms.Textarea(attrs={"rows": 4}),
    )
    flagged = forms.BooleanField(label="Flagged", required=False)
