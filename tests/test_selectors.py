import uuid

import pytest

from conversations import selectors, services
from conversations.models import Conversation, Message
from tests.factories import MODEL, exchange, finish, turn_settings

pytestmark = pytest.mark.django_db


@pytest.fixture
def conversation(user) -> Conversation:
    return services.conversation_create(owner=user)


def _versions(window: selectors.ThreadWindow) -> list[tuple[str, int, int]]:
    return [(m.content, m.version.index, m.version.count) for m in window.messages]


def test_thread_window_shows_the_branch_with_versions(conversation: Conversation) -> None:
    asked, first = exchange(conversation, "Hi", "Hello!")
    second = finish(
        services.reply_regenerate(
            conversation_id=conversation.id,
            owner=conversation.owner,
            reply_id=first.id,
            settings=turn_settings(),
            model=MODEL,
        ),
        "Hey!",
    )
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
    more = services.reply_continue(
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


def test_messages_with_versions_for_frames(conversation: Conversation) -> None:
    _, first = exchange(conversation, "Hi", "Hello!")
    second = services.reply_regenerate(
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
    more = services.reply_continue(
        conversation_id=conversation.id,
        owner=conversation.owner,
        reply_id=stopped.id,
        settings=turn_settings(stop=("ten",)),
        model=MODEL,
    )

    payload, _ = selectors.reply_request(reply_id=more.id)

    assert payload["messages"] == [
        {"role": "user", "content": "Count"},
        {"role": "assistant", "content": "one two"},
    ]
    assert payload["stop"] == ["ten"]


def test_a_continued_reply_is_one_assistant_message_upstream(conversation: Conversation):
    _, stopped = exchange(conversation, "Count", "one ", status=Message.Status.STOPPED)
    more = services.reply_continue(
        conversation_id=conversation.id,
        owner=conversation.owner,
        reply_id=stopped.id,
        settings=turn_settings(),
        model=MODEL,
    )
    finish(more, "two")
    _, next_reply = services.turn_start(
        conversation_id=conversation.id,
        owner=conversation.owner,
        content="Again",
        settings=turn_settings(),
        model=MODEL,
    )

    payload, _ = selectors.reply_request(reply_id=next_reply.id)

    assert payload["messages"] == [
        {"role": "user", "content": "Count"},
        {"role": "assistant", "content": "one two"},
        {"role": "user", "content": "Again"},
    ]


def test_regenerated_request_uses_the_path_to_the_new_version(conversation: Conversation):
    _, first = exchange(conversation, "Hi", "Hello!")
    second = services.reply_regenerate(
        conversation_id=conversation.id,
        owner=conversation.owner,
        reply_id=first.id,
        settings=turn_settings(),
        model=MODEL,
    )

    payload, _ = selectors.reply_request(reply_id=second.id)

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
    _, reply = services.turn_start(
        conversation_id=conversation.id,
        owner=conversation.owner,
        content="Hi",
        settings=turn_settings(),
        model=MODEL,
    )
    assert selectors.title_request_for(conversation_id=conversation.id) is None

    finish(reply, "Hello!")
    request = selectors.title_request_for(conversation_id=conversation.id)

    assert request is not None
    assert (request.user_text, request.reply_text, request.title) == ("Hi", "Hello!", "Hi")
