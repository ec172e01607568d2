"""List filters of the conversation admin: metadata only, never content."""

from collections.abc import Iterator
from typing import Any

from django.contrib import admin
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.http import HttpRequest

from conversations.admin_filters import FixedChoicesFilter, YesNoFilter
from conversations.models import (
    Conversation,
    Message,
    MessageFeedback,
    ShareLink,
)
from conversations.sharing import selectors as sharing_selectors


def _has_row(rows: QuerySet[Any], *, to_conversation: str = "conversation") -> Exists:
    """The conversation has one of `rows`, which reach it through `to_conversation`."""
    return Exists(rows.filter(**{to_conversation: OuterRef("pk")}))


def _has_message(**lookup: object) -> Exists:
    """The conversation has a message that matches `lookup`."""
    return _has_row(Message.objects.filter(**lookup))


class _MessageFieldFilter(admin.SimpleListFilter):
    """Conversations with a message whose `field` is the chosen value: any value, or only one
    of `values` when they are set."""

    field: str
    values: list[str] | None = None

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[Conversation]
    ) -> QuerySet[Conversation]:
        value = self.value()
        if not value or (self.values is not None and value not in self.values):
            return queryset
        return queryset.filter(_has_message(**{self.field: value}))


class ModelFilter(_MessageFieldFilter):
    title = "model"
    parameter_name = "model"
    field = "model"

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]
    ) -> list[tuple[str, str]]:
        models = (
            Message.objects.exclude(model="")
            .order_by("model")
            .values_list("model", flat=True)
            .distinct()
        )
        return [(model, model) for model in models]


class MessageStatusFilter(_MessageFieldFilter, FixedChoicesFilter):
    title = "message status"
    parameter_name = "status"
    field = "status"
    values = Message.Status.values
    fixed_choices = tuple(Message.Status.choices)


class HasErrorFilter(YesNoFilter):
    title = "has error"
    parameter_name = "has_error"

    def condition(self) -> Q:
        return Q(_has_message(status=Message.Status.ERROR))


class NegativeFeedbackFilter(YesNoFilter):
    """Whether the owner rated any reply down: metadata only, the comments stay behind the gate."""

    title = "has negative feedback"
    parameter_name = "negative_feedback"

    def condition(self) -> Q:
        return Q(
            _has_row(
                MessageFeedback.objects.filter(rating=MessageFeedback.Rating.DOWN),
                to_conversation="message__conversation",
            )
        )


class SharedFilter(YesNoFilter):
    title = "shared (live link)"
    parameter_name = "shared"

    def condition(self) -> Q:
        return Q(_has_row(ShareLink.objects.filter(sharing_selectors.share_link_live_q())))


class FlaggedFilter(YesNoFilter):
    title = "flagged"
    parameter_name = "flagged"

    def condition(self) -> Q:
        return Q(review__flagged=True)


class ReviewedFilter(YesNoFilter):
    title = "reviewed"
    parameter_name = "reviewed"

    def condition(self) -> Q:
        return Q(review__reviewed_at__isnull=False)


class EmptyConversationFilter(FixedChoicesFilter):
    """Blank "New chat" rows (no message) only clutter the list: hidden unless asked for."""

    title = "messages"
    parameter_name = "empty"
    fixed_choices = (("include", "Including empty"), ("only", "Empty only"))

    def choices(self, changelist: Any) -> Iterator[Any]:
        for choice in super().choices(changelist):
            if choice["query_string"] == changelist.get_query_string(remove=[self.parameter_name]):
                choice["display"] = "With messages"
            yield choice

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[Conversation]
    ) -> QuerySet[Conversation]:
        has_messages = _has_message()
        if self.value() == "include":
            return queryset
        if self.value() == "only":
            return queryset.filter(~has_messages)
        return queryset.filter(has_messages)
