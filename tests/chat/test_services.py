import pytest

from conversations.accounts import services as accounts_services
from conversations.chat import services
from conversations.models import Conversation, Message, UserPreferences
from tests.support.factories import MODEL, exchange, finish, regenerated, turn_settings

pytestmark = pytest.mark.django_db


def test_regenerate_keeps_the_old_reply_as_a_version(conversation: Conversation) -> None:
    asked, first = exchange(conversation, "Hi", "Hello!")

    second = services.reply_redo(
        how=services.Redo.REGENERATE,
        conversation_id=conversation.id,
        owner=conversation.owner,
        reply_id=first.id,
        settings=turn_settings(sampling="temperature", temperature=0.3),
        model=MODEL,
    )

    conversation.refresh_from_db()
    assert second.parent_id == asked.id
    assert second.status == Message.Status.STREAMING
    assert second.request_params == {"max_tokens": 1000, "temperature": 0.3}
    assert conversation.active_leaf_id == second.id
    assert list(asked.children.order_by("created_at")) == [first, second]
    assert Message.objects.filter(role=Message.Role.USER).count() == 1


def test_retry_of_an_error_reply_does_not_repeat_the_user_message(
    conversation: Conversation,
) -> None:
    asked, failed = exchange(conversation, "Hi", "", status=Message.Status.ERROR, error="Boom")

    retry = services.reply_redo(
        how=services.Redo.REGENERATE,
        conversation_id=conversation.id,
        owner=conversation.owner,
        reply_id=failed.id,
        settings=turn_settings(),
        model=MODEL,
    )

    assert retry.parent_id == asked.id
    assert Message.objects.filter(role=Message.Role.USER).count() == 1


def test_tree_changes_are_refused_while_a_reply_streams(conversation: Conversation) -> None:
    _, first = exchange(conversation, "Hi", "Hello!")
    services.turn_start(
        conversation_id=conversation.id,
        owner=conversation.owner,
        content="More",
        settings=turn_settings(),
        model=MODEL,
    )

    with pytest.raises(services.TurnRefused, match="still being written"):
        services.reply_redo(
            how=services.Redo.REGENERATE,
            conversation_id=conversation.id,
            owner=conversation.owner,
            reply_id=first.id,
            settings=turn_settings(),
            model=MODEL,
        )
    with pytest.raises(services.TurnRefused):
        services.branch_switch(
            conversation_id=conversation.id, owner=conversation.owner, message_id=first.id
        )


def test_a_message_of_another_conversation_is_refused(conversation: Conversation, make_user):
    other = services.conversation_create(owner=make_user("bob"))
    _, foreign = exchange(other, "Bob's", "Reply to Bob")

    with pytest.raises(services.TurnRefused, match="not part of this conversation"):
        services.reply_redo(
            how=services.Redo.REGENERATE,
            conversation_id=conversation.id,
            owner=conversation.owner,
            reply_id=foreign.id,
            settings=turn_settings(),
            model=MODEL,
        )
    with pytest.raises(Conversation.DoesNotExist):
        services.reply_redo(
            how=services.Redo.REGENERATE,
            conversation_id=other.id,
            owner=conversation.owner,
            reply_id=foreign.id,
            settings=turn_settings(),
            model=MODEL,
        )


def test_edit_branches_where_the_edited_message_was(conversation: Conversation) -> None:
    _, first_a = exchange(conversation, "Capital of France?", "Paris.")
    second_q, _ = exchange(conversation, "And Spain?", "Madrid.")

    edited, reply = services.turn_edit(
        conversation_id=conversation.id,
        owner=conversation.owner,
        message_id=second_q.id,
        content="And Italy?",
        settings=turn_settings(),
        model=MODEL,
    )

    conversation.refresh_from_db()
    assert edited.parent_id == first_a.id
    assert edited.content == "And Italy?"
    assert reply.parent_id == edited.id
    assert conversation.active_leaf_id == reply.id
    second_q.refresh_from_db()
    assert second_q.content == "And Spain?"


def test_edit_of_the_first_message_makes_a_second_root(conversation: Conversation) -> None:
    first_q, _ = exchange(conversation, "Hi", "Hello!")

    edited, _ = services.turn_edit(
        conversation_id=conversation.id,
        owner=conversation.owner,
        message_id=first_q.id,
        content="Hey",
        settings=turn_settings(),
        model=MODEL,
    )

    assert edited.parent_id is None
    assert Message.objects.filter(parent__isnull=True).count() == 2


def test_switch_shows_the_newest_branch_below_the_chosen_version(
    conversation: Conversation,
) -> None:
    asked, first = exchange(conversation, "Hi", "Hello!")
    _, deep = exchange(conversation, "Go on", "More.")
    second = regenerated(conversation, first, "Hey!")

    services.branch_switch(
        conversation_id=conversation.id, owner=conversation.owner, message_id=first.id
    )
    conversation.refresh_from_db()
    assert conversation.active_leaf_id == deep.id

    services.branch_switch(
        conversation_id=conversation.id, owner=conversation.owner, message_id=second.id
    )
    conversation.refresh_from_db()
    assert conversation.active_leaf_id == second.id
    assert asked.children.count() == 2


def test_continue_a_stopped_reply_as_its_child_without_thinking(
    conversation: Conversation,
) -> None:
    _, stopped = exchange(conversation, "Write", "Once upon", status=Message.Status.STOPPED)

    more = services.reply_redo(
        how=services.Redo.CONTINUE,
        conversation_id=conversation.id,
        owner=conversation.owner,
        reply_id=stopped.id,
        settings=turn_settings(reasoning_effort="high", stop=("END",)),
        model=MODEL,
    )

    assert more.parent_id == stopped.id
    assert more.role == Message.Role.ASSISTANT
    assert more.request_params == {"max_tokens": 1000, "stop": ["END"]}


@pytest.mark.parametrize(
    ("outcome", "allowed"),
    [
        ({"status": Message.Status.COMPLETE, "finish_reason": "length"}, True),
        ({"status": Message.Status.INTERRUPTED}, True),
        ({"status": Message.Status.COMPLETE}, False),
        ({"status": Message.Status.ERROR, "error": "Boom"}, False),
    ],
)
def test_continue_only_a_reply_cut_short(
    conversation: Conversation, outcome: dict, allowed: bool
) -> None:
    _, reply = exchange(conversation, "Write", "Some text", **outcome)

    def attempt() -> Message:
        return services.reply_redo(
            how=services.Redo.CONTINUE,
            conversation_id=conversation.id,
            owner=conversation.owner,
            reply_id=reply.id,
            settings=turn_settings(),
            model=MODEL,
        )

    if allowed:
        assert attempt().parent_id == reply.id
    else:
        with pytest.raises(services.TurnRefused, match="can continue"):
            attempt()


def test_stop_sequences_and_system_prompt_are_saved_and_sent(
    conversation: Conversation,
) -> None:
    settings = turn_settings(stop=("\n\nHuman:", "END"), system_prompt="Be brief.")

    started = services.turn_start(
        conversation_id=conversation.id,
        owner=conversation.owner,
        content="Hi",
        settings=settings,
        model=MODEL,
    )
    reply = started.reply

    conversation.refresh_from_db()
    assert reply.request_params["stop"] == ["\n\nHuman:", "END"]
    assert conversation.stop_sequences == ["\n\nHuman:", "END"]
    assert conversation.system_prompt == "Be brief."


def test_a_turn_without_a_system_prompt_keeps_the_conversations(
    conversation: Conversation,
) -> None:
    conversation.system_prompt = "Be brief."
    conversation.save()

    exchange(conversation, "Hi", "Hello")

    conversation.refresh_from_db()
    assert conversation.system_prompt == "Be brief."


def test_new_conversations_start_from_the_users_preferences(user) -> None:
    accounts_services.preferences_update(
        user=user,
        settings=turn_settings(
            system_prompt="Answer in French.",
            sampling="temperature",
            temperature=0.2,
            reasoning_effort="low",
            max_tokens=2048,
        ),
    )

    conversation = services.conversation_create(owner=user)

    assert conversation.system_prompt == "Answer in French."
    assert conversation.sampling == "temperature"
    assert conversation.temperature == 0.2
    assert conversation.reasoning_effort == "low"
    assert conversation.max_tokens == 2048
    assert UserPreferences.objects.count() == 1


def test_generated_title_replaces_only_the_provisional_one(conversation: Conversation) -> None:
    exchange(conversation, "What is the capital of France?", "Paris.")

    saved = services.conversation_title_generated_set(
        conversation_id=conversation.id,
        title="French capital",
        first_message="What is the capital of France?",
    )

    conversation.refresh_from_db()
    assert saved
    assert conversation.title == "French capital"


def test_generated_title_never_overwrites_a_rename(conversation: Conversation) -> None:
    exchange(conversation, "What is the capital of France?", "Paris.")
    services.conversation_rename(
        conversation_id=conversation.id, owner=conversation.owner, title="Geography"
    )

    saved = services.conversation_title_generated_set(
        conversation_id=conversation.id,
        title="French capital",
        first_message="What is the capital of France?",
    )

    conversation.refresh_from_db()
    assert not saved
    assert conversation.title == "Geography"


def test_rename_and_delete_check_the_owner(conversation: Conversation, make_user) -> None:
    intruder = make_user("mallory")

    with pytest.raises(Conversation.DoesNotExist):
        services.conversation_rename(
            conversation_id=conversation.id, owner=intruder, title="Mine now"
        )
    with pytest.raises(Conversation.DoesNotExist):
        services.conversation_delete(conversation_id=conversation.id, owner=intruder)
    assert Conversation.objects.filter(id=conversation.id).exists()


def test_delete_removes_the_whole_tree(conversation: Conversation) -> None:
    _, first = exchange(conversation, "Hi", "Hello!")
    exchange(conversation, "More", "Sure.")
    services.reply_redo(
        how=services.Redo.REGENERATE,
        conversation_id=conversation.id,
        owner=conversation.owner,
        reply_id=first.id,
        settings=turn_settings(),
        model=MODEL,
    )

    services.conversation_delete(conversation_id=conversation.id, owner=conversation.owner)

    assert not Conversation.objects.exists()
    assert not Message.objects.exists()


def _turn(conversation: Conversation) -> services.StartedTurn:
    started = services.turn_start(
        conversation_id=conversation.id,
        owner=conversation.owner,
        content="Next",
        settings=turn_settings(),
        model=MODEL,
    )
    finish(started.reply, "Done.")
    return started


def test_a_turn_moves_the_sidebar_only_when_its_conversation_is_not_on_top(
    conversation: Conversation,
) -> None:
    other = services.conversation_create(owner=conversation.owner)

    first = _turn(conversation)
    again = _turn(conversation)
    elsewhere = _turn(other)
    back = _turn(conversation)

    assert first.sidebar_moves  # it joins the sidebar
    assert not again.sidebar_moves  # already on top
    assert elsewhere.sidebar_moves
    assert back.sidebar_moves


def test_a_started_turn_reports_usage_with_its_own_reply(
    conversation: Conversation, settings
) -> None:
    settings.CHAT_DAILY_MESSAGE_QUOTA = 10
    exchange(conversation, "Hi", "Hello!")

    started = _turn(conversation)

    assert started.quota.messages_today == 2
    assert started.quota.messages_left_today == 8
