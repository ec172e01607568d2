"""Share links: services, selectors and views (the owner's dialog and the public page)."""

import datetime
import re
from html.parser import HTMLParser

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from conversations.chat import selectors
from conversations.chat import services as chat_services
from conversations.chat.rendering import markdown_to_html
from conversations.models import Conversation, Message, ShareLink
from conversations.sharing import selectors as sharing_selectors
from conversations.sharing import services as sharing_services
from conversations.sharing.services import ShareOptions
from tests.conftest import PASSWORD
from tests.support.transcripts import add_turn

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_password_hashing")]


@pytest.fixture
def conversation(user) -> Conversation:
    conversation = Conversation.objects.create(
        owner=user, title="Rust lifetimes", system_prompt="SECRET SYSTEM PROMPT"
    )
    add_turn(conversation, "What is a lifetime?", "A **lifetime** is a scope.", reasoning="HMM")
    return conversation


def create_link(conversation: Conversation, **options: object) -> tuple[ShareLink, str]:
    return sharing_services.share_link_create(
        conversation_id=conversation.id, user=conversation.owner, options=ShareOptions(**options)
    )


# --- Creation and snapshot --------------------------------------------------------------


def test_create_stores_only_a_digest_lookup_and_a_strong_token(conversation) -> None:
    link, token = create_link(conversation)

    assert len(token) >= 43
    assert link.token_digest == sharing_selectors.share_token_digest(token=token)
    assert link.token_digest != token
    assert sharing_selectors.share_link_get_live_by_token(token=token) == link


def test_tokens_are_unique_per_link(conversation) -> None:
    first, first_token = create_link(conversation)
    sharing_services.share_link_revoke(link_id=first.id, user=conversation.owner)

    _, second_token = create_link(conversation)

    assert first_token != second_token


def test_snapshot_leaves_out_system_prompt_and_thinking_by_default(conversation) -> None:
    link, _ = create_link(conversation)

    assert link.system_prompt == ""
    assert [m["role"] for m in link.messages] == ["user", "assistant"]
    assert all(m["reasoning"] == "" for m in link.messages)
    assert link.include_system_prompt is False
    assert link.include_thinking is False
    assert link.visibility == ShareLink.Visibility.ANYONE
    assert link.expires_at is None


def test_snapshot_includes_system_prompt_and_thinking_when_asked(conversation) -> None:
    link, _ = create_link(conversation, include_system_prompt=True, include_thinking=True)

    assert link.system_prompt == "SECRET SYSTEM PROMPT"
    assert link.messages[1]["reasoning"] == "HMM"


def test_snapshot_holds_no_ids_usage_or_error_details(conversation) -> None:
    reply = add_turn(conversation, "again", "oops")
    Message.objects.filter(id=reply.id).update(
        status=Message.Status.ERROR, error="upstream 500 at 10.0.0.7"
    )

    link, _ = create_link(conversation)

    flat = repr(link.messages)
    assert str(reply.id) not in flat
    assert "10.0.0.7" not in flat
    assert "cost" not in flat
    assert "prompt_tokens" not in flat


def test_snapshot_is_the_current_branch_only_and_skips_a_streaming_reply(conversation) -> None:
    first_reply = conversation.active_leaf
    # A sibling branch that is not on screen.
    Message.objects.create(
        conversation=conversation,
        parent=first_reply.parent,
        role=Message.Role.ASSISTANT,
        content="OTHER BRANCH",
    )
    question = Message.objects.create(
        conversation=conversation, parent=first_reply, role="user", content="more?"
    )
    streaming = Message.objects.create(
        conversation=conversation,
        parent=question,
        role="assistant",
        content="half a rep",
        status=Message.Status.STREAMING,
    )
    conversation.active_leaf = streaming
    conversation.save()

    link, _ = create_link(conversation)

    contents = [m["content"] for m in link.messages]
    assert contents == ["What is a lifetime?", "A **lifetime** is a scope.", "more?"]


def test_later_messages_do_not_appear_until_update_under_the_same_url(
    conversation, owner_client
) -> None:
    link, token = create_link(conversation)
    add_turn(conversation, "And borrowing?", "Borrowing LATER ANSWER.")

    before = owner_client.get(f"/s/{token}/")
    updated = sharing_services.share_link_update(
        link_id=link.id, user=conversation.owner, options=ShareOptions()
    )
    after = owner_client.get(f"/s/{token}/")

    assert "LATER ANSWER" not in before.content.decode()
    assert updated.id == link.id
    assert "LATER ANSWER" in after.content.decode()
    assert updated.snapshot_at > link.snapshot_at


def test_update_changes_options(conversation) -> None:
    link, _ = create_link(conversation)

    updated = sharing_services.share_link_update(
        link_id=link.id,
        user=conversation.owner,
        options=ShareOptions(
            include_system_prompt=True, visibility=ShareLink.Visibility.SIGNED_IN, expiry_days=7
        ),
    )

    assert updated.system_prompt == "SECRET SYSTEM PROMPT"
    assert updated.visibility == ShareLink.Visibility.SIGNED_IN
    assert updated.expires_at is not None
    assert (
        datetime.timedelta(days=6, hours=23)
        < updated.expires_at - timezone.now()
        <= datetime.timedelta(days=7)
    )


def test_options_reject_an_unlisted_expiry() -> None:
    with pytest.raises(ValueError, match="expiry_days"):
        ShareOptions(expiry_days=3)


# --- Public page ------------------------------------------------------------------------


def test_shared_page_renders_the_snapshot_with_privacy_headers(conversation, client) -> None:
    _, token = create_link(conversation)

    response = client.get(f"/s/{token}/")

    body = response.content.decode()
    assert response.status_code == 200
    assert response["X-Robots-Tag"].startswith("noindex")
    assert response["Referrer-Policy"] == "no-referrer"
    assert response["Cache-Control"] == "no-store"
    assert '<meta name="robots" content="noindex' in body
    assert "<strong>lifetime</strong>" in body
    assert "Continue this conversation" in body


def test_shared_page_exposes_no_owner_ids_composer_or_websocket(conversation, client) -> None:
    conversation.owner.email = "alice@example.com"
    conversation.owner.save()
    link, token = create_link(conversation)

    body = client.get(f"/s/{token}/").content.decode()

    assert "alice@example.com" not in body
    assert "alice" not in body
    assert str(conversation.id) not in body
    assert str(link.id) not in body
    assert all(str(m.id) not in body for m in conversation.messages.all())
    assert "ws-connect" not in body
    assert "htmx" not in body
    assert "<textarea" not in body
    assert "SECRET SYSTEM PROMPT" not in body
    assert "HMM" not in body


def test_shared_page_carries_no_script_from_message_content(user, client) -> None:
    conversation = Conversation.objects.create(owner=user, title="<script>alert('t')</script>")
    payload = (
        "<script>alert(1)</script><img src=x onerror=alert(2)>"
        '[x](javascript:alert(3)) <a href="#" hx-get="/admin/">h</a>'
    )
    add_turn(conversation, payload, payload)
    _, token = create_link(conversation, include_thinking=True)

    body = client.get(f"/s/{token}/").content.decode()

    tags = parse_tags(body)
    scripts = [attrs for tag, attrs in tags if tag == "script"]
    assert all(re.fullmatch(r"/static/js/[a-z]+\.js", dict(a).get("src", "")) for a in scripts)
    assert not [tag for tag, _ in tags if tag in {"img", "iframe", "object", "embed"}]
    attributes = [(name, value or "") for _, attrs in tags for name, value in attrs]
    assert not [name for name, _ in attributes if name.startswith(("on", "hx-", "ws-"))]
    assert not [v for n, v in attributes if n == "href" and not v.startswith(("/", "http"))]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "&lt;script&gt;alert(&#x27;t&#x27;)&lt;/script&gt;" in body


class _TagCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))


def parse_tags(body: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    collector = _TagCollector()
    collector.feed(body)
    return collector.tags


@pytest.mark.parametrize("state", ["unknown", "revoked", "expired", "garbage"])
def test_dead_tokens_answer_the_same_404_that_leaks_nothing(conversation, client, state) -> None:
    link, token = create_link(conversation)
    if state == "unknown":
        token = "x" * 43
    elif state == "revoked":
        sharing_services.share_link_revoke(link_id=link.id, user=conversation.owner)
    elif state == "expired":
        ShareLink.objects.filter(id=link.id).update(
            expires_at=timezone.now() - datetime.timedelta(seconds=1)
        )
    else:
        token = "%2e%2e" + "é" * 500
    reference = client.get("/s/" + "y" * 43 + "/")

    response = client.get(f"/s/{token}/")

    body = response.content.decode()
    assert response.status_code == 404
    assert body == reference.content.decode()
    assert "Rust lifetimes" not in body
    assert "lifetime" not in body
    assert response["X-Robots-Tag"].startswith("noindex")


def test_expiry_takes_effect_without_any_write(conversation, client) -> None:
    link, token = create_link(conversation, expiry_days=1)
    assert client.get(f"/s/{token}/").status_code == 200

    ShareLink.objects.filter(id=link.id).update(
        expires_at=timezone.now() - datetime.timedelta(minutes=1)
    )

    assert client.get(f"/s/{token}/").status_code == 404
    assert ShareLink.objects.get(id=link.id).status == "expired"


def test_revoke_is_immediate_and_cannot_be_undone_by_update(conversation, client) -> None:
    link, token = create_link(conversation)

    sharing_services.share_link_revoke(link_id=link.id, user=conversation.owner)

    assert client.get(f"/s/{token}/").status_code == 404
    with pytest.raises(ShareLink.DoesNotExist):
        sharing_services.share_link_update(
            link_id=link.id, user=conversation.owner, options=ShareOptions()
        )


def test_signed_in_visibility_sends_anonymous_viewers_to_login(
    conversation, client, make_user
) -> None:
    _, token = create_link(conversation, visibility=ShareLink.Visibility.SIGNED_IN)

    anonymous = client.get(f"/s/{token}/")
    client.force_login(make_user("bob"))
    signed_in = client.get(f"/s/{token}/")

    assert anonymous.status_code == 302
    assert anonymous["Location"] == f"/accounts/login/?next=%2Fs%2F{token}%2F"
    assert signed_in.status_code == 200


def test_views_are_counted_but_not_the_owners_own(conversation, client, owner_client) -> None:
    link, token = create_link(conversation)

    client.get(f"/s/{token}/")
    client.get(f"/s/{token}/")
    owner_client.get(f"/s/{token}/")
    Client().get(f"/s/{token}/")

    link.refresh_from_db()
    assert link.view_count == 3


def test_revoked_link_views_are_not_counted(conversation, client) -> None:
    link, token = create_link(conversation)
    sharing_services.share_link_revoke(link_id=link.id, user=conversation.owner)

    client.get(f"/s/{token}/")

    link.refresh_from_db()
    assert link.view_count == 0


# --- Continue this conversation ----------------------------------------------------------


def test_continue_copies_the_snapshot_into_a_new_conversation_of_the_viewer(
    conversation, client, make_user
) -> None:
    _, token = create_link(conversation, include_system_prompt=True)
    add_turn(conversation, "not published", "NOT PUBLISHED")
    bob = make_user("bob")
    client.force_login(bob)

    response = client.post(f"/s/{token}/continue/")

    copy = Conversation.objects.get(owner=bob)
    assert response.status_code == 302
    assert response["Location"] == f"/c/{copy.id}/"
    thread = selectors.thread_path(conversation=copy)
    assert [m.content for m in thread] == ["What is a lifetime?", "A **lifetime** is a scope."]
    assert thread[1].content_html == markdown_to_html("A **lifetime** is a scope.")
    assert thread[1].reasoning == ""
    assert copy.system_prompt == "SECRET SYSTEM PROMPT"
    assert copy.title == "Rust lifetimes (copy)"
    assert client.get(f"/c/{copy.id}/").status_code == 200


def test_continue_sends_anonymous_viewers_to_login_with_next(conversation, client) -> None:
    _, token = create_link(conversation)

    response = client.post(f"/s/{token}/continue/")

    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next=%2Fs%2F{token}%2F"
    assert Conversation.objects.count() == 1


def test_continue_on_a_revoked_link_is_404(conversation, client, make_user) -> None:
    link, token = create_link(conversation)
    sharing_services.share_link_revoke(link_id=link.id, user=conversation.owner)
    client.force_login(make_user("bob"))

    assert client.post(f"/s/{token}/continue/").status_code == 404


def test_continue_is_csrf_protected(conversation, make_user) -> None:
    _, token = create_link(conversation)
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_user("bob"))

    assert client.post(f"/s/{token}/continue/").status_code == 403


# --- The owner's dialog and list ---------------------------------------------------------


def test_dialog_previews_what_will_be_published(conversation, owner_client) -> None:
    response = owner_client.get(
        reverse("share_dialog", args=[conversation.id]), headers={"HX-Request": "true"}
    )

    body = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in body
    assert "What is a lifetime?" in body
    assert "SECRET SYSTEM PROMPT" not in body
    assert "Create link" in body


def test_preview_follows_the_checkboxes(conversation, owner_client) -> None:
    url = reverse("share_preview", args=[conversation.id])

    plain = owner_client.get(url).content.decode()
    full = owner_client.get(
        url, {"include_system_prompt": "on", "include_thinking": "on"}
    ).content.decode()

    assert "SECRET SYSTEM PROMPT" not in plain
    assert "HMM" not in plain
    assert "SECRET SYSTEM PROMPT" in full
    assert "HMM" in full


def test_dialog_post_creates_then_updates_the_same_link(conversation, owner_client) -> None:
    url = reverse("share_dialog", args=[conversation.id])

    created = owner_client.post(
        url, {"visibility": "anyone", "expiry_days": "0"}, headers={"HX-Request": "true"}
    )
    link = ShareLink.objects.get()
    add_turn(conversation, "next", "NEXT")
    updated = owner_client.post(
        url,
        {"visibility": "anyone", "expiry_days": "30", "include_thinking": "on"},
        headers={"HX-Request": "true"},
    )

    assert "Share link" in created.content.decode()
    assert link.token in created.content.decode()
    assert ShareLink.objects.count() == 1
    link.refresh_from_db()
    assert link.messages[-1]["content"] == "NEXT"
    assert link.include_thinking is True
    assert link.expiry_days == 30
    assert "Update link" in updated.content.decode()
    assert link.token in updated.content.decode()


def test_dialog_revoke_then_share_again_makes_a_new_url(conversation, owner_client) -> None:
    link, token = create_link(conversation)

    response = owner_client.post(
        reverse("share_link_revoke", args=[link.id]), headers={"HX-Request": "true"}
    )
    owner_client.post(
        reverse("share_dialog", args=[conversation.id]),
        {"visibility": "anyone", "expiry_days": "0"},
    )

    assert "Link revoked" in response.content.decode()
    assert token not in response.content.decode()
    new = ShareLink.objects.exclude(id=link.id).get()
    assert new.token != token


def test_invalid_options_are_refused_with_a_message(conversation, owner_client) -> None:
    response = owner_client.post(
        reverse("share_dialog", args=[conversation.id]),
        {"visibility": "everyone", "expiry_days": "3"},
        headers={"HX-Request": "true"},
    )

    assert response.status_code == 200
    assert "Check the options" in response.content.decode()
    assert not ShareLink.objects.exists()


def test_shared_links_page_lists_status_views_expiry_and_revoke(conversation, owner_client) -> None:
    live, _ = create_link(conversation, expiry_days=7)
    dead, _ = create_link(conversation)
    sharing_services.share_link_revoke(link_id=dead.id, user=conversation.owner)
    ShareLink.objects.filter(id=live.id).update(view_count=5)

    body = owner_client.get(reverse("shared_links")).content.decode()

    assert "Active" in body
    assert "Revoked" in body
    assert ">5<" in body
    assert body.count(">Revoke</button>") == 1
    assert live.token in body
    assert dead.token not in body


def test_shared_links_page_revoke_redirects_back(conversation, owner_client, client) -> None:
    link, token = create_link(conversation)

    response = owner_client.post(reverse("share_link_revoke", args=[link.id]))

    assert response.status_code == 302
    assert response["Location"] == reverse("shared_links")
    assert client.get(f"/s/{token}/").status_code == 404


# --- Ownership and CSRF ------------------------------------------------------------------


@pytest.fixture
def mallory_client(make_user) -> Client:
    client = Client()
    client.force_login(make_user("mallory"))
    return client


def test_non_owner_cannot_open_the_dialog_or_preview(conversation, mallory_client) -> None:
    assert mallory_client.get(reverse("share_dialog", args=[conversation.id])).status_code == 404
    assert mallory_client.get(reverse("share_preview", args=[conversation.id])).status_code == 404


def test_non_owner_cannot_create_a_link(conversation, mallory_client, make_user) -> None:
    response = mallory_client.post(
        reverse("share_dialog", args=[conversation.id]),
        {"visibility": "anyone", "expiry_days": "0"},
    )

    assert response.status_code == 404
    assert not ShareLink.objects.exists()
    with pytest.raises(Conversation.DoesNotExist):
        sharing_services.share_link_create(
            conversation_id=conversation.id, user=make_user("eve"), options=ShareOptions()
        )


def test_non_owner_cannot_update_a_link(conversation, mallory_client, make_user) -> None:
    link, _ = create_link(conversation)
    add_turn(conversation, "later", "LATER")

    response = mallory_client.post(
        reverse("share_dialog", args=[conversation.id]),
        {"visibility": "anyone", "expiry_days": "0"},
    )

    assert response.status_code == 404
    link.refresh_from_db()
    assert "LATER" not in repr(link.messages)
    with pytest.raises(ShareLink.DoesNotExist):
        sharing_services.share_link_update(
            link_id=link.id, user=make_user("eve"), options=ShareOptions()
        )


def test_non_owner_cannot_revoke_a_link(conversation, mallory_client, client) -> None:
    link, token = create_link(conversation)

    response = mallory_client.post(reverse("share_link_revoke", args=[link.id]))

    assert response.status_code == 404
    assert client.get(f"/s/{token}/").status_code == 200


def test_non_owner_does_not_see_other_peoples_links(conversation, mallory_client) -> None:
    link, _ = create_link(conversation)

    body = mallory_client.get(reverse("shared_links")).content.decode()

    assert link.token not in body
    assert "Rust lifetimes" not in body


def test_anonymous_is_sent_to_login_by_management_endpoints(conversation, client) -> None:
    link, _ = create_link(conversation)

    responses = [
        client.get(reverse("share_dialog", args=[conversation.id])),
        client.post(reverse("share_link_revoke", args=[link.id])),
        client.get(reverse("shared_links")),
    ]

    assert all(r.status_code == 302 and "/accounts/login/" in r["Location"] for r in responses)


def test_management_posts_are_csrf_protected(conversation, user) -> None:
    link, _ = create_link(conversation)
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)

    create = client.post(
        reverse("share_dialog", args=[conversation.id]),
        {"visibility": "anyone", "expiry_days": "0"},
    )
    revoke = client.post(reverse("share_link_revoke", args=[link.id]))

    assert create.status_code == 403
    assert revoke.status_code == 403
    link.refresh_from_db()
    assert link.revoked_at is None


def test_login_then_continue_round_trip(conversation, make_user) -> None:
    _, token = create_link(conversation)
    make_user("carol")
    client = Client()

    login = client.post(
        f"/accounts/login/?next=/s/{token}/",
        {"username": "carol", "password": PASSWORD, "next": f"/s/{token}/"},
    )

    assert login["Location"] == f"/s/{token}/"
    assert client.get(login["Location"]).status_code == 200


def test_continue_accepts_the_null_origin_of_a_no_referrer_page_with_its_token(
    conversation, make_user
) -> None:
    _, token = create_link(conversation)
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_user("bob"))
    page = client.get(f"/s/{token}/")
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())
    assert csrf is not None

    without_token = client.post(f"/s/{token}/continue/", headers={"Origin": "null"})
    foreign = client.post(
        f"/s/{token}/continue/",
        {"csrfmiddlewaretoken": csrf.group(1)},
        headers={"Origin": "https://evil.example"},
    )
    with_token = client.post(
        f"/s/{token}/continue/",
        {"csrfmiddlewaretoken": csrf.group(1)},
        headers={"Origin": "null"},
    )

    assert without_token.status_code == 403
    assert foreign.status_code == 403
    assert with_token.status_code == 302
    assert Conversation.objects.filter(owner__username="bob").count() == 1


def test_publish_creates_once_then_updates_the_live_link(conversation) -> None:
    first, created = sharing_services.share_link_publish(
        conversation_id=conversation.id, user=conversation.owner, options=ShareOptions()
    )
    add_turn(conversation, "later", "LATER")

    second, created_again = sharing_services.share_link_publish(
        conversation_id=conversation.id, user=conversation.owner, options=ShareOptions()
    )

    assert created is True
    assert created_again is False
    assert second.id == first.id
    assert ShareLink.objects.count() == 1
    assert second.messages[-1]["content"] == "LATER"


def test_snapshot_keeps_only_web_links_among_citations(conversation) -> None:
    Message.objects.filter(id=conversation.active_leaf_id).update(
        citations=[
            {"url": "https://example.org/a", "title": "A"},
            {"url": "javascript:alert(1)", "title": "bad"},
            {"url": " data:text/html,x", "title": "bad"},
            "not a dict",
        ]
    )
    conversation.refresh_from_db()

    link, _ = create_link(conversation)

    assert link.messages[1]["citations"] == [{"url": "https://example.org/a", "title": "A"}]


def test_an_empty_conversation_cannot_be_shared(user, owner_client) -> None:
    empty = chat_services.conversation_create(owner=user)
    url = reverse("share_dialog", args=[empty.id])

    dialog = owner_client.get(url, headers={"HX-Request": "true"}).content.decode()
    refused = owner_client.post(
        url, {"visibility": "anyone", "expiry_days": "0"}, headers={"HX-Request": "true"}
    )

    assert re.search(r"<button[^>]*disabled[^>]*>Create link</button>", dialog)
    assert "Nothing to share yet" in refused.content.decode()
    assert not ShareLink.objects.filter(conversation=empty).exists()


def test_a_copy_of_a_long_title_keeps_its_copy_mark() -> None:
    title = sharing_services.copy_title(title="x" * 300)

    assert title.endswith("… (copy)")
    assert len(title) == Conversation._meta.get_field("title").max_length
