"""Pin and archive, feedback on replies, and Copy as Markdown's source: services, selectors,
views, and that nobody reaches another user's conversations or replies."""

import uuid

import pytest
from django.test import Client
from django.urls import reverse

from conversations.chat import frames, selectors, services
from conversations.models import Conversation, MessageFeedback
from tests.support.factories import exchange

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_password_hashing")]

HTMX = {"HX-Request": "true"}


def chat(owner, title: str, question: str = "q", answer: str = "a") -> Conversation:
    conversation = services.conversation_create(owner=owner)
    exchange(conversation, question, answer)
    Conversation.objects.filter(pk=conversation.pk).update(title=title)
    conversation.refresh_from_db()
    return conversation


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def sidebar_titles(owner, current=None) -> list[str]:
    return [
        c.title
        for c in selectors.conversation_sidebar_for_user(
            user=owner, current_id=current.id if current else None, limit=100
        )
    ]


# --- Pin and archive: services and selectors ----------------------------------------------


def test_pinned_conversations_head_the_sidebar_most_recently_pinned_first(user) -> None:
    old = chat(user, "old")
    middle = chat(user, "middle")
    chat(user, "newest")
    assert sidebar_titles(user) == ["newest", "middle", "old"]

    services.conversation_pin_set(conversation_id=old.id, owner=user, on=True)
    services.conversation_pin_set(conversation_id=middle.id, owner=user, on=True)

    assert sidebar_titles(user) == ["middle", "old", "newest"]
    services.conversation_pin_set(conversation_id=middle.id, owner=user, on=False)
    assert sidebar_titles(user) == ["old", "newest", "middle"]


def test_pinning_does_not_count_as_activity(user) -> None:
    conversation = chat(user, "quiet")
    before = conversation.updated_at

    services.conversation_pin_set(conversation_id=conversation.id, owner=user, on=True)
    services.conversation_archive_set(conversation_id=conversation.id, owner=user, on=True)

    conversation.refresh_from_db()
    assert conversation.updated_at == before
    assert conversation.archived_at is not None


def test_archived_conversations_leave_the_sidebar_and_search_but_not_the_archived_list(
    user,
) -> None:
    kept = chat(user, "kept", question="about otters")
    archived = chat(user, "put away", question="more about otters")

    services.conversation_archive_set(conversation_id=archived.id, owner=user, on=True)

    # Even while it is the one on screen.
    assert sidebar_titles(user, current=archived) == ["kept"]
    found = selectors.conversation_search_for_user(user=user, query="otters")
    assert [hit.conversation.id for hit in found] == [kept.id]
    everything = selectors.conversation_search_for_user(
        user=user, query="otters", include_archived=True
    )
    assert {hit.conversation.id for hit in everything} == {kept.id, archived.id}
    assert [c.id for c in selectors.conversation_archived_for_user(user=user)] == [archived.id]

    services.conversation_archive_set(conversation_id=archived.id, owner=user, on=False)
    assert set(sidebar_titles(user)) == {"kept", "put away"}
    assert selectors.conversation_archived_for_user(user=user) == []


def test_archiving_unpins_and_pinning_unarchives(user) -> None:
    conversation = chat(user, "both")
    services.conversation_pin_set(conversation_id=conversation.id, owner=user, on=True)

    archived = services.conversation_archive_set(
        conversation_id=conversation.id, owner=user, on=True
    )
    assert archived.pinned_at is None and archived.archived_at is not None

    pinned = services.conversation_pin_set(conversation_id=conversation.id, owner=user, on=True)
    assert pinned.pinned_at is not None and pinned.archived_at is None


def test_home_does_not_reopen_an_archived_blank_conversation(user) -> None:
    blank = services.conversation_create(owner=user)
    services.conversation_archive_set(conversation_id=blank.id, owner=user, on=True)

    assert selectors.conversation_empty_for_user(user=user) is None


def test_the_services_refuse_another_users_conversation(user, make_user) -> None:
    theirs = chat(make_user("mallory"), "theirs")

    with pytest.raises(Conversation.DoesNotExist):
        services.conversation_pin_set(conversation_id=theirs.id, owner=user, on=True)
    with pytest.raises(Conversation.DoesNotExist):
        services.conversation_archive_set(conversation_id=theirs.id, owner=user, on=True)
    theirs.refresh_from_db()
    assert theirs.pinned_at is None and theirs.archived_at is None


# --- Pin and archive: views -----------------------------------------------------------------


def test_pin_over_htmx_answers_with_the_sidebar_sections_and_the_menu_state(user) -> None:
    chat(user, "other")
    conversation = chat(user, "to pin")
    client = signed_in(user)

    html = client.post(
        reverse("conversation_pin", args=[conversation.id]), {"state": "on"}, headers=HTMX
    ).content.decode()

    pinned_section = html[html.index('id="conversation-pinned"') : html.index("Recent</h2>")]
    assert "to pin" in pinned_section and "other" not in pinned_section
    assert 'id="conversation-list" class="conversation-list" hx-swap-oob="true"' in html
    assert '<li id="conversation-state"' in html and ">Unpin</button>" in html


def test_the_chat_page_shows_pinned_and_recent_sections_and_the_archived_note(user) -> None:
    pinned = chat(user, "Pinned one")
    chat(user, "Recent one")
    archived = chat(user, "Archived one")
    services.conversation_pin_set(conversation_id=pinned.id, owner=user, on=True)
    services.conversation_archive_set(conversation_id=archived.id, owner=user, on=True)
    client = signed_in(user)

    page = client.get(reverse("conversation", args=[archived.id])).content.decode()
    sidebar = page[page.index('id="conversation-pinned"') : page.index('id="archived-link"')]
    assert sidebar.index("Pinned one") < sidebar.index("Recent</h2>") < sidebar.index("Recent one")
    assert "Archived one" not in sidebar
    assert "This conversation is archived" in page
    assert ">Unarchive</button>" in page

    plain = client.get(reverse("conversation", args=[pinned.id])).content.decode()
    assert "This conversation is archived" not in plain
    assert ">Unpin</button>" in plain and ">Archive</button>" in plain


def test_archived_page_lists_them_and_unarchive_without_scripts_returns_there(user) -> None:
    archived = chat(user, "Old <b>project</b>")
    services.conversation_archive_set(conversation_id=archived.id, owner=user, on=True)
    client = signed_in(user)

    page = client.get(reverse("archived")).content.decode()
    assert "Old &lt;b&gt;project&lt;/b&gt;" in page and "<b>project" not in page

    response = client.post(
        reverse("conversation_archive", args=[archived.id]), {"state": "off", "next": "archived"}
    )
    assert response.status_code == 302 and response["Location"] == reverse("archived")
    archived.refresh_from_db()
    assert archived.archived_at is None


def test_search_leaves_archived_out_unless_asked(user) -> None:
    chat(user, "visible", question="walrus facts")
    hidden = chat(user, "hidden", question="walrus songs")
    services.conversation_archive_set(conversation_id=hidden.id, owner=user, on=True)
    client = signed_in(user)

    default = client.get(reverse("search"), {"q": "walrus"}, headers=HTMX).content.decode()
    assert "visible" in default and "hidden" not in default
    assert "Search archived conversations too" in default

    widened = client.get(
        reverse("search"), {"q": "walrus", "archived": "1"}, headers=HTMX
    ).content.decode()
    assert "hidden" in widened and "(archived)" in widened


def test_a_bad_state_is_refused(user) -> None:
    conversation = chat(user, "x")
    response = signed_in(user).post(
        reverse("conversation_pin", args=[conversation.id]), {"state": "maybe"}
    )
    assert response.status_code == 400


@pytest.mark.parametrize("name", ["conversation_pin", "conversation_archive"])
def test_pin_and_archive_of_another_users_conversation_is_404(user, make_user, name) -> None:
    theirs = chat(make_user("mallory"), "theirs")

    response = signed_in(user).post(reverse(name, args=[theirs.id]), {"state": "on"})

    assert response.status_code == 404
    theirs.refresh_from_db()
    assert theirs.pinned_at is None and theirs.archived_at is None


def test_signed_out_visitors_are_sent_to_sign_in(user) -> None:
    conversation = chat(user, "x")
    response = Client().post(reverse("conversation_pin", args=[conversation.id]), {"state": "on"})
    assert response.status_code == 302 and "/login/" in response["Location"]
    assert Client().get(reverse("archived")).status_code == 302


def test_the_sidebar_frame_carries_the_pin_state_to_every_tab(user) -> None:
    conversation = chat(user, "live")
    services.conversation_pin_set(conversation_id=conversation.id, owner=user, on=True)
    conversation.refresh_from_db()

    frame = frames.sidebar(
        conversations=selectors.conversation_sidebar_for_user(
            user=user, current_id=conversation.id, limit=100
        ),
        current=conversation,
    )

    assert 'id="conversation-pinned" class="sidebar-section" hx-swap-oob="true"' in frame
    assert '<li id="conversation-state" class="chat-menu-state" hx-swap-oob="true">' in frame
    assert ">Unpin</button>" in frame
    assert 'id="archived-notice" hx-swap-oob="true"' in frame


# --- Feedback ---------------------------------------------------------------------------------


def test_feedback_is_set_changed_and_cleared_by_the_owner(user) -> None:
    conversation = services.conversation_create(owner=user)
    _, reply = exchange(conversation, "q", "a")

    services.message_feedback_set(message_id=reply.id, owner=user, rating="down", comment=" meh ")
    assert MessageFeedback.objects.get(message=reply).comment == "meh"
    services.message_feedback_set(message_id=reply.id, owner=user, rating="up", comment="")
    feedback = MessageFeedback.objects.get(message=reply)
    assert (feedback.rating, feedback.comment) == ("up", "")
    services.message_feedback_clear(message_id=reply.id, owner=user)
    assert not MessageFeedback.objects.filter(message=reply).exists()


def test_feedback_is_only_for_finished_replies_and_bounded(user) -> None:
    conversation = services.conversation_create(owner=user)
    asked, reply = exchange(conversation, "q", "a")

    with pytest.raises(services.FeedbackRefused):
        services.message_feedback_set(message_id=asked.id, owner=user, rating="up", comment="")
    with pytest.raises(services.FeedbackRefused):
        services.message_feedback_set(message_id=reply.id, owner=user, rating="meh", comment="")
    with pytest.raises(services.FeedbackRefused):
        services.message_feedback_set(
            message_id=reply.id,
            owner=user,
            rating="down",
            comment="x" * (MessageFeedback.COMMENT_MAX_CHARS + 1),
        )
    assert not MessageFeedback.objects.exists()


def test_the_thread_window_carries_feedback_without_an_extra_query(
    user, django_assert_max_num_queries
) -> None:
    conversation = services.conversation_create(owner=user)
    _, first = exchange(conversation, "q1", "a1")
    _, second = exchange(conversation, "q2", "a2")
    services.message_feedback_set(message_id=first.id, owner=user, rating="down", comment="no")
    conversation.refresh_from_db()

    with django_assert_max_num_queries(2):
        window = selectors.thread_window(conversation=conversation)

    by_id = {m.id: m.user_feedback for m in window.messages}
    assert (by_id[first.id].rating, by_id[first.id].comment) == ("down", "no")
    assert by_id[second.id] is None


def test_feedback_view_rates_renders_pressed_state_and_clears(user) -> None:
    conversation = services.conversation_create(owner=user)
    _, reply = exchange(conversation, "q", "a")
    client = signed_in(user)
    url = reverse("message_feedback", args=[reply.id])

    html = client.post(url, {"rating": "down", "comment": "<i>wrong</i>"}, headers=HTMX)
    body = html.content.decode()
    assert html.status_code == 200
    assert 'data-rating="down" aria-pressed="true"' in body
    assert 'data-rating="up" aria-pressed="false"' in body
    assert "&lt;i&gt;wrong&lt;/i&gt;" in body and "<i>wrong" not in body
    assert '<details class="feedback-comment" open>' in body
    # Pressing the pressed button again sends an empty rating: the feedback is taken back.
    assert (
        'name="rating" value="" class="action action--icon feedback-button" data-rating="down"'
        in (body)
    )

    cleared = client.post(url, {"rating": ""}, headers=HTMX).content.decode()
    assert 'aria-pressed="true"' not in cleared
    assert not MessageFeedback.objects.exists()


def test_feedback_on_the_page_is_shown_pressed(user) -> None:
    conversation = services.conversation_create(owner=user)
    _, reply = exchange(conversation, "q", "a")
    services.message_feedback_set(message_id=reply.id, owner=user, rating="up", comment="great")

    page = signed_in(user).get(reverse("conversation", args=[conversation.id])).content.decode()

    assert 'data-rating="up" aria-pressed="true"' in page
    assert ">great</textarea>" in page


def test_a_too_long_comment_is_refused_with_words(user) -> None:
    conversation = services.conversation_create(owner=user)
    _, reply = exchange(conversation, "q", "a")

    response = signed_in(user).post(
        reverse("message_feedback", args=[reply.id]),
        {"rating": "down", "comment": "x" * 1001},
        headers=HTMX,
    )

    assert response.status_code == 400
    assert 'role="alert"' in response.content.decode()
    assert not MessageFeedback.objects.exists()


def test_feedback_on_another_users_reply_or_an_unknown_id_is_404(user, make_user) -> None:
    theirs = services.conversation_create(owner=make_user("mallory"))
    _, reply = exchange(theirs, "q", "a")
    client = signed_in(user)

    for message_id in (reply.id, uuid.uuid4()):
        response = client.post(
            reverse("message_feedback", args=[message_id]), {"rating": "down"}, headers=HTMX
        )
        assert response.status_code == 404
    assert not MessageFeedback.objects.exists()
    with pytest.raises(type(reply).DoesNotExist):
        services.message_feedback_clear(message_id=reply.id, owner=user)


def test_feedback_goes_with_its_conversation(user) -> None:
    conversation = services.conversation_create(owner=user)
    _, reply = exchange(conversation, "q", "a")
    services.message_feedback_set(message_id=reply.id, owner=user, rating="down", comment="bad")

    services.conversation_delete(conversation_id=conversation.id, owner=user)

    assert not MessageFeedback.objects.exists()


# --- Copy as Markdown -----------------------------------------------------------------------


def test_copy_as_markdown_fetches_the_export_rendering_of_the_thread(user, make_user) -> None:
    conversation = services.conversation_create(owner=user)
    exchange(conversation, "What is 2+2?", "**4**")
    client = signed_in(user)

    page = client.get(reverse("conversation", args=[conversation.id])).content.decode()
    url = reverse("conversation_export_markdown", args=[conversation.id])
    assert f'data-copy-markdown="{url}"' in page
    text = client.get(url).content.decode()
    assert text.startswith("# What is 2+2?\n")
    assert "## You\n\nWhat is 2+2?" in text and "## Claude\n\n**4**" in text
    assert signed_in(make_user("mallory")).get(url).status_code == 404


def test_a_rating_without_comment_loads_with_the_comment_box_folded(user) -> None:
    conversation = services.conversation_create(owner=user)
    _, reply = exchange(conversation, "q", "a")
    services.message_feedback_set(message_id=reply.id, owner=user, rating="down", comment="")

    page = signed_in(user).get(reverse("conversation", args=[conversation.id])).content.decode()

    assert '<details class="feedback-comment">' in page
    assert "Add a comment" in page


def test_the_json_export_carries_the_owners_feedback(user) -> None:
    conversation = services.conversation_create(owner=user)
    asked, reply = exchange(conversation, "q", "a")
    services.message_feedback_set(message_id=reply.id, owner=user, rating="down", comment="vague")

    response = signed_in(user).get(reverse("conversation_export_json", args=[conversation.id]))

    by_id = {m["id"]: m["feedback"] for m in response.json()["messages"]}
    assert by_id == {str(asked.id): None, str(reply.id): {"rating": "down", "comment": "vague"}}
