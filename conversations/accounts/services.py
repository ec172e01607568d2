"""Writes for a user's own settings and the usage ledger."""

import uuid
from decimal import Decimal

from django.contrib.auth.models import User
from django.utils import timezone

from conversations.gateway.profiles import STORED_FIELDS, TurnSettings
from conversations.models import Message, UsageRecord, UserPreferences


def preferences_update(*, user: User, settings: TurnSettings) -> UserPreferences:
    """The user's defaults for new conversations: their model, system prompt and parameters."""
    defaults: dict[str, object] = {name: getattr(settings, name) for name in STORED_FIELDS}
    defaults.update(model=settings.model, system_prompt=settings.system_prompt or "")
    preferences, _ = UserPreferences.objects.update_or_create(user=user, defaults=defaults)
    return preferences


def usage_reserve(*, reply: Message, owner: User) -> UsageRecord:
    """Open the ledger row of a reply being started, holding its max_tokens against the token
    quota until it settles. Call in the transaction that creates the reply."""
    return UsageRecord.objects.create(
        user=owner,
        username=owner.get_username(),
        conversation_uuid=reply.conversation_id,
        message_uuid=reply.id,
        model=reply.model,
        reserved_tokens=int(reply.request_params.get("max_tokens") or 0),
        started_at=timezone.now(),
    )


def usage_settle(
    *,
    message_id: uuid.UUID,
    status: str,
    prompt_tokens: int | None,
    completion_tokens: int | None,
    cost_usd: Decimal | None,
    estimated: bool,
) -> None:
    """Record what a reply used and release its reservation. Once: a second settle (a late
    duplicate of the final save) changes nothing."""
    UsageRecord.objects.filter(message_uuid=message_id, settled_at__isnull=True).update(
        status=status,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost_usd=cost_usd,
        estimated=estimated,
        settled_at=timezone.now(),
    )
