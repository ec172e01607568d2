from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from conversations.chat import services
from conversations.chat.services import conversation_create
from conversations.models import Conversation, Message, UserPreferences
from tests.conftest import PASSWORD
from tests.support.factories import exchange

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


@pytest.fixture
def client_for(make_user):
    def make(username: str, *, csrf: bool = False) -> tuple[Client, object]:
        user = make_user(username)
        client = Client(enforce_csrf_checks=csrf)
        client.login(username=username, password=PASSWORD)
        return client, user

    return make


def test_page_lists_conversations_newest_activity_first(client_for) -> None:
    client, user = client_for("alice")
    older = services.conversation_create(owner=user)
    exchange(older, "Older question", "Older answer")
    newer = services.conversation_create(owner=user)
    exchange(newer, "Newer question", "Newer answer")
    exchange(older, "Back to this one", "Sure")

    response = client.get(reverse("conversation", args=[newer.id]))

    html = response.content.decode()
    assert response.status_code == 200
    assert '<nav id="sidebar" class="sidebar" aria-label="Conversations">' in html
    sidebar = html[html.index('id="conversation-list"') :]
    assert sidebar.index("Older question") < sidebar.index("Newer question")


def test_page_renders_only_the_last_window_of_a_long_branch(client_for) -> None:
    client, user = client_for("alice")
    conversation = services.conversation_create(owner=user)
    for turn in range(30):
        exchange(conversation, f"question {turn:02d}", f"answer {turn:02d}")

    html = client.get(reverse("conversation", args=[conversation.id])).content.decode()

    assert html.count("<article ") == 50
    assert "question 04" not in html
    assert "question 05" in html
    assert 'hx-trigger="intersect once"' in html


def test_older_messages_come_before_the_given_one(client_for) -> None:
    client, user = client_for("alice")
    conversation = services.conversation_create(owner=user)
    for turn in range(30):
        exchange(conversation, f"question {turn:02d}", f"answer {turn:02d}")
    first_shown = Message.objects.get(content="question 05")

    response = client.get(
        reverse("conversation_older", args=[conversation.id]), {"before": first_shown.id}
    )

    html = response.content.decode()
    assert html.count("<article ") == 10
    assert "question 00" in html and "answer 04" in html
    assert "question 05" not in html
    assert "revealed" not in html


def test_rename_over_htmx_returns_the_title_and_the_sidebar(client_for) -> None:
    client, user = client_for("alice")
    conversation = services.conversation_create(owner=user)

    response = client.post(
        reverse("conversation_rename", args=[conversation.id]),
        {"title": "  <b>Plans</b>  for   May "},
        headers={"HX-Request": "true"},
    )

    html = response.content.decode()
    conversation.refresh_from_db()
    assert conversation.title == "<b>Plans</b> for May"
    assert 'id="chat-title"' in html
    assert "&lt;b&gt;Plans&lt;/b&gt; for May" in html
    assert '<ul id="conversation-list" class="conversation-list" hx-swap-oob="true">' in html
    assert "<b>Plans" not in html


def test_rename_refuses_an_empty_title(client_for) -> None:
    client, user = client_for("alice")
    conversation = services.conversation_create(owner=user)

    response = client.post(
        reverse("conversation_rename", args=[conversation.id]),
        {"title": "   "},
        headers={"HX-Request": "true"},
    )

    conversation.refresh_from_db()
    assert conversation.title == "New chat"
    assert "rename-error" in response.content.decode()


def test_delete_removes_the_conversation_and_goes_home(client_for) -> None:
    client, user = client_for("alice")
    conversation = services.conversation_create(owner=user)
    exchange(conversation, "Hi", "Hello")

    response = client.post(reverse("conversation_delete", args=[conversation.id]))

    assert response.status_code == 302
    assert response.url == reverse("home")
    assert not Conversation.objects.filter(id=conversation.id).exists()


@pytest.mark.parametrize("name", ["conversation_rename", "conversation_delete"])
def test_other_users_get_404(client_for, name: str) -> None:
    _, owner = client_for("alice")
    intruder, _ = client_for("mallory")
    conversation = services.conversation_create(owner=owner)

    response = intruder.post(reverse(name, args=[conversation.id]), {"title": "Mine"})

    assert response.status_code == 404
    conversation.refresh_from_db()
    assert conversation.title == "New chat"


@pytest.mark.parametrize("name", ["conversation", "conversation_older"])
def test_other_users_cannot_read_a_conversation(client_for, name: str) -> None:
    _, owner = client_for("alice")
    intruder, _ = client_for("mallory")
    conversation = services.conversation_create(owner=owner)

    assert intruder.get(reverse(name, args=[conversation.id])).status_code == 404


# GET never writes: neither has a GET (the chat page's dialogs ask).
@pytest.mark.parametrize(
    ("name", "get_status"), [("conversation_rename", 405), ("conversation_delete", 405)]
)
def test_writes_need_the_csrf_token_and_post(client_for, name: str, get_status: int) -> None:
    client, user = client_for("alice", csrf=True)
    conversation = services.conversation_create(owner=user)
    url = reverse(name, args=[conversation.id])

    assert client.post(url, {"title": "x"}).status_code == 403
    assert client.get(url).status_code == get_status
    assert Conversation.objects.get(id=conversation.id).title == "New chat"


def test_search_returns_only_the_users_own_matches(client_for) -> None:
    client, user = client_for("alice")
    _, bob = client_for("bob")
    mine = services.conversation_create(owner=user)
    exchange(mine, "Where do penguins live?", "Mostly in the <southern> hemisphere.")
    theirs = services.conversation_create(owner=bob)
    exchange(theirs, "Penguins?", "Southern hemisphere.")

    html = client.get(reverse("search"), {"q": "southern"}, headers={"HX-Request": "true"})
    html = html.content.decode()

    assert reverse("conversation", args=[mine.id]) in html
    assert reverse("conversation", args=[theirs.id]) not in html
    assert "&lt;southern&gt;" in html


def test_search_without_a_match_says_so(client_for) -> None:
    client, _ = client_for("alice")

    html = client.get(reverse("search"), {"q": "zebra"}).content.decode()

    assert "No conversations match" in html


def test_anonymous_users_are_sent_to_sign_in(client) -> None:
    for url in [reverse("search"), reverse("preferences")]:
        response = client.get(url)
        assert response.status_code == 302
        assert response.url.startswith(reverse("login"))


def test_preferences_are_saved_and_used_for_new_conversations(client_for) -> None:
    client, user = client_for("alice")

    response = client.post(
        reverse("preferences"),
        {
            "system_prompt": "Answer like a pirate.",
            "sampling": "top_p",
            "temperature": "1",
            "top_p": "0.9",
            "reasoning_effort": "off",
            "max_tokens": "3000",
        },
    )
    home = client.get(reverse("home"))

    assert "Saved" in response.content.decode()
    assert UserPreferences.objects.get(user=user).top_p == 0.9
    page = client.get(home.url).content.decode()
    assert "Answer like a pirate." in page
    assert 'value="3000"' in page


def test_preferences_reject_out_of_range_values(client_for) -> None:
    client, user = client_for("alice")

    response = client.post(
        reverse("preferences"),
        {
            "sampling": "temperature",
            "temperature": "1.5",
            "top_p": "1",
            "reasoning_effort": "off",
            "max_tokens": "10",
        },
    )

    assert "takes a temperature from 0 to 1 (you chose 1.5)" in response.content.decode()
    assert not UserPreferences.objects.filter(user=user).exists()


def test_favicon_is_served(client) -> None:
    response = client.get("/favicon.ico")

    assert response.status_code == 301
    assert response.url.endswith("favicon.svg")


def test_reply_shows_sources_refusal_and_meta(client_for) -> None:
    client, user = client_for("alice")
    conversation = services.conversation_create(owner=user)
    exchange(
        conversation,
        "Sources?",
        "See the sources.",
        citations=[
            {"url": "https://example.com/a", "title": "Example <A>"},
            {"url": "javascript:alert(1)", "title": "Sneaky"},
        ],
        refusal="I can't help with <that>.",
        prompt_tokens=12,
        completion_tokens=7,
        reasoning_tokens=3,
        cost_usd=Decimal("0.0012"),
        time_to_first_token_ms=640,
        duration_ms=4210,
    )

    html = client.get(reverse("conversation", args=[conversation.id])).content.decode()

    assert (
        '<a href="https://example.com/a" target="_blank" rel="noopener noreferrer">'
        "Example &lt;A&gt;</a>" in html
    )
    assert "javascript:" not in html
    # Non-web citations are dropped when the reply is saved.
    assert "Sneaky" not in html
    assert 'class="message-refusal"' in html
    assert "I can&#x27;t help with &lt;that&gt;." in html
    assert "12 → 7 (3 thinking) tokens" in html
    assert "$0.0012" in html
    assert "first token 640 ms" in html
    assert "4.2 s total" in html


def test_error_reply_shows_the_error_and_a_retry_button(client_for) -> None:
    client, user = client_for("alice")
    conversation = services.conversation_create(owner=user)
    exchange(
        conversation,
        "Hi",
        "",
        status=Message.Status.ERROR,
        error="The gateway is overloaded (529). Try again in a minute.",
    )

    html = client.get(reverse("conversation", args=[conversation.id])).content.decode()

    assert "The gateway is overloaded (529)" in html
    assert 'data-action="retry"' in html
    assert 'data-action="regenerate"' not in html


def test_message_actions_carry_no_htmx_attributes(client_for) -> None:
    client, user = client_for("alice")
    conversation = services.conversation_create(owner=user)
    exchange(conversation, '<button hx-get="/x">Hi</button>', "Hello")

    html = client.get(reverse("conversation", args=[conversation.id])).content.decode()
    articles = html[html.index("<article ") : html.rindex("</article>")]

    assert "hx-disable" in articles
    assert "hx-get" not in articles.replace("&lt;button hx-get=", "")


def test_page_queries_do_not_grow_with_the_conversation(
    client_for, django_assert_max_num_queries
) -> None:
    client, user = client_for("alice")
    short = services.conversation_create(owner=user)
    exchange(short, "q", "a")
    long = services.conversation_create(owner=user)
    for turn in range(60):
        exchange(long, f"q{turn}", f"a{turn}")
    with CaptureQueriesContext(connection) as short_queries:
        client.get(reverse("conversation", args=[short.id]))

    with django_assert_max_num_queries(len(short_queries)):
        html = client.get(reverse("conversation", args=[long.id])).content.decode()
    assert html.count("<article ") == 50


def test_a_long_reply_is_shown_in_windows_that_only_its_owner_reads(
    client: Client, user, make_user, settings
) -> None:
    settings.CHAT_MESSAGE_WINDOW_CHARS = 1000
    conversation = conversation_create(owner=user)
    text = "".join(f"<{n}>" for n in range(1000))  # markup-like, ~4.9k characters
    _, reply = exchange(conversation, "Long please", text)
    client.force_login(user)

    page = client.get(reverse("conversation", args=[conversation.id])).content.decode()
    url = reverse("message_text", args=[conversation.id, reply.id])
    assert "data-windowed" in page and f"{url}?start=1000" in page
    assert text[1000:1100] not in page  # the rest is not in the page at all
    assert "&lt;0&gt;" in page  # shown as escaped text

    parts, start = [], 1000
    while start < len(text):
        part = client.get(url, {"start": start}).json()
        parts.append(part["text"])
        assert part["total"] == len(text)
        start = part["shown"]
    assert text[:1000] + "".join(parts) == text
    assert client.get(url, {"download": 1}).content.decode() == text
    assert client.get(url, {"start": "-5"}).status_code == 400

    stranger = make_user("stranger")
    client.force_login(stranger)
    assert client.get(url, {"start": 0}).status_code == 404
    assert client.get(url, {"download": 1}).status_code == 404


def test_sign_up_keeps_next_from_the_sign_in_page(client: Client) -> None:
    shared = "/s/some-token/"

    login_page = client.get(reverse("login"), {"next": shared}).content.decode()
    signup_page = client.get(reverse("signup"), {"next": shared}).content.decode()
    response = client.post(
        reverse("signup"),
        {
            "username": "carol",
            "password1": "an unusual passphrase",
            "password2": "an unusual passphrase",
            "next": shared,
        },
    )

    assert f'href="{reverse("signup")}?next=%2Fs%2Fsome-token%2F"' in login_page
    assert f'name="next" value="{shared}"' in signup_page
    assert response.status_code == 302
    assert response["Location"] == shared


def test_sign_up_ignores_a_next_on_another_site(client: Client) -> None:
    response = client.post(
        reverse("signup"),
        {
            "username": "dave",
            "password1": "an unusual passphrase",
            "password2": "an unusual passphrase",
            "next": "https://evil.example/",
        },
    )

    assert response.status_code == 302
    assert response["Location"] == reverse("home")


def test_message_actions_are_ws_send_buttons_and_only_message_text_is_hx_disabled(
    client_for,
) -> None:
    client, user = client_for("alice")
    conversation = services.conversation_create(owner=user)
    _, reply = exchange(conversation, "Question <b hx-get='/x'>", "Answer")

    body = client.get(f"/c/{conversation.id}/").content.decode()
    article = body[body.index(f'<article id="msg-{reply.id}"') :]
    article = article[: article.index("</article>")]
    opening = article[: article.index(">")]

    assert "hx-disable" not in opening
    assert '<div class="message-text" hx-disable>' in article
    assert (
        'data-action="regenerate" ws-send hx-trigger="click" hx-include="#controls" '
        f'hx-vals=\'{{"action": "regenerate", "message_id": "{reply.id}"}}\''
    ) in article


def test_a_search_result_opens_the_page_reaching_back_to_its_message(client_for) -> None:
    client, user = client_for("alice")
    conversation = services.conversation_create(owner=user)
    first, _ = exchange(conversation, "The oldest needle", "An answer")
    for turn in range(30):
        exchange(conversation, f"question {turn}", "More")
    services.conversation_rename(conversation_id=conversation.id, owner=user, title="Haystack")

    results = client.get(reverse("search"), {"q": "needle"}, headers={"HX-Request": "true"})
    link = f"/c/{conversation.id}/?at={first.id}#msg-{first.id}"
    opened = client.get(f"/c/{conversation.id}/", {"at": str(first.id)})
    plain = client.get(f"/c/{conversation.id}/")

    assert link in results.content.decode()
    assert f'id="msg-{first.id}"' in opened.content.decode()
    assert f'id="msg-{first.id}"' not in plain.content.decode()
