"""What starting a turn costs the database: all of it runs before the model is asked, once per
Enter, so every statement is on the first token's path, and in a burst on everyone's."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from conversations.chat import consumers, selectors, services
from conversations.models import Conversation
from tests.support.factories import exchange, finish, turn_settings

# Lock the conversation; one look at its state (a reply streaming, the sidebar, siblings); the
# quota (lock, count); two inserts and an update; claim the reply; its path for the request.
# Transaction control (BEGIN/COMMIT) is counted where the backend reports it (SQLite).
TURN_START_STATEMENTS = 10


def _turn_start(conversation: Conversation, user: Any, content: str) -> consumers.TurnStart:
    return consumers._turn_start(
        conversation_id=conversation.id,
        owner=user,
        content=content,
        turn_settings=turn_settings(),
        model="test-model",
    )


def _statements(queries: CaptureQueriesContext) -> list[str]:
    return [
        q["sql"] for q in queries.captured_queries if not q["sql"].startswith(("BEGIN", "COMMIT"))
    ]


@pytest.mark.django_db(transaction=True)
def test_a_later_turn_starts_within_the_statement_budget(user: Any) -> None:
    conversation = services.conversation_create(owner=user)
    exchange(conversation, "Hi", "Hello!")
    conversation.refresh_from_db()

    with CaptureQueriesContext(connection) as queries:
        turn = _turn_start(conversation, user, "And now?")

    statements = _statements(queries)
    assert len(statements) <= TURN_START_STATEMENTS, "\n".join(statements)
    assert turn.started.reply.status == "streaming"


@pytest.mark.django_db(transaction=True)
def test_a_new_turn_is_version_one_of_one_without_a_versions_query(user: Any) -> None:
    conversation = services.conversation_create(owner=user)
    exchange(conversation, "Hi", "Hello!")
    conversation.refresh_from_db()

    turn = _turn_start(conversation, user, "Next")

    assert turn.started.without_siblings
    computed = selectors.messages_with_versions(
        messages=[turn.started.user_message, turn.started.reply]
    )
    assert [(m.version.index, m.version.count) for m in computed] == [(1, 1), (1, 1)]


@pytest.mark.django_db(transaction=True)
def test_a_turn_under_a_leaf_with_children_gets_its_versions_counted(user: Any) -> None:
    # A leaf with a child can only come from a tree built outside the usual path; the frame
    # must still show the true versions rather than assume 1 of 1.
    conversation = services.conversation_create(owner=user)
    _, reply = exchange(conversation, "Hi", "Hello!")
    conversation.refresh_from_db()
    first = _turn_start(conversation, user, "One")
    finish(first.started.reply, "done")
    Conversation.objects.filter(id=conversation.id).update(active_leaf=reply)
    conversation.refresh_from_db()

    second = _turn_start(conversation, user, "Two")

    assert not second.started.without_siblings
    assert '<span class="version-label">2/2</span>' in second.frame


@pytest.mark.django_db(transaction=True)
def test_a_second_turn_while_a_reply_streams_is_refused(user: Any) -> None:
    conversation = services.conversation_create(owner=user)
    _turn_start(conversation, user, "First")

    with pytest.raises(services.TurnRefused, match="still being written"):
        _turn_start(conversation, user, "Second")


@pytest.mark.parametrize("moves", [True, False])
@pytest.mark.django_db(transaction=True)
def test_the_sidebar_moves_only_when_the_conversation_is_not_on_top(user: Any, moves: bool) -> None:
    older = services.conversation_create(owner=user)
    exchange(older, "Hi", "Hello!")
    newer = services.conversation_create(owner=user)
    exchange(newer, "Hi", "Hello!")
    Conversation.objects.filter(id=older.id).update(
        updated_at=Conversation.objects.get(id=newer.id).updated_at
        + (-1 if moves else 1) * datetime.timedelta(seconds=5)
    )
    older.refresh_from_db()

    turn = _turn_start(older, user, "Again")

    assert turn.started.sidebar_moves is moves
