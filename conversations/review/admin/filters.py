"""List filters of the conversation admin: metadata only, never content."""

from collections.abc import Iterator
from typing import Any

from django.contrib import admin
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.http import HttpRequest

from conversations.models import (
    Conversation,
    Message,
    MessageFeedback,
    ShareLink,
)
from conversations.sharing import selectors as sharing_selectors


class _YesNoFilter(admin.SimpleListFilter):
    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]
    ) -> list[tuple[str, str]]:
        return [("yes", "Yes"), ("no", "No")]

    def condition(self) -> Q:
        raise NotImplementedError

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[Conversation]
    ) -> QuerySet[Conversation]:
        if self.value() == "yes":
            return queryset.filter(self.condition())
        if self.value() == "no":
            return queryset.exclude(self.condition())
        return queryset


class ModelFilter(admin.SimpleListFilter):
    title = "model"
    parameter_name = "model"

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

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[Conversation]
    ) -> QuerySet[Conversation]:
        if self.value():
            return queryset.filter(
                Exists(Message.objects.filter(conversation=OuterRef("pk"), model=self.value()))
            )
        return queryset


class MessageStatusFilter(admin.SimpleListFilter):
    title = "message status"
    parameter_name = "status"

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]
    ) -> list[tuple[str, str]]:
        return list(Message.Status.choices)

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[Conversation]
    ) -> QuerySet[Conversation]:
        if self.value() in Message.Status.values:
            return queryset.filter(
                Exists(Message.objects.filter(conversation=OuterRef("pk"), status=self.value()))
            )
        return queryset


class HasErrorFilter(_YesNoFilter):
    title = "has error"
    parameter_name = "has_error"

    def condition(self) -> Q:
        return Q(
            Exists(Message.objects.filter(conversation=OuterRef("pk"), status=Message.Status.ERROR))
        )


class NegativeFeedbackFilter(_YesNoFilter):
    """Whether the owner rated any reply down: metadata only, the comments stay behind the gate."""

    title = "has negative feedback"
    parameter_name = "negative_feedback"

    def condition(self) -> Q:
        return Q(
            Exists(
                MessageFeedback.objects.filter(
                    message__conversation=OuterRef("pk"), rating=MessageFeedback.Rating.DOWN
                )
            )
        )


class SharedFilter(_YesNoFilter):
    title = "shared (live link)"
    parameter_name = "shared"

    def condition(self) -> Q:
        return Q(
            Exists(
                ShareLink.objects.filter(
                    sharing_selectors.share_link_live_q(), conversation=OuterRef("pk")
                )
            )
        )


class FlaggedFilter(_YesNoFilter):
    title = "flagged"
    parameter_name = "flagged"

    def condition(self) -> Q:
        return Q(review__flagged=True)


class ReviewedFilter(_YesNoFilter):
    title = "reviewed"
    parameter_name = "reviewed"

    def condition(self) -> Q:
        return Q(review__reviewed_at__isnull=False)


class EmptyConversationFilter(admin.SimpleListFilter):
    """Blank "New chat" rows (no message) only clutter the list: hidden unless asked for."""

    title = "messages"
    parameter_name = "empty"

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]
    ) -> list[tuple[str, str]]:
        return [("include", "Including empty"), ("only", "Empty only")]

    def choices(self, changelist: Any) -> Iterator[Any]:
        for choice in super().choices(changelist):
            if choice["query_string"] == changelist.get_query_string(remove=[self.parameter_name]):
                choice["display"] = "With messages"
            yield choice

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[Conversation]
    ) -> QuerySet[Conversation]:
        has_messages = Exists(Message.objects.filter(conversation=OuterRef("pk")))
        if self.value() == "include":
            return queryset
        if self.value() == "only":
            return queryset.filter(~has_messages)
        return queryset.filter(has_messages)
