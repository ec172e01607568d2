"""Feedback on replies in review: a list filter that shows only metadata, and the rating with
its comment in the reason-gated, logged transcript."""

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from conversations.chat import services
from conversations.models import Conversation, TranscriptAccess
from tests.support.transcripts import add_turn

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_password_hashing")]

CHANGELIST = "/admin/conversations/conversation/"
COMMENT = "It invented a <b>tax form</b>"


@pytest.fixture
def rated(make_user) -> dict[str, Conversation]:
    owner = make_user("owner")
    disliked = Conversation.objects.create(owner=owner, title="Disliked")
    reply = add_turn(disliked, "q", "a")
    services.message_feedback_set(message_id=reply.id, owner=owner, rating="down", comment=COMMENT)
    liked = Conversation.objects.create(owner=owner, title="Liked")
    reply = add_turn(liked, "q", "a")
    services.message_feedback_set(message_id=reply.id, owner=owner, rating="up", comment="")
    unrated = Conversation.objects.create(owner=owner, title="Unrated")
    add_turn(unrated, "q", "a")
    return {"disliked": disliked, "liked": liked, "unrated": unrated}


@pytest.fixture
def viewer(make_user) -> Client:
    staff = make_user("viewer", is_staff=True)
    staff.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="conversations",
            codename__in=["view_conversation", "view_conversation_title"],
        )
    )
    client = Client()
    client.force_login(staff)
    return client


def listed(client: Client, query: str) -> set[str]:
    response = client.get(f"{CHANGELIST}?{query}")
    assert response.status_code == 200
    return {c.title for c in response.context["cl"].result_list}


def test_the_negative_feedback_filter_lists_only_conversations_rated_down(rated, viewer) -> None:
    assert listed(viewer, "negative_feedback=yes") == {"Disliked"}
    assert listed(viewer, "negative_feedback=no") == {"Liked", "Unrated"}
    page = viewer.get(f"{CHANGELIST}?negative_feedback=yes").content.decode()
    assert "has negative feedback" in page
    assert "tax form" not in page


def test_the_transcript_shows_the_feedback_and_its_comment_only_after_a_logged_reason(
    rated, viewer
) -> None:
    url = reverse("admin:conversations_conversation_transcript", args=[rated["disliked"].pk])
    gate = viewer.get(url).content.decode()
    assert "tax form" not in gate

    response = viewer.post(url, {"reason": "user complaint"})
    assert response.status_code == 302
    page = viewer.get(response["Location"]).content.decode()

    assert 'data-feedback="down"' in page
    assert "It invented a &lt;b&gt;tax form&lt;/b&gt;" in page
    assert "<b>tax form" not in page
    assert TranscriptAccess.objects.get().reason == "user complaint"
