"""Hostile values in URLs and query strings answer 404 or 400, never a server error: every
route of the app, signed in and not, with ids that are not UUIDs, other users' ids, NUL bytes,
lone surrogates and very long strings."""

import uuid
from typing import Any
from urllib.parse import quote

import pytest
from django.test import Client

from conversations.chat.services import conversation_create
from tests.support.factories import exchange

JUNK_IDS = [
    "not-a-uuid",
    "1",
    "0" * 33,
    "' OR 1=1 --",
    "%00",
    "%ED%A0%80",
    "..%2F..%2Fetc%2Fpasswd",
    "x" * 3000,
    str(uuid.uuid4()),
]
JUNK_QUERY_VALUES = [
    "not-a-uuid",
    "%00",
    "a%00b",
    "%ED%A0%80",
    "%FF%FE",
    "x" * 5000,
    str(uuid.uuid4()),
]
# Every path of the app that takes an id or a token, with {} where the value goes.
ID_PATHS = [
    "/c/{}/",
    "/c/{}/older/",
    "/c/{}/rename/",
    "/c/{}/delete/",
    "/c/{}/share/",
    "/c/{}/share/preview/",
    "/c/{}/export.json",
    "/c/{}/export.md",
    "/share-links/{}/revoke/",
    "/s/{}/",
    "/s/{}/continue/",
]


def _statuses(client: Client, path: str) -> list[tuple[str, int]]:
    answers = []
    for method in (client.get, client.post):
        response = method(path)
        answers.append((f"{method.__name__.upper()} {path[:80]}", response.status_code))
    return answers


@pytest.fixture
def signed_in(owner_client: Client, fast_password_hashing: None) -> Client:
    owner_client.raise_request_exception = False
    return owner_client


@pytest.mark.django_db
def test_junk_ids_in_every_path_never_answer_a_server_error(
    signed_in: Client, user: Any, make_user: Any
) -> None:
    bob = make_user("bob")
    foreign = conversation_create(owner=bob)
    exchange(foreign, "Bob's", "private")
    anonymous = Client(raise_request_exception=False)

    answers = []
    for template in ID_PATHS:
        for junk in [*JUNK_IDS, str(foreign.id)]:
            path = template.format(junk)
            answers += _statuses(signed_in, path)
            answers += _statuses(anonymous, path)

    assert [answer for answer in answers if answer[1] >= 500] == []
    # The other user's conversation is never served to alice.
    assert all(
        status in (302, 400, 404, 405)
        for label, status in answers
        if str(foreign.id) in label and label.startswith(("GET /c/", "POST /c/"))
    ), answers


@pytest.mark.django_db
def test_junk_query_values_never_answer_a_server_error(signed_in: Client, user: Any) -> None:
    conversation = conversation_create(owner=user)
    exchange(conversation, "Hi", "Hello")
    paths = [
        f"/c/{conversation.id}/older/?before={{}}",
        f"/c/{conversation.id}/share/preview/?include_thinking={{}}&visibility={{}}",
        "/search/?q={}",
        "/admin/conversations/conversation/?q={}",
        "/accounts/login/?next={}",
    ]

    answers = []
    for template in paths:
        for junk in JUNK_QUERY_VALUES:
            path = template.replace("{}", junk)
            response = signed_in.get(path)
            answers.append((path[:100], response.status_code))

    assert [answer for answer in answers if answer[1] >= 500] == []


@pytest.mark.django_db
def test_older_with_a_junk_before_answers_400(signed_in: Client, user: Any) -> None:
    conversation = conversation_create(owner=user)
    exchange(conversation, "Hi", "Hello")

    for junk in ["not-a-uuid", quote("a\x00b"), "1" * 100]:
        response = signed_in.get(f"/c/{conversation.id}/older/?before={junk}")
        assert response.status_code in (400, 404), (junk, response.status_code)
