"""Existing databases migrate with nothing lost.

The database is taken back to the schema of the first release (migration 0002), filled through
that release's own historical models, then migrated forward to today's code; every row and every
field it had must come back unchanged.
"""

import datetime
from decimal import Decimal
from typing import Any

import pytest
from django.apps import apps as current_apps
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

FIRST_RELEASE = [("conversations", "0002_workspace_sharing_limits")]
NOW = timezone.now().replace(microsecond=0)


def _rows(old_apps: Any) -> dict[str, list[dict[str, Any]]]:
    """Insert one of everything the first release stored; return what was written, per model."""
    user_model = old_apps.get_model("auth", "User")
    Conversation = old_apps.get_model("conversations", "Conversation")
    Message = old_apps.get_model("conversations", "Message")
    ShareLink = old_apps.get_model("conversations", "ShareLink")
    ConversationReview = old_apps.get_model("conversations", "ConversationReview")
    TranscriptAccess = old_apps.get_model("conversations", "TranscriptAccess")
    UserPreferences = old_apps.get_model("conversations", "UserPreferences")
    UserQuota = old_apps.get_model("conversations", "UserQuota")
    LoginThrottle = old_apps.get_model("conversations", "LoginThrottle")

    owner = user_model.objects.create(username="old-owner", password="!")
    staff = user_model.objects.create(username="old-staff", password="!", is_staff=True)
    conversation = Conversation.objects.create(
        owner=owner,
        title="Migrated chat",
        system_prompt="Be brief.",
        sampling="top_p",
        temperature=0.3,
        top_p=0.9,
        reasoning_effort="medium",
        max_tokens=2048,
        stop_sequences=["END"],
    )
    question = Message.objects.create(
        conversation=conversation, role="user", content="What is 2 + 2?", status="complete"
    )
    answer = Message.objects.create(
        conversation=conversation,
        parent=question,
        role="assistant",
        content="**4**",
        content_html="<p><strong>4</strong></p>",
        reasoning="Add them.",
        status="complete",
        finish_reason="stop",
        refusal="",
        citations=[{"url": "https://example.com/", "title": "Sums"}],
        model="anthropic/claude-sonnet-4.5",
        request_params={"max_tokens": 2048, "top_p": 0.9},
        prompt_tokens=12,
        completion_tokens=3,
        reasoning_tokens=2,
        cached_tokens=0,
        cost_usd=Decimal("0.000081"),
        time_to_first_token_ms=420,
        duration_ms=900,
        worker_id="host:1:abc",
        heartbeat_at=NOW,
    )
    failed = Message.objects.create(
        conversation=conversation,
        parent=question,
        role="assistant",
        content="Partial",
        status="error",
        error="The gateway failed.",
    )
    conversation.active_leaf = answer
    conversation.save()
    link = ShareLink.objects.create(
        conversation=conversation,
        token="t" * 43,
        token_digest="d" * 64,
        include_system_prompt=True,
        include_thinking=False,
        visibility="signed_in",
        expiry_days=7,
        expires_at=NOW + datetime.timedelta(days=7),
        view_count=3,
        title="Migrated chat",
        system_prompt="Be brief.",
        messages=[{"role": "user", "content": "What is 2 + 2?"}],
        snapshot_at=NOW,
    )
    review = ConversationReview.objects.create(
        conversation=conversation,
        flagged=True,
        flagged_at=NOW,
        flagged_by=staff,
        note="Checked.",
        reviewed_at=NOW,
        reviewed_by=staff,
    )
    access = TranscriptAccess.objects.create(
        conversation=conversation,
        conversation_uuid=conversation.id,
        conversation_title="Migrated chat",
        staff=staff,
        staff_username="old-staff",
        kind="view",
        reason="Abuse report 7",
    )
    preferences = UserPreferences.objects.create(
        user=owner,
        system_prompt="Answer in French.",
        sampling="temperature",
        temperature=0.5,
        top_p=1.0,
        reasoning_effort="low",
        max_tokens=1000,
    )
    quota = UserQuota.objects.create(
        user=owner, messages_per_minute=5, messages_per_day=50, tokens_per_day=9999, note="Trial"
    )
    throttle = LoginThrottle.objects.create(
        key="user:old-owner|127.0.0.1", failures=2, window_started_at=NOW
    )
    written: dict[str, list[dict[str, Any]]] = {}
    for instance in (
        conversation,
        question,
        answer,
        failed,
        link,
        review,
        access,
        preferences,
        quota,
        throttle,
    ):
        model = type(instance)
        # Fresh from the database, so auto fields and defaults are as stored.
        stored = model.objects.filter(pk=instance.pk).values().get()
        written.setdefault(model._meta.model_name, []).append(stored)
    return written


@pytest.mark.django_db(transaction=True)
def test_a_first_release_database_migrates_with_every_row_and_field_intact() -> None:
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes()
    executor.migrate(FIRST_RELEASE)
    executor.loader.build_graph()
    written = _rows(executor.loader.project_state(FIRST_RELEASE).apps)

    executor = MigrationExecutor(connection)
    executor.migrate(latest)

    for model_name, rows in written.items():
        model = current_apps.get_model("conversations", model_name)
        for row in rows:
            now = model.objects.filter(pk=row[model._meta.pk.attname]).values(*row).get()
            assert now == row, f"{model_name} {row[model._meta.pk.attname]} changed"
    # Upgrading resets no quota: every earlier reply opens the usage ledger.
    ledger = current_apps.get_model("conversations", "UsageRecord")
    replies = [row for row in written["message"] if row["role"] == "assistant"]
    assert sorted(ledger.objects.values_list("message_uuid", flat=True)) == sorted(
        row["id"] for row in replies
    )
