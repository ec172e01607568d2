from django import forms

from conversations.models import ShareLink
from conversations.sharing.services import ShareOptions

EXPIRY_CHOICES = ((0, "Never"), (1, "1 day"), (7, "7 days"), (30, "30 days"))


class ShareOptionsForm(forms.Form):
    include_system_prompt = forms.BooleanField(required=False, label="Include system prompt")
    include_thinking = forms.BooleanField(required=False, label="Include thinking")
    include_attachments = forms.BooleanField(required=False, label="Include attachments")
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
                "include_attachments": link.include_attachments,
                "visibility": link.visibility,
                "expiry_days": link.expiry_days,
            }
        )

    def options(self) -> ShareOptions:
        data = self.cleaned_data
        return ShareOptions(
            include_system_prompt=data["include_system_prompt"],
            include_thinking=data["include_thinking"],
            include_attachments=data["include_attachments"],
            visibility=data["visibility"],
            expiry_days=data["expiry_days"],
        )
