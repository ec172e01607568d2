import pytest
from django.test import Client
from django.urls import reverse

from conversations.models import Conversation
from conversations.services import conversation_create

pytestmark = pytest.mark.django_db


def test_home_requires_sign_in(client: Client) -> None:
    response = client.get("/")

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_home_reuses_an_empty_conversation(client: Client, user) -> None:
    client.force_login(user)

    first = client.get("/")
    second = client.get("/")

    assert first["Location"] == second["Location"]
    assert Conversation.objects.filter(owner=user).count() == 1


def test_conversation_page_has_the_chat_contract(client: Client, user) -> None:
    conversation = conversation_create(owner=user)
    client.force_login(user)

    response = client.get(reverse("conversation", args=[conversation.id]))

    html = response.content.decode()
    assert response.status_code == 200
    assert 'role="log"' in html
    assert f'ws-connect="/ws/c/{conversation.id}/"' in html
    for label in ("Message", "Temperature", "Top P", "Reasoning effort", "Max tokens"):
        assert f">{label}" in html or f'aria-label="{label}"' in html


def test_other_users_conversation_is_404(client: Client, make_user) -> None:
    conversation = conversation_create(owner=make_user("owner"))
    client.force_login(make_user("intruder"))

    response = client.get(reverse("conversation", args=[conversation.id]))

    assert response.status_code == 404
    assert conversation.title not in response.content.decode()


def test_demo_banner_shows_without_a_key(client: Client, user, settings) -> None:
    settings.AIMLAPI_API_KEY = ""
    client.force_login(user)

    response = client.get(reverse("conversation", args=[conversation_create(owner=user).id]))

    assert "Demo mode: set AIMLAPI_API_KEY to talk to Claude" in response.content.decode()


def test_no_demo_banner_and_no_key_in_page_with_a_key(client: Client, user, settings) -> None:
    settings.AIMLAPI_API_KEY = "sk-live-secret-value"
    client.force_login(user)

    response = client.get(reverse("conversation", args=[conversation_create(owner=user).id]))

    html = response.content.decode()
    assert "Demo mode" not in html
    assert "sk-live-secret-value" not in html


def test_signup_creates_an_account_and_signs_in(client: Client) -> None:
    response = client.post(
        reverse("signup"),
        {
            "username": "bob",
            "password1": "an unusual passphrase",
            "password2": "an unusual passphrase",
        },
    )

    assert response.status_code == 302
    assert client.get("/").status_code == 302
    assert Conversation.objects.filter(owner__username="bob").count() == 1


def test_signup_can_be_switched_off(client: Client, settings) -> None:
    settings.CHAT_ALLOW_SIGNUP = False

    response = client.post(
        reverse("signup"),
        {
            "username": "bob",
            "password1": "an unusual passphrase",
            "password2": "an unusual passphrase",
        },
    )

    assert response.status_code == 404
