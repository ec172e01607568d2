"""Pacing under load and batched checkpoints (the end-to-end behaviour of a reply is in
test_consumers.py)."""

import uuid
from typing import Any

import pytest
from channels.db import database_sync_to_async

from conversations.chat import services
from conversations.models import Message
from conversations.realtime import pacing, saving
from tests.support.factories import MODEL, turn_settings

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


async def test_the_flush_interval_stretches_with_load_up_to_its_cap(settings: Any) -> None:
    settings.CHAT_FLUSH_INTERVAL = 0.05
    settings.CHAT_FRAMES_PER_SECOND = 100
    settings.CHAT_FLUSH_INTERVAL_MAX = 0.15

    pauses = {count: pacing.flush_pause(streaming=count) for count in (1, 5, 10, 1000)}

    assert pauses == {1: 0.05, 5: 0.05, 10: 0.1, 1000: 0.15}


async def test_markdown_renders_share_a_budget_across_the_process(settings: Any) -> None:
    settings.CHAT_RENDER_INTERVAL = 0.3
    settings.CHAT_RENDERS_PER_SECOND = 20

    alone = pacing.render_pause(last_render=0.0, streaming=1)
    slow = pacing.render_pause(last_render=0.4, streaming=1)
    crowded = pacing.render_pause(last_render=0.0, streaming=200)

    assert (alone, slow, crowded) == (0.3, 0.8, 10.0)


def _streaming_reply(conversation_owner: Any) -> Message:
    conversation = services.conversation_create(owner=conversation_owner)
    return services.turn_start(
        conversation_id=conversation.id,
        owner=conversation_owner,
        content="Hi",
        settings=turn_settings(),
        model=MODEL,
    ).reply


async def test_checkpoints_due_together_are_written_in_one_batch(
    user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    replies = [await database_sync_to_async(_streaming_reply)(user) for _ in range(3)]
    batches: list[list[uuid.UUID]] = []
    write = services.replies_checkpoint

    def recorded(*, replies: dict[uuid.UUID, tuple[str, str]]) -> None:
        batches.append(list(replies))
        write(replies=replies)

    monkeypatch.setattr(services, "replies_checkpoint", recorded)
    writer = saving.Checkpointer()

    done = [writer.submit(r.id, f"text {i}", "") for i, r in enumerate(replies)]
    await done[0]

    assert all(future is done[0] for future in done)
    assert batches == [[r.id for r in replies]]
    saved = {m.id: m.content async for m in Message.objects.filter(role="assistant")}
    assert saved == {r.id: f"text {i}" for i, r in enumerate(replies)}


async def test_a_discarded_checkpoint_is_never_written(
    user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept, dropped = [await database_sync_to_async(_streaming_reply)(user) for _ in range(2)]
    writer = saving.Checkpointer()

    done = writer.submit(kept.id, "kept", "")
    writer.submit(dropped.id, "dropped", "")
    writer.discard(dropped.id)
    await done

    await kept.arefresh_from_db()
    await dropped.arefresh_from_db()
    assert kept.content == "kept"
    assert dropped.content == ""
