"""Per-user rate limit and daily quotas, and sign-in throttling.

Counting is done in the usage ledger (`UsageRecord`), so every server process sees the same
numbers and deleting conversations gives nothing back: a reply is one "message" (a send, a
retry or a regenerate each make Claude write one), and its tokens are the prompt plus
completion tokens the gateway reported. A reply still being written holds its max_tokens as a
reservation until it settles, so concurrent replies cannot overrun the token quota.
"""

import dataclasses
import datetime
import math
import re
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.utils import timezone
from django.utils.translation import ngettext

from conversations.models import LoginThrottle, Message, UsageRecord, UserQuota

# The share of a daily allowance under which the quota line shows without being asked for.
LOW_QUOTA_SHARE = 0.2

MINUTE = datetime.timedelta(minutes=1)


class LimitReached(Exception):
    """The user may not start another reply now; the message says why and until when."""


@dataclass(frozen=True, slots=True)
class Limits:
    """0 means no limit."""

    per_minute: int
    per_day: int
    tokens_per_day: int


@dataclass(frozen=True, slots=True)
class QuotaUsage:
    limits: Limits
    messages_last_minute: int
    messages_today: int
    tokens_today: int
    day_ends_at: datetime.datetime
    # max_tokens held by replies still being written today.
    tokens_reserved: int = 0

    @property
    def messages_left_today(self) -> int | None:
        if not self.limits.per_day:
            return None
        return max(0, self.limits.per_day - self.messages_today)

    @property
    def tokens_left_today(self) -> int | None:
        if not self.limits.tokens_per_day:
            return None
        return max(0, self.limits.tokens_per_day - self.tokens_today)

    @property
    def running_low(self) -> bool:
        """Under a fifth of a daily allowance left: the page shows the quota line unasked."""
        pairs = (
            (self.messages_left_today, self.limits.per_day),
            (self.tokens_left_today, self.limits.tokens_per_day),
        )
        return any(left is not None and left < total * LOW_QUOTA_SHARE for left, total in pairs)

    @property
    def summary(self) -> str:
        """What the page shows beside the composer."""
        parts = []
        if self.limits.per_day:
            parts.append(
                ngettext(
                    "%(left)s of %(total)s message left today",
                    "%(left)s of %(total)s messages left today",
                    self.limits.per_day,
                )
                % {"left": f"{self.messages_left_today:,}", "total": f"{self.limits.per_day:,}"}
            )
        if self.limits.tokens_per_day:
            parts.append(
                ngettext(
                    "%(left)s of %(total)s token left today",
                    "%(left)s of %(total)s tokens left today",
                    self.limits.tokens_per_day,
                )
                % {
                    "left": f"{self.tokens_left_today:,}",
                    "total": f"{self.limits.tokens_per_day:,}",
                }
            )
        return " · ".join(parts)


def limits_for_user(
    *, user: User, quota: UserQuota | None = None, quota_read: bool = False
) -> Limits:
    """The user's limits: the staff's overrides, else defaults. `quota` is read here unless the
    caller has read it already (`quota_read`: then None means the user has no overrides)."""
    if quota is None and not quota_read:
        quota = UserQuota.objects.filter(user=user).first()

    def pick(override: int | None, default: int) -> int:
        return default if override is None else override

    return Limits(
        per_minute=pick(
            quota.messages_per_minute if quota else None, settings.CHAT_RATE_LIMIT_PER_MINUTE
        ),
        per_day=pick(quota.messages_per_day if quota else None, settings.CHAT_DAILY_MESSAGE_QUOTA),
        tokens_per_day=pick(
            quota.tokens_per_day if quota else None, settings.CHAT_DAILY_TOKEN_QUOTA
        ),
    )


def _day_bounds(now: datetime.datetime) -> tuple[datetime.datetime, datetime.datetime]:
    local = timezone.localtime(now)
    start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + datetime.timedelta(days=1)


def quota_usage_for_user(
    *,
    user: User,
    now: datetime.datetime | None = None,
    quota: UserQuota | None = None,
    quota_read: bool = False,
) -> QuotaUsage:
    now = now or timezone.now()
    day_start, day_end = _day_bounds(now)
    # A reservation holds while its reply is still being written: one whose process died (the
    # recovery sweep marks it interrupted) or whose conversation was deleted holds no more, and
    # none outlives CHAT_USAGE_RESERVATION_SECONDS.
    reservations = datetime.timedelta(seconds=settings.CHAT_USAGE_RESERVATION_SECONDS)
    today, last_minute, tokens, reserved = _ledger_counts(
        user_id=user.pk,
        day_start=day_start,
        minute_ago=now - MINUTE,
        reservations_since=now - reservations,
    )
    return QuotaUsage(
        limits=limits_for_user(user=user, quota=quota, quota_read=quota_read),
        messages_last_minute=last_minute,
        messages_today=today,
        tokens_today=tokens,
        day_ends_at=day_end,
        tokens_reserved=reserved,
    )


def _ledger_counts(
    *,
    user_id: int,
    day_start: datetime.datetime,
    minute_ago: datetime.datetime,
    reservations_since: datetime.datetime,
) -> tuple[int, int, int, int]:
    """The user's replies today and in the last minute, their settled tokens today, and the
    tokens still reserved by replies being written, in one statement.

    Written out rather than composed by the ORM: every turn start runs it, and as filtered
    aggregates over an EXISTS the ORM spent ~5 ms of CPU building it against well under one
    for the database to answer it, which a burst of sends paid once per turn, one after another
    on the GIL."""
    ledger = connection.ops.quote_name(UsageRecord._meta.db_table)
    messages = connection.ops.quote_name(Message._meta.db_table)
    sql = f"""
        SELECT
            COALESCE(SUM(CASE WHEN u.started_at >= %(day)s THEN 1 ELSE 0 END), 0),
            COALESCE(SUM(CASE WHEN u.started_at > %(minute)s THEN 1 ELSE 0 END), 0),
            COALESCE(SUM(CASE WHEN u.started_at >= %(day)s AND u.settled_at IS NOT NULL
                THEN COALESCE(u.prompt_tokens, 0) + COALESCE(u.completion_tokens, 0)
                ELSE 0 END), 0),
            COALESCE(SUM(CASE WHEN u.started_at >= %(day)s AND u.settled_at IS NULL
                AND u.started_at > %(reservations)s
                AND EXISTS (
                    SELECT 1 FROM {messages} m
                    WHERE m.id = u.message_uuid AND m.status = %(streaming)s
                )
                THEN u.reserved_tokens ELSE 0 END), 0)
        FROM {ledger} u
        WHERE u.user_id = %(user)s AND u.started_at >= %(since)s
    """
    moment = connection.ops.adapt_datetimefield_value
    params = {
        "day": moment(day_start),
        "minute": moment(minute_ago),
        "reservations": moment(reservations_since),
        "streaming": Message.Status.STREAMING.value,
        "user": user_id,
        "since": moment(min(day_start, minute_ago)),
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    today_count, minute_count, tokens, reserved = (int(value) for value in row)
    return today_count, minute_count, tokens, reserved


# Claude's tokenizer averages a little under four characters of English per token; an estimate
# that errs towards charging more is the safe side of a quota.
CHARS_PER_TOKEN_ESTIMATE = 3.5


@dataclass(frozen=True, slots=True)
class UsageEstimate:
    prompt_tokens: int
    completion_tokens: int


# What Claude counts for an attachment it reads: an image is at most about 1,600 tokens (it is
# scaled to about 1.15 megapixels, width × height / 750); a PDF page 1,500 to 3,000 tokens of
# text plus its page image. The base64 they travel in says nothing about either.
IMAGE_TOKENS_ESTIMATE = 1600
PDF_PAGE_TOKENS_ESTIMATE = 3000
_IMAGE_PART_TYPES = frozenset({"image_url", "image"})
_DOCUMENT_PART_TYPES = frozenset({"file", "document"})
# The line naming a message's files says how many pages each PDF has ("r.pdf (PDF, 3 pages)").
_PDF_PAGES = re.compile(r"\(PDF, (\d{1,4}) pages?\)")


def files_tokens_estimate(*, images: int, pdf_pages: int) -> int:
    """Tokens Claude counts for images and PDF pages, whether or not they were sent yet."""
    return IMAGE_TOKENS_ESTIMATE * images + PDF_PAGE_TOKENS_ESTIMATE * pdf_pages


def _prompt_tokens_estimate(messages: Any) -> int:
    if not isinstance(messages, list):
        return 0
    chars = tokens = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            chars += len(content)
            continue
        if not isinstance(content, list):
            continue
        texts = [
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        ]
        chars += sum(len(text) for text in texts)
        kinds = [p.get("type") for p in content if isinstance(p, dict)]
        documents = sum(kind in _DOCUMENT_PART_TYPES for kind in kinds)
        pages = [int(n) for text in texts for n in _PDF_PAGES.findall(text)] if documents else []
        tokens += files_tokens_estimate(
            images=sum(kind in _IMAGE_PART_TYPES for kind in kinds),
            pdf_pages=max(sum(pages), documents),
        )
    return tokens + math.ceil(chars / CHARS_PER_TOKEN_ESTIMATE)


def usage_estimate(*, payload: dict[str, Any], written: str) -> UsageEstimate:
    """Tokens of a reply whose stream ended without a usage report (Stop, a dropped stream),
    estimated from the request's messages and the text written so far. Attachments count as
    Claude counts them, not by the length of their base64."""
    return UsageEstimate(
        prompt_tokens=_prompt_tokens_estimate(payload.get("messages")),
        completion_tokens=math.ceil(len(written) / CHARS_PER_TOKEN_ESTIMATE),
    )


def _wait_text(seconds: float) -> str:
    seconds = max(1, math.ceil(seconds))
    if seconds < 60:
        return f"{seconds} s"
    hours, minutes = divmod(math.ceil(seconds / 60), 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def turn_allowance_check(*, user: User, max_tokens: int = 0) -> QuotaUsage:
    """Raise LimitReached if the user may not start a reply of up to `max_tokens` now; else
    return the usage counting the reply about to be created.

    Call inside the transaction that creates the reply (and its ledger row): the user's own row
    is locked, so two sends at once (from any processes) are counted one after the other, never
    both let through. The user's row rather than a quota row, which need not exist.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("turn_allowance_check must run inside the reply's transaction")
    # One statement: lock the user's row and read their overrides beside it.
    locked = (
        get_user_model()
        .objects.select_for_update(of=("self",))
        .select_related("chat_quota")
        .only("pk", "chat_quota")
        .get(pk=user.pk)
    )
    try:
        quota: UserQuota | None = locked.chat_quota
    except UserQuota.DoesNotExist:
        quota = None
    now = timezone.now()
    usage = quota_usage_for_user(user=user, now=now, quota=quota, quota_read=True)
    limits = usage.limits
    if limits.per_minute and usage.messages_last_minute >= limits.per_minute:
        oldest = (
            UsageRecord.objects.filter(user=user, started_at__gt=now - MINUTE)
            .order_by("started_at")
            .values_list("started_at", flat=True)
            .first()
        )
        wait = (oldest + MINUTE - now).total_seconds() if oldest else 60
        raise LimitReached(
            ngettext(
                "You are sending messages too quickly: the limit is %(count)s message per minute.",
                "You are sending messages too quickly: the limit is %(count)s messages per minute.",
                limits.per_minute,
            )
            % {"count": limits.per_minute}
            + f" Try again in {_wait_text(wait)}. Nothing was sent."
        )
    # The daily quotas, each with its sentence written out whole so that it can be translated.
    for limit, spent, used_up in (
        (
            limits.per_day,
            usage.messages_today,
            ngettext(
                "You have used your %(count)s message for today.",
                "You have used all %(count)s messages for today.",
                limits.per_day,
            ),
        ),
        (
            limits.tokens_per_day,
            usage.tokens_today,
            ngettext(
                "You have used your %(count)s token of today's quota.",
                "You have used all %(count)s tokens of today's quota.",
                limits.tokens_per_day,
            ),
        ),
    ):
        if limit and spent >= limit:
            resets = _wait_text((usage.day_ends_at - now).total_seconds())
            raise LimitReached(
                used_up
                % {"count": f"{limit:,}"}
                + f" The quota resets at midnight {settings.TIME_ZONE} (in {resets}). "
                "Nothing was sent."
            )
    if (
        limits.tokens_per_day
        and usage.tokens_reserved
        and usage.tokens_today + usage.tokens_reserved + max_tokens > limits.tokens_per_day
    ):
        # One reply may run past what is left (it would be refused for nothing otherwise);
        # a second one at the same time may not.
        raise LimitReached(
            "Your replies still being written may use the rest of today's token quota. Try "
            "again when they have finished. Nothing was sent."
        )
    return dataclasses.replace(
        usage,
        messages_last_minute=usage.messages_last_minute + 1,
        messages_today=usage.messages_today + 1,
    )


# Sign-in throttling.


def _login_keys(*, username: str, address: str) -> list[tuple[str, int]]:
    keys = [(f"user:{username.strip().lower()[:150]}|{address}", settings.LOGIN_MAX_FAILURES)]
    if settings.LOGIN_MAX_FAILURES_PER_ADDRESS:
        keys.append((f"addr:{address}", settings.LOGIN_MAX_FAILURES_PER_ADDRESS))
    return keys


def login_locked_for(*, username: str, address: str) -> float:
    """Seconds until sign-in is allowed again for this username and address (0: allowed)."""
    now = timezone.now()
    keys = [key for key, _ in _login_keys(username=username, address=address)]
    locked = LoginThrottle.objects.filter(key__in=keys, locked_until__gt=now).values_list(
        "locked_until", flat=True
    )
    return max(
        ((until - now).total_seconds() for until in locked if until is not None), default=0.0
    )


def login_failure_record(*, username: str, address: str) -> None:
    now = timezone.now()
    window = datetime.timedelta(seconds=settings.LOGIN_LOCK_SECONDS)
    with transaction.atomic():
        for key, max_failures in _login_keys(username=username, address=address):
            throttle, _ = LoginThrottle.objects.select_for_update().get_or_create(
                key=key, defaults={"window_started_at": now}
            )
            if throttle.window_started_at < now - window:
                throttle.failures, throttle.window_started_at = 0, now
            throttle.failures += 1
            if throttle.failures >= max_failures:
                throttle.locked_until = now + window
            throttle.save()


def login_success_record(*, username: str, address: str) -> None:
    key = _login_keys(username=username, address=address)[0][0]
    LoginThrottle.objects.filter(key=key).delete()


def lock_wait_text(seconds: float) -> str:
    return _wait_text(seconds)


# Sign-up throttling: accounts created per client address.


def signup_wait_for(*, address: str) -> float:
    """Seconds until another account may be created from this address (0: now)."""
    if not settings.SIGNUP_MAX_PER_ADDRESS:
        return 0.0
    now = timezone.now()
    throttle = LoginThrottle.objects.filter(key=f"signup:{address}").first()
    if throttle is None or throttle.window_started_at < now - _signup_window():
        return 0.0
    if throttle.failures < settings.SIGNUP_MAX_PER_ADDRESS:
        return 0.0
    return (throttle.window_started_at + _signup_window() - now).total_seconds()


def signup_record(*, address: str) -> None:
    now = timezone.now()
    with transaction.atomic():
        throttle, _ = LoginThrottle.objects.select_for_update().get_or_create(
            key=f"signup:{address}", defaults={"window_started_at": now}
        )
        if throttle.window_started_at < now - _signup_window():
            throttle.failures, throttle.window_started_at = 0, now
        throttle.failures += 1
        throttle.save()


def _signup_window() -> datetime.timedelta:
    return datetime.timedelta(seconds=settings.SIGNUP_WINDOW_SECONDS)
