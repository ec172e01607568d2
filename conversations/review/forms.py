"""Forms of the staff review pages."""

from django import forms


class TranscriptReasonForm(forms.Form):
    reason = forms.CharField(
        label="Why are you opening this transcript?",
        min_length=5,
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Recorded in the transcript access log with your name and the time.",
    )


class ReviewForm(forms.Form):
    note = forms.CharField(
        label="Review note (shown to the owner)",
        required=False,
        max_length=5000,
        widget=forms.Textarea(attrs={"rows": 4}),
    )
    flagged = forms.BooleanField(label="Flagged", required=False)
