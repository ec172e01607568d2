import pytest
from channels.db import database_sync_to_async

from conversations.chat import services, titles
from conversations.models import Conversation
from tests.support.factories import exchange
from tests.support.upstream_server import ErrorReply, FakeUpstream, completion_reply

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

QUESTION = "What is the capital of France?"


async def _conversation_after_first_exchange(user, question: str = QUESTION) -> Conversation:
    conversation = await database_sync_to_async(services.conversation_create)(owner=user)
    await database_sync_to_async(exchange)(conversation, question, "Paris.")
    return conversation


async def test_title_comes_from_a_small_non_streaming_request(upstream: FakeUpstream, user) -> None:
    upstream.enqueue(completion_reply('"Capital of France."\n'))
    conversation = await _conversation_after_first_exchange(user)

    saved = await titles.title_generate(conversation_id=conversation.id, owner_id=user.pk)

    await conversation.arefresh_from_db()
    assert saved
    assert conversation.title == "Capital of France"
    body = upstream.requests[0].json
    assert body["stream"] is False
    assert "stream_options" not in body
    assert body["max_tokens"] == titles.TITLE_MAX_TOKENS
    assert body["messages"][0] == {"role": "system", "content": titles.TITLE_INSTRUCTION}
    assert body["messages"][1]["content"] == f"{QUESTION}\n---\nParis."


@pytest.mark.parametrize(
    "reply",
    [
        ErrorReply(400, {"error": {"message": "Body validation error!"}}),
        ErrorReply(401, {"message": "Invalid key", "statusCode": 401}),
        completion_reply("   "),
    ],
)
async def test_a_failed_title_request_leaves_the_title_alone(
    upstream: FakeUpstream, user, reply
) -> None:
    upstream.enqueue(reply)
    conversation = await _conversation_after_first_exchange(user)

    saved = await titles.title_generate(conversation_id=conversation.id, owner_id=user.pk)

    await conversation.arefresh_from_db()
    assert not saved
    assert conversation.title == QUESTION


async def test_a_renamed_conversation_gets_no_title_request(upstream: FakeUpstream, user):
    conversation = await _conversation_after_first_exchange(user)
    await database_sync_to_async(services.conversation_rename)(
        conversation_id=conversation.id, owner=user, title="Mine"
    )

    saved = await titles.title_generate(conversation_id=conversation.id, owner_id=user.pk)

    await conversation.arefresh_from_db()
    assert not saved
    assert conversation.title == "Mine"
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Paris trip", "Paris trip"),
        ('"Paris trip."', "Paris trip"),
        ("Title: Paris trip", "Paris trip"),
        ("**Paris trip**\nHere is why…", "Paris trip"),
        ("\n\n  Paris   trip  ", "Paris trip"),
        ("x" * 200, "x" * (titles.TITLE_MAX_CHARS - 1) + "…"),
        ("", ""),
        ("Short please with thinking --- Hi", "Short please with thinking"),
        ("Here is **the** answer:", "Here is the answer"),
        (
            "Set `AIMLAPI_API_KEY` via [the docs](https://example.com)",
            "Set AIMLAPI_API_KEY via the docs",
        ),
        ("## _Paris_ ~~trip~~", "Paris trip"),
    ],
)
async def test_title_clean(raw: str, clean: str) -> None:
    assert titles.title_clean(raw) == clean


async def test_offline_demo_titles_from_the_users_words(user, settings) -> None:
    settings.AIMLAPI_API_KEY = ""
    settings.CHAT_DEMO_TOKEN_DELAY = 0
    conversation = await _conversation_after_first_exchange(user)

    saved = await titles.title_generate(conversation_id=conversation.id, owner_id=user.pk)

    await conversation.arefresh_from_db()
    assert saved
    assert conversation.title == "What is the capital of France"


async def test_offline_demo_titles_carry_no_separator(user, settings) -> None:
    settings.AIMLAPI_API_KEY = ""
    settings.CHAT_DEMO_TOKEN_DELAY = 0
    conversation = await _conversation_after_first_exchange(user, question="Short please")

    await titles.title_generate(conversation_id=conversation.id, owner_id=user.pk)

    await conversation.arefresh_from_db()
    assert conversation.title == "Short please"
