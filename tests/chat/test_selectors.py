import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser
from django.db import connection

from conversations.chat import selectors, services
from conversations.chat.plain_text import markdown_plain
from conversations.models import Conversation, Message
from tests.support.factories import MODEL, exchange, finish, regenerated, turn_settings

pytestmark = pytest.mark.django_db


def _versions(window: selectors.ThreadWindow) -> list[tuple[str, int, int]]:
    return [(m.content, m.version.index, m.version.count) for m in window.messages]


@contextmanager
def _statements() -> Iterator[list[tuple[str, Any]]]:
    """The SQL and parameters of every query run inside the block."""
    statements: list[tuple[str, Any]] = []

    def record(execute, sql, params, many, context):
        statements.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        yield statements


def _rows_returned(statements: list[tuple[str, Any]]) -> list[int]:
    # Run again afterwards: a cursor wrapper can't count what the code under test fetches.
    counts = []
    with connection.cursor() as cursor:
        for sql, params in statements:
            cursor.execute(sql, params)
            counts.append(len(cursor.fetchall()))
    return counts


def test_thread_window_shows_the_branch_with_versions(conversation: Conversation) -> None:
    asked, first = exchange(conversation, "Hi", "Hello!")
    second = regenerated(conversation, first, "Hey!")
    conversation.refresh_from_db()

    window = selectors.thread_window(conversation=conversation)

    assert _versions(window) == [("Hi", 1, 1), ("Hey!", 2, 2)]
    version = window.messages[1].version
    assert version.previous_id == first.id
    assert version.next_id is None
    assert window.older_than is None
    assert window.messages[0].id == asked.id
    assert second.id == window.messages[1].id


def test_versions_of_an_edited_message_page_between_branches(conversation: Conversation):
    first_q, _ = exchange(conversation, "Hi", "Hello!")
    _, reply = services.turn_edit(
        conversation_id=conversation.id,
        owner=conversation.owner,
        message_id=first_q.id,
        content="Hey",
        settings=turn_settings(),
        model=MODEL,
    )
    finish(reply, "Hey yourself")
    conversation.refresh_from_db()

    window = selectors.thread_window(conversation=conversation)

    assert _versions(window) == [("Hey", 2, 2), ("Hey yourself", 1, 1)]
    assert window.messages[0].version.previous_id == first_q.id


def test_a_continuation_is_not_a_version_of_a_later_user_message(conversation: Conversation):
    _, stopped = exchange(conversation, "Write", "Once", status=Message.Status.STOPPED)
    exchange(conversation, "Never mind", "OK.")
    services.branch_switch(
        conversation_id=conversation.id, owner=conversation.owner, message_id=stopped.id
    )
    more = services.reply_redo(
        how=services.Redo.CONTINUE,
        conversation_id=conversation.id,
        owner=conversation.owner,
        reply_id=stopped.id,
        settings=turn_settings(),
        model=MODEL,
    )
    finish(more, " upon a time")
    conversation.refresh_from_db()

    window = selectors.thread_window(conversation=conversation)

    assert _versions(window) == [("Write", 1, 1), ("Once", 1, 1), (" upon a time", 1, 1)]


def test_long_conversations_render_only_a_window_and_page_back(conversation: Conversation):
    for turn in range(30):
        exchange(conversation, f"q{turn}", f"a{turn}")
    conversation.refresh_from_db()

    window = selectors.thread_window(conversation=conversation, size=50)
    older = selectors.thread_window(conversation=conversation, before=window.older_than, size=50)

    assert len(window.messages) == 50
    assert window.messages[0].content == "q5"
    assert window.messages[-1].content == "a29"
    assert window.older_than == window.messages[0].id
    assert [m.content for m in older.messages] == [
        text for turn in range(5) for text in (f"q{turn}", f"a{turn}")
    ]
    assert older.older_than is None


def test_window_before_a_message_off_the_branch_is_empty(conversation: Conversation) -> None:
    exchange(conversation, "Hi", "Hello!")
    conversation.refresh_from_db()

    window = selectors.thread_window(conversation=conversation, before=uuid.uuid4())

    assert window.messages == []


def test_window_before_an_id_that_is_not_a_uuid_is_empty(conversation: Conversation) -> None:
    exchange(conversation, "Hi", "Hello!")
    conversation.refresh_from_db()

    window = selectors.thread_window(conversation=conversation, before="not-a-uuid")

    assert window.messages == []
    assert window.older_than is None


def test_window_before_a_message_of_another_conversation_is_empty(
    conversation: Conversation, make_user
) -> None:
    exchange(conversation, "Hi", "Hello!")
    theirs = services.conversation_create(owner=make_user("bob"))
    _, their_reply = exchange(theirs, "Secret question", "Secret answer")
    conversation.refresh_from_db()

    window = selectors.thread_window(conversation=conversation, before=their_reply.id)

    assert window.messages == []
    assert window.older_than is None


def test_paging_back_through_a_long_branch_shows_every_message_once(
    conversation: Conversation,
) -> None:
    for turn in range(65):
        exchange(conversation, f"q{turn}", f"a{turn}")
    conversation.refresh_from_db()

    pages: list[selectors.ThreadWindow] = []
    before: uuid.UUID | None = None
    for _ in range(10):  # bounded, so a window that never ends fails instead of hanging
        pages.append(selectors.thread_window(conversation=conversation, before=before, size=50))
        before = pages[-1].older_than
        if before is None:
            break

    assert [len(page.messages) for page in pages] == [50, 50, 30]
    shown = [m.content for page in reversed(pages) for m in page.messages]
    assert shown == [text for turn in range(65) for text in (f"q{turn}", f"a{turn}")]
    assert [page.older_than for page in pages[:-1]] == [page.messages[0].id for page in pages[:-1]]
    assert pages[-1].older_than is None


def test_a_window_reads_as_many_rows_for_200_messages_as_for_20(
    user, django_assert_max_num_queries
) -> None:
    short = services.conversation_create(owner=user)
    for turn in range(10):
        exchange(short, f"q{turn}", f"a{turn}")
    long = services.conversation_create(owner=user)
    for turn in range(100):
        exchange(long, f"q{turn}", f"a{turn}")
    short.refresh_from_db()
    long.refresh_from_db()

    with django_assert_max_num_queries(2), _statements() as short_queries:
        short_window = selectors.thread_window(conversation=short, size=10)
    with django_assert_max_num_queries(2), _statements() as long_queries:
        long_window = selectors.thread_window(conversation=long, size=10)

    assert len(short_window.messages) == len(long_window.messages) == 10
    # The window and one more (to know there are older ones), then the window's siblings.
    assert _rows_returned(long_queries) == _rows_returned(short_queries) == [11, 10]


def test_versions_are_counted_in_a_window_that_does_not_reach_the_root(
    conversation: Conversation,
) -> None:
    exchange(conversation, "q0", "a0")
    _, first = exchange(conversation, "q1", "a1")
    regenerated(conversation, first, "a1 again")
    exchange(conversation, "q2", "a2")
    conversation.refresh_from_db()

    window = selectors.thread_window(conversation=conversation, size=3)

    assert _versions(window) == [("a1 again", 2, 2), ("q2", 1, 1), ("a2", 1, 1)]
    assert window.messages[0].version.previous_id == first.id
    assert window.older_than == window.messages[0].id


def test_message_path_is_exactly_the_branch_of_the_message(
    conversation: Conversation, django_assert_num_queries
) -> None:
    q0, a0 = exchange(conversation, "q0", "a0")
    q1, a1 = exchange(conversation, "q1", "a1")
    a1_again = regenerated(conversation, a1, "a1 again")
    q1_edited, reply = services.turn_edit(
        conversation_id=conversation.id,
        owner=conversation.owner,
        message_id=q1.id,
        content="q1 edited",
        settings=turn_settings(),
        model=MODEL,
    )
    edited = finish(reply, "a1 edited")

    with django_assert_num_queries(1):
        path = selectors.message_path(message=a1_again)

    assert [m.id for m in path] == [q0.id, a0.id, q1.id, a1_again.id]
    assert [m.content for m in path] == ["q0", "a0", "q1", "a1 again"]
    assert [m.id for m in selectors.message_path(message=a1)] == [q0.id, a0.id, q1.id, a1.id]
    assert [m.id for m in selectors.message_path(message=edited)] == [
        q0.id,
        a0.id,
        q1_edited.id,
        edited.id,
    ]
    assert [m.id for m in selectors.message_path(message=q0)] == [q0.id]


def test_messages_with_versions_for_frames(conversation: Conversation) -> None:
    _, first = exchange(conversation, "Hi", "Hello!")
    second = services.reply_redo(
        how=services.Redo.REGENERATE,
        conversation_id=conversation.id,
        owner=conversation.owner,
        reply_id=first.id,
        settings=turn_settings(),
        model=MODEL,
    )

    [decorated] = selectors.messages_with_versions(messages=[second])

    assert (decorated.version.index, decorated.version.count) == (2, 2)


def test_continuation_request_prefills_the_partial_reply(conversation: Conversation) -> None:
    _, stopped = exchange(conversation, "Count", "one two ", status=Message.Status.STOPPED)
    more = services.reply_redo(
        how=services.Redo.CONTINUE,
        conversation_id=conversation.id,
        owner=conversation.owner,
        reply_id=stopped.id,
        settings=turn_settings(stop=("ten",)),
        model=MODEL,
    )

    payload, _ = selectors.reply_request(reply=more)

    assert payload["messages"] == [
        {"role": "user", "content": "Count"},
        {"role": "assistant", "content": "one two"},
    ]
    assert payload["stop"] == ["ten"]


def test_a_continued_reply_is_one_assistant_message_upstream(conversation: Conversation):
    _, stopped = exchange(conversation, "Count", "one ", status=Message.Status.STOPPED)
    more = services.reply_redo(
        how=services.Redo.CONTINUE,
        conversation_id=conversation.id,
        owner=conversation.owner,
        reply_id=stopped.id,
        settings=turn_settings(),
        model=MODEL,
    )
    finish(more, "two")
    started = services.turn_start(
        conversation_id=conversation.id,
        owner=conversation.owner,
        content="Again",
        settings=turn_settings(),
        model=MODEL,
    )
    next_reply = started.reply

    payload, _ = selectors.reply_request(reply=next_reply)

    assert payload["messages"] == [
        {"role": "user", "content": "Count"},
        {"role": "assistant", "content": "one two"},
        {"role": "user", "content": "Again"},
    ]


def test_regenerated_request_uses_the_path_to_the_new_version(conversation: Conversation):
    _, first = exchange(conversation, "Hi", "Hello!")
    second = services.reply_redo(
        how=services.Redo.REGENERATE,
        conversation_id=conversation.id,
        owner=conversation.owner,
        reply_id=first.id,
        settings=turn_settings(),
        model=MODEL,
    )

    payload, _ = selectors.reply_request(reply=second)

    assert payload["messages"] == [{"role": "user", "content": "Hi"}]


def test_search_finds_titles_and_message_text_of_the_users_own(
    conversation: Conversation, make_user
) -> None:
    exchange(conversation, "Tell me about penguins", "Penguins are flightless birds.")
    other_mine = services.conversation_create(owner=conversation.owner)
    services.conversation_rename(
        conversation_id=other_mine.id, owner=conversation.owner, title="Birds of prey"
    )
    theirs = services.conversation_create(owner=make_user("bob"))
    exchange(theirs, "Birds again", "Flightless birds, yes.")

    by_text = selectors.conversation_search_for_user(user=conversation.owner, query="flightless")
    by_title = selectors.conversation_search_for_user(user=conversation.owner, query="PREY")

    assert [hit.conversation.id for hit in by_text] == [conversation.id]
    assert "flightless" in by_text[0].snippet
    assert [hit.conversation.id for hit in by_title] == [other_mine.id]
    assert selectors.conversation_search_for_user(user=conversation.owner, query="  ") == []


def test_title_request_needs_a_completed_first_exchange(conversation: Conversation) -> None:
    started = services.turn_start(
        conversation_id=conversation.id,
        owner=conversation.owner,
        content="Hi",
        settings=turn_settings(),
        model=MODEL,
    )
    reply = started.reply
    assert selectors.title_request_for(conversation_id=conversation.id) is None

    finish(reply, "Hello!")
    request = selectors.title_request_for(conversation_id=conversation.id)

    assert request is not None
    assert (request.user_text, request.reply_text, request.title) == ("Hi", "Hello!", "Hi")


@pytest.mark.parametrize(
    ("markdown", "plain"),
    [
        ("The **kiwi** is `flightless`.", "The kiwi is flightless."),
        ("# Birds\n\n- one\n- _two_\n\n> quoted", "Birds one two quoted"),
        ("```python\nx = 1\n```", "x = 1"),
        ("| a | b |\n|---|---|\n| 1 | 2 |", "a b 1 2"),
        (
            "See [the docs](https://example.com) and snake_case_name.",
            "See the docs and snake_case_name.",
        ),
    ],
)
def test_markdown_plain(markdown: str, plain: str) -> None:
    assert markdown_plain(markdown) == plain


def test_an_id_from_a_client_finds_only_the_users_own_row(
    conversation: Conversation, make_user
) -> None:
    _, reply = exchange(conversation, "Hi", "Hello!")
    owner, other = conversation.owner, make_user("mallory")
    lookups = [
        (selectors.conversation_get_for_user, "conversation_id", conversation),
        (selectors.message_get_for_user, "message_id", reply),
    ]
    for lookup, key, row in lookups:
        assert lookup(**{key: row.id, "user": owner}) == row
        assert lookup(**{key: str(row.id), "user": owner}) == row
        # Someone else's, a signed-out visitor and an unknown id look alike.
        assert lookup(**{key: row.id, "user": other}) is None
        assert lookup(**{key: row.id, "user": AnonymousUser()}) is None
        assert lookup(**{key: uuid.uuid4(), "user": owner}) is None
        # Text that is no UUID at all is no row either, not a server error.
        assert lookup(**{key: "not-a-uuid", "user": owner}) is None
