"""A user's own conversation: export as JSON and Markdown, and delete (links die with it)."""

import json

import pytest
from django.test import Client
from django.urls import reverse

from conversations.models import Conversation, Message, ShareLink, TranscriptAccess
from conversations.review import services as review_services
from conversations.sharing import services as sharing_services
from conversations.sharing.services import ShareOptions
from tests.support.transcripts import add_turn

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_password_hashing")]


@pytest.fixture
def conversation(user) -> Conversation:
    conversation = Conversation.objects.create(
        owner=user, title="Trip: Lisbon / Porto", system_prompt="Be brief."
    )
    add_turn(conversation, "Where to eat?", "Try *pastéis*.", reasoning="food thoughts")
    return conversation


def test_json_export_holds_every_message_with_usage(conversation, owner_client) -> None:
    response = owner_client.get(reverse("conversation_export_json", args=[conversation.id]))

    data = json.loads(response.content)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Content-Disposition"] == (
        f'attachment; filename="trip-lisbon-porto-{str(conversation.id)[:8]}.json"'
    )
    assert data["title"] == "Trip: Lisbon / Porto"
    assert data["system_prompt"] == "Be brief."
    assert [m["role"] for m in data["messages"]] == ["user", "assistant"]
    assert data["messages"][1]["parent"] == data["messages"][0]["id"]
    assert data["messages"][1]["usage"]["cost_usd"] == "0.000123"
    assert data["active_leaf"] == data["messages"][1]["id"]


def test_markdown_export_is_the_branch_on_screen(conversation, owner_client) -> None:
    response = owner_client.get(reverse("conversation_export_markdown", args=[conversation.id]))

    text = response.content.decode()
    assert response["Content-Type"] == "text/markdown; charset=utf-8"
    assert text.startswith("# Trip: Lisbon / Porto\n")
    assert "## System prompt\n\nBe brief." in text
    assert "## You\n\nWhere to eat?" in text
    assert "## Claude\n\n> **Thinking**\n>\n> food thoughts\n\nTry *pastéis*." in text


def test_exports_are_for_the_owner_only(conversation, make_user) -> None:
    client = Client()
    client.force_login(make_user("mallory"))

    json_response = client.get(reverse("conversation_export_json", args=[conversation.id]))
    md_response = client.get(reverse("conversation_export_markdown", args=[conversation.id]))

    assert json_response.status_code == 404
    assert md_response.status_code == 404


def test_delete_asks_in_the_dialog_only_then_deletes_and_kills_share_links(
    conversation, owner_client, client
) -> None:
    _, token = sharing_services.share_link_create(
        conversation_id=conversation.id, user=conversation.owner, options=ShareOptions()
    )
    url = reverse("conversation_delete", args=[conversation.id])

    page = owner_client.get(f"/c/{conversation.id}/").content.decode()
    second_flow = owner_client.get(url)
    deleted = owner_client.post(url)

    dialog = page[page.index('<dialog id="delete-dialog"') :]
    dialog = dialog[: dialog.index("</dialog>")]
    assert f'action="{url}"' in dialog
    assert "shared links stop working" in dialog
    assert second_flow.status_code == 405
    assert deleted.status_code == 302
    assert not Conversation.objects.filter(id=conversation.id).exists()
    assert not Message.objects.exists()
    assert not ShareLink.objects.exists()
    assert client.get(f"/s/{token}/").status_code == 404


def test_delete_keeps_the_staff_access_log(conversation, owner_client, make_user) -> None:
    staff = make_user("reviewer", is_staff=True)
    review_services.transcript_access_record(
        conversation=conversation, staff=staff, reason="abuse report", kind="view"
    )

    owner_client.post(reverse("conversation_delete", args=[conversation.id]))

    entry = TranscriptAccess.objects.get()
    assert entry.conversation is None
    assert entry.conversation_uuid == conversation.id
    assert entry.conversation_title == "Trip: Lisbon / Porto"


def test_non_owner_cannot_delete(conversation, make_user) -> None:
    client = Client()
    client.force_login(make_user("mallory"))

    response = client.post(reverse("conversation_delete", args=[conversation.id]))

    assert response.status_code == 404
    assert Conversation.objects.filter(id=conversation.id).exists()


def test_delete_is_csrf_protected(conversation, user) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)

    response = client.post(reverse("conversation_delete", args=[conversation.id]))

    assert response.status_code == 403
    assert Conversation.objects.filter(id=conversation.id).exists()


def test_chat_page_offers_share_export_and_delete(conversation, owner_client) -> None:
    body = owner_client.get(f"/c/{conversation.id}/").content.decode()

    assert ">Share</button>" in body
    assert reverse("conversation_export_json", args=[conversation.id]) in body
    assert reverse("conversation_export_markdown", args=[conversation.id]) in body
    assert reverse("conversation_delete", args=[conversation.id]) in body
    assert 'id="share-dialog"' in body
