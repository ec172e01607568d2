"""Reads for staff review: usage totals and the transcript access log."""

import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypedDict

from django.contrib.auth.models import User
from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Subquery, Sum, Value
from django.db.models.expressions import CombinedExpression
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from conversations.models import Conversation, Message, ShareLink, TranscriptAccess, UsageRecord
from conversations.sharing.selectors import share_link_live_q

# Opening a transcript with a reason lets the same staff member reload it for this long.
TRANSCRIPT_ACCESS_TTL = datetime.timedelta(minutes=30)


def _token_sum() -> CombinedExpression:
    return Coalesce(Sum("prompt_tokens"), 0) + Coalesce(Sum("completion_tokens"), 0)


def usage_totals_for_conversation(*, conversation: Conversation) -> dict[str, Any]:
    return Message.objects.filter(conversation=conversation).aggregate(
        messages=Count("id"), tokens=_token_sum(), cost=Sum("cost_usd")
    )


def _ledger_token_sum() -> CombinedExpression:
    return Coalesce(Sum("prompt_tokens"), 0) + Coalesce(Sum("completion_tokens"), 0)


def usage_totals_by_user() -> list[dict[str, Any]]:
    """Per user, from the usage ledger: conversations, replies, tokens and cost, heaviest users
    first. Deleted conversations still count, and deleted accounts keep their line."""
    rows = (
        UsageRecord.objects.values("user_id", "username")
        .annotate(
            conversations=Count("conversation_uuid", distinct=True),
            replies=Count("id"),
            tokens=_ledger_token_sum(),
            cost=Sum("cost_usd"),
            estimated=Count("id", filter=Q(estimated=True)),
        )
        .order_by("-tokens", "username")
    )
    return [
        {
            "username": row["username"],
            "deleted": row["user_id"] is None,
            "conversations": row["conversations"],
            "replies": row["replies"],
            "tokens": row["tokens"],
            "cost": row["cost"],
            "estimated": row["estimated"],
        }
        for row in rows
    ]


def usage_tokens_per_day(*, days: int) -> list[tuple[datetime.date, int]]:
    """Tokens (prompt + completion) per UTC day for the last `days` days, zeros included, from
    the usage ledger."""
    today = timezone.now().date()
    start = today - datetime.timedelta(days=days - 1)
    rows = (
        UsageRecord.objects.filter(started_at__date__gte=start)
        .annotate(day=TruncDate("started_at"))
        .values("day")
        .annotate(tokens=_ledger_token_sum())
    )
    by_day = {row["day"]: row["tokens"] for row in rows}
    return [
        (start + datetime.timedelta(days=i), by_day.get(start + datetime.timedelta(days=i), 0))
        for i in range(days)
    ]


def transcript_access_recent_for_staff(
    *, conversation: Conversation, staff: User, access_id: int | str | None
) -> TranscriptAccess | None:
    """The staff member's own access entry for this conversation if it is fresh enough to
    show the transcript without asking for a reason again."""
    if not access_id:
        return None
    try:
        return TranscriptAccess.objects.get(
            id=access_id,
            conversation=conversation,
            staff=staff,
            accessed_at__gte=timezone.now() - TRANSCRIPT_ACCESS_TTL,
        )
    except (TranscriptAccess.DoesNotExist, ValueError, TypeError):
        return None


class ConversationTotals(TypedDict):
    message_total: int
    token_total: int
    cost_total: Decimal | None
    has_live_link: bool


if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations

    ConversationWithTotals = WithAnnotations[Conversation, ConversationTotals]


def conversation_with_totals(
    *, queryset: QuerySet[Conversation]
) -> "QuerySet[ConversationWithTotals]":
    """Annotate messages, tokens, cost and whether a live link exists. Subqueries rather than
    joins, so the admin's filters on messages cannot multiply the sums."""
    per_conversation = (
        Message.objects.filter(conversation=OuterRef("pk")).order_by().values("conversation")
    )
    return queryset.annotate(
        message_total=Coalesce(
            Subquery(per_conversation.annotate(n=Count("id")).values("n")), Value(0)
        ),
        token_total=Coalesce(
            Subquery(per_conversation.annotate(t=_token_sum()).values("t")), Value(0)
        ),
        cost_total=Subquery(per_conversation.annotate(c=Sum("cost_usd")).values("c")),
        has_live_link=Exists(
            ShareLink.objects.filter(share_link_live_q(), conversation=OuterRef("pk"))
        ),
    )


def content_search_recent_for_staff(
    *, staff: User, access_id: int | str | None, terms: str
) -> TranscriptAccess | None:
    """The staff member's own logged search for exactly these terms, if fresh enough to show
    its results without asking for a reason again."""
    if not access_id:
        return None
    try:
        return TranscriptAccess.objects.filter(
            id=access_id,
            staff=staff,
            kind=TranscriptAccess.Kind.SEARCH,
            search_terms=terms,
            accessed_at__gte=timezone.now() - TRANSCRIPT_ACCESS_TTL,
        ).first()
    except (ValueError, TypeError):
        return None
