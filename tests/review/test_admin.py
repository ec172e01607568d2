"""Admin review of transcripts: permissions, the logged transcript gate, review, filters,
search, totals, the usage chart and exports."""

import json
from decimal import Decimal

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from conversations.chat import services as chat_services
from conversations.models import (
    Conversation,
    ConversationReview,
    Message,
    ShareLink,
    TranscriptAccess,
)
from conversations.sharing import services as sharing_services
from conversations.sharing.services import ShareOptions
from tests.support.transcripts import add_turn

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_password_hashing")]

CHANGELIST = "/admin/conversations/conversation/"


def staff_client(make_user, username: str, *codenames: str) -> tuple[Client, object]:
    staff = make_user(username, is_staff=True)
    staff.user_permissions.set(
        Permission.objects.filter(content_type__app_label="conversations", codename__in=codenames)
    )
    client = Client()
    client.force_login(staff)
    return client, staff


@pytest.fixture
def conversation(user) -> Conversation:
    conversation = Conversation.objects.create(owner=user, title="Tax question")
    add_turn(
        conversation,
        "How do I file <b>late</b>?",
        "File form **T-1** <script>alert(1)</script>",
        reasoning="Consider deadlines",
    )
    Message.objects.filter(role="assistant").update(
        request_params={"max_tokens": 2048, "top_p": 0.9}, time_to_first_token_ms=321
    )
    return conversation


@pytest.fixture
def viewer(make_user):
    return staff_client(
        make_user,
        "viewer",
        "view_conversation",
        "view_message",
        "view_transcriptaccess",
        "view_sharelink",
    )


@pytest.fixture
def reviewer(make_user):
    return staff_client(
        make_user,
        "reviewer",
        "view_conversation",
        "change_conversation",
        "view_message",
        "view_transcriptaccess",
    )


def transcript_url(conversation: Conversation) -> str:
    return reverse("admin:conversations_conversation_transcript", args=[conversation.pk])


def open_transcript(client: Client, conversation: Conversation, reason: str = "abuse report"):
    response = client.post(transcript_url(conversation), {"reason": reason})
    assert response.status_code == 302
    return client.get(response["Location"])


# --- Permissions -------------------------------------------------------------------------


def test_non_staff_are_blocked_everywhere(conversation, user) -> None:
    client = Client()
    client.force_login(user)

    urls = [
        CHANGELIST,
        transcript_url(conversation),
        reverse("admin:conversations_conversation_usage"),
        "/admin/conversations/transcriptaccess/",
    ]

    for url in urls:
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")
    assert client.post(transcript_url(conversation), {"reason": "curious"}).status_code == 302
    assert not TranscriptAccess.objects.exists()


def test_staff_without_view_permission_cannot_open_a_transcript(conversation, make_user) -> None:
    client, _ = staff_client(make_user, "intern")

    assert client.get(CHANGELIST).status_code == 403
    assert client.get(transcript_url(conversation)).status_code == 403
    assert client.post(transcript_url(conversation), {"reason": "curious"}).status_code == 403
    assert not TranscriptAccess.objects.exists()


def test_view_only_staff_can_read_but_not_change(conversation, viewer) -> None:
    client, _ = viewer
    change_url = reverse("admin:conversations_conversation_change", args=[conversation.pk])

    changelist = client.get(CHANGELIST)
    change = client.get(change_url)
    transcript = open_transcript(client, conversation)
    review = client.post(
        reverse("admin:conversations_conversation_review", args=[conversation.pk]),
        {"note": "mine now", "mark_reviewed": "1"},
    )
    edit = client.post(change_url, {"title": "renamed"})

    assert changelist.status_code == 200
    assert change.status_code == 200
    assert 'name="_save"' not in change.content.decode()
    assert "File form" in transcript.content.decode()
    assert "Save and mark reviewed" not in transcript.content.decode()
    assert review.status_code == 403
    assert edit.status_code == 403
    assert not ConversationReview.objects.exists()
    assert Conversation.objects.get().title == "Tax question"


def test_view_only_staff_get_no_changing_actions(conversation, viewer) -> None:
    client, _ = viewer

    body = client.get(CHANGELIST).content.decode()
    flag = client.post(
        CHANGELIST, {"action": "flag_selected", ACTION_CHECKBOX_NAME: [str(conversation.pk)]}
    )

    assert 'value="export_json"' in body
    assert 'value="flag_selected"' not in body
    assert 'value="mark_reviewed"' not in body
    assert flag.status_code in (200, 302)
    assert not ConversationReview.objects.exists()


def test_admin_list_and_change_pages_show_no_message_text(conversation, viewer) -> None:
    client, _ = viewer
    message = Message.objects.get(role="assistant")

    changelist = client.get(CHANGELIST).content.decode()
    change = client.get(
        reverse("admin:conversations_conversation_change", args=[conversation.pk])
    ).content.decode()
    message_pages = [
        client.get(f"/admin/conversations/message/{suffix}")
        for suffix in ("", f"{message.pk}/change/", f"{message.pk}/history/", "?q=File")
    ]

    assert "File form" not in changelist
    assert "File form" not in change
    # No message admin at all: a message is read in its logged transcript.
    assert [page.status_code for page in message_pages] == [404, 404, 404, 404]


# --- The logged transcript gate ----------------------------------------------------------


def test_transcript_asks_for_a_reason_before_showing_anything(conversation, viewer) -> None:
    client, _ = viewer

    gate = client.get(transcript_url(conversation))
    empty = client.post(transcript_url(conversation), {"reason": "  "})

    assert gate.status_code == 200
    assert "Why are you opening this transcript?" in gate.content.decode()
    assert "File form" not in gate.content.decode()
    assert "File form" not in empty.content.decode()
    assert not TranscriptAccess.objects.exists()


def test_opening_a_transcript_records_who_when_which_and_why(conversation, viewer) -> None:
    client, staff = viewer

    response = open_transcript(client, conversation, reason="User report #42")

    entry = TranscriptAccess.objects.get()
    assert entry.staff == staff
    assert entry.staff_username == "viewer"
    assert entry.conversation == conversation
    assert entry.conversation_uuid == conversation.id
    assert entry.reason == "User report #42"
    assert entry.kind == TranscriptAccess.Kind.VIEW
    assert entry.accessed_at is not None
    assert response.status_code == 200


def test_a_reload_of_the_opened_transcript_does_not_log_again(conversation, viewer) -> None:
    client, _ = viewer
    first = client.post(transcript_url(conversation), {"reason": "User report #42"})

    client.get(first["Location"])
    client.get(first["Location"])

    assert TranscriptAccess.objects.count() == 1


def test_someone_elses_access_entry_does_not_open_the_transcript(
    conversation, viewer, reviewer
) -> None:
    client, _ = viewer
    other_client, _ = reviewer
    first = client.post(transcript_url(conversation), {"reason": "User report #42"})

    borrowed = other_client.get(first["Location"])

    assert "File form" not in borrowed.content.decode()
    assert "Why are you opening" in borrowed.content.decode()


def test_without_the_reason_setting_opening_still_logs(conversation, viewer, settings) -> None:
    settings.CHAT_REVIEW_REASON_REQUIRED = False
    client, _ = viewer

    response = client.get(transcript_url(conversation), follow=True)

    assert "File form" in response.content.decode()
    entry = TranscriptAccess.objects.get()
    assert entry.reason == ""


def test_transcript_renders_sanitised_with_reasoning_parameters_and_usage(
    conversation, viewer
) -> None:
    client, _ = viewer

    body = open_transcript(client, conversation).content.decode()

    assert "<strong>T-1</strong>" in body
    assert "<script>alert(1)</script>" not in body
    assert "How do I file &lt;b&gt;late&lt;/b&gt;?" in body
    assert "Consider deadlines" in body
    assert "max_tokens=2048" in body
    assert "top_p=0.9" in body
    assert "10 prompt · 5 completion" in body
    assert "$0.000123" in body
    assert "first token 321 ms" in body


def test_access_log_is_append_only_even_for_superusers(conversation, make_user) -> None:
    admin_user = make_user("root", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(admin_user)
    open_transcript(client, conversation)
    entry = TranscriptAccess.objects.get()

    change = client.get(reverse("admin:conversations_transcriptaccess_change", args=[entry.pk]))
    delete = client.post(
        reverse("admin:conversations_transcriptaccess_delete", args=[entry.pk]), {"post": "yes"}
    )

    assert change.status_code == 200
    assert 'name="_save"' not in change.content.decode()
    assert delete.status_code == 403
    assert TranscriptAccess.objects.count() == 1


# --- Review workflow ---------------------------------------------------------------------


def test_reviewer_flags_notes_and_marks_reviewed_and_the_owner_sees_it(
    conversation, reviewer, user
) -> None:
    client, staff = reviewer
    opened = client.post(transcript_url(conversation), {"reason": "Spot check"})
    access_id = opened["Location"].split("access=")[1]

    response = client.post(
        reverse("admin:conversations_conversation_review", args=[conversation.pk]),
        {
            "note": "Looks fine <b>really</b>.",
            "flagged": "on",
            "mark_reviewed": "1",
            "access": access_id,
        },
    )
    owner = Client()
    owner.force_login(user)
    page = owner.get(f"/c/{conversation.id}/").content.decode()

    review = ConversationReview.objects.get(conversation=conversation)
    assert response.status_code == 302
    assert response["Location"].endswith(f"?access={access_id}")
    assert review.flagged is True
    assert review.flagged_by == staff
    assert review.reviewed_by == staff
    assert review.note == "Looks fine <b>really</b>."
    assert "Reviewed by <strong>reviewer</strong>" in page
    assert "Looks fine &lt;b&gt;really&lt;/b&gt;." in page
    assert "Transcript last opened by staff member <strong>reviewer</strong>" in page


def test_saving_a_note_without_marking_reviewed_leaves_it_unreviewed(
    conversation, reviewer
) -> None:
    client, _ = reviewer

    client.post(
        reverse("admin:conversations_conversation_review", args=[conversation.pk]),
        {"note": "half way"},
    )

    review = ConversationReview.objects.get()
    assert review.note == "half way"
    assert review.reviewed_at is None
    assert review.flagged is False


def test_flag_and_mark_reviewed_actions(conversation, reviewer) -> None:
    client, staff = reviewer

    client.post(
        CHANGELIST, {"action": "flag_selected", ACTION_CHECKBOX_NAME: [str(conversation.pk)]}
    )
    client.post(
        CHANGELIST, {"action": "mark_reviewed", ACTION_CHECKBOX_NAME: [str(conversation.pk)]}
    )

    review = ConversationReview.objects.get()
    assert review.flagged is True
    assert review.reviewed_by == staff


def test_owner_page_is_silent_when_nobody_reviewed(conversation, user) -> None:
    client = Client()
    client.force_login(user)

    page = client.get(f"/c/{conversation.id}/").content.decode()

    assert "Reviewed by" not in page
    assert "Transcript last opened" not in page


# --- Filters, search and totals ----------------------------------------------------------


@pytest.fixture
def assorted(conversation, make_user) -> dict[str, Conversation]:
    bob = make_user("bob")
    errored = Conversation.objects.create(owner=bob, title="Broken one")
    reply = add_turn(errored, "hello", "partial")
    Message.objects.filter(id=reply.id).update(status=Message.Status.ERROR, model="other/model")
    shared = Conversation.objects.create(owner=bob, title="Shared one")
    add_turn(shared, "needle in the text", "hay")
    sharing_services.share_link_create(conversation_id=shared.id, user=bob, options=ShareOptions())
    revoked = Conversation.objects.create(owner=bob, title="Once shared")
    link, _ = sharing_services.share_link_create(
        conversation_id=revoked.id, user=bob, options=ShareOptions()
    )
    sharing_services.share_link_revoke(link_id=link.id, user=bob)
    ConversationReview.objects.create(conversation=errored, flagged=True)
    return {"tax": conversation, "errored": errored, "shared": shared, "revoked": revoked}


def listed_titles(client: Client, query: str) -> set[str]:
    response = client.get(f"{CHANGELIST}?{query}")
    if "cl" not in response.context:
        # A content search: give the reason, then see the results.
        gate = client.post(f"{CHANGELIST}?{query}", {"reason": "abuse report"})
        assert gate.status_code == 302
        response = client.get(gate["Location"])
    assert response.status_code == 200
    return {c.title for c in response.context["cl"].result_list}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("has_error=yes", {"Broken one"}),
        ("has_error=no&empty=include", {"Tax question", "Shared one", "Once shared"}),
        ("has_error=no", {"Tax question", "Shared one"}),
        ("shared=yes", {"Shared one"}),
        ("flagged=yes", {"Broken one"}),
        ("status=error", {"Broken one"}),
        ("model=other%2Fmodel", {"Broken one"}),
        ("q=needle", {"Shared one"}),
        ("q=Tax", {"Tax question"}),
    ],
)
def test_changelist_filters_and_search(assorted, viewer, query, expected) -> None:
    client, _ = viewer

    assert listed_titles(client, query) == expected


def test_owner_filter(assorted, viewer, user) -> None:
    client, _ = viewer

    assert listed_titles(client, f"owner__id__exact={user.pk}") == {"Tax question"}


def test_date_filter(assorted, viewer) -> None:
    client, _ = viewer
    Conversation.objects.filter(title="Tax question").update(created_at="2020-01-02T00:00:00Z")

    titles = listed_titles(
        client,
        "created_at__gte=2020-01-01T00:00:00%2B00:00&created_at__lt=2020-01-03T00:00:00%2B00:00",
    )

    assert titles == {"Tax question"}


def test_changelist_totals_are_not_multiplied_by_filters(assorted, viewer) -> None:
    client, _ = viewer
    add_turn(assorted["tax"], "again", "again")

    client.post(f"{CHANGELIST}?q=again", {"reason": "totals check"})
    response = client.get(f"{CHANGELIST}?q=again")

    (row,) = response.context["cl"].result_list
    assert row.message_total == 4
    assert row.token_total == 30
    assert row.cost_total == Decimal("0.000246")


def test_usage_page_has_per_user_totals_and_an_svg_chart(assorted, viewer) -> None:
    client, _ = viewer

    response = client.get(reverse("admin:conversations_conversation_usage"))

    body = response.content.decode()
    assert response.status_code == 200
    assert "<svg" in body
    assert body.count('class="chart-bar"') == 30
    per_user = {row["username"]: row for row in response.context["per_user"]}
    assert per_user["alice"]["tokens"] == 15
    assert per_user["bob"]["replies"] == 2
    assert per_user["bob"]["conversations"] == 2
    assert response.context["points"][-1][1] == 45


# --- Exports -----------------------------------------------------------------------------


def test_export_asks_for_a_reason_then_logs_each_conversation(assorted, viewer) -> None:
    client, staff = viewer
    selected = [str(assorted["tax"].pk), str(assorted["shared"].pk)]

    gate = client.post(CHANGELIST, {"action": "export_json", ACTION_CHECKBOX_NAME: selected})
    logged_before_reason = TranscriptAccess.objects.count()
    export = client.post(
        CHANGELIST,
        {"action": "export_json", ACTION_CHECKBOX_NAME: selected, "reason": "Legal hold 7"},
    )

    assert "Why are you exporting" in gate.content.decode()
    assert "Why are you opening" not in gate.content.decode()
    assert logged_before_reason == 0
    assert export["Content-Disposition"].startswith('attachment; filename="conversations-')
    data = json.loads(export.content)
    assert {d["title"] for d in data} == {"Tax question", "Shared one"}
    assert {d["owner"] for d in data} == {"alice", "bob"}
    entries = TranscriptAccess.objects.all()
    assert {e.conversation_title for e in entries} == {"Tax question", "Shared one"}
    assert {(e.staff, e.kind, e.reason) for e in entries} == {
        (staff, TranscriptAccess.Kind.EXPORT_JSON, "Legal hold 7")
    }


def test_markdown_export_action(assorted, viewer) -> None:
    client, _ = viewer

    export = client.post(
        CHANGELIST,
        {
            "action": "export_md",
            ACTION_CHECKBOX_NAME: [str(assorted["tax"].pk)],
            "reason": "Legal hold 7",
        },
    )

    text = export.content.decode()
    assert export["Content-Type"] == "text/markdown; charset=utf-8"
    assert "# Tax question" in text
    assert "<!-- owner: alice -->" in text
    assert TranscriptAccess.objects.get().kind == TranscriptAccess.Kind.EXPORT_MARKDOWN


def test_share_link_admin_never_shows_the_token(assorted, viewer) -> None:
    client, _ = viewer
    link = ShareLink.objects.filter(revoked_at__isnull=True).get()

    listing = client.get("/admin/conversations/sharelink/").content.decode()
    change = client.get(
        reverse("admin:conversations_sharelink_change", args=[link.pk])
    ).content.decode()

    assert link.token not in listing
    assert link.token not in change
    assert link.token_digest not in change


def test_delete_confirmation_names_conversations_without_message_text(
    conversation, make_user
) -> None:
    root = make_user("root", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(root)

    page = client.get(reverse("admin:conversations_conversation_delete", args=[conversation.pk]))

    body = page.content.decode()
    assert "Tax question" in body
    assert "How do I file" not in body
    assert "File form" not in body


def test_empty_conversations_are_hidden_unless_asked_for(assorted, viewer, user) -> None:
    client, _ = viewer
    blank = chat_services.conversation_create(owner=user)

    def listed(query: dict[str, str]) -> set[object]:
        response = client.get(CHANGELIST, query)
        return {c.pk for c in response.context["cl"].result_list}

    default, included, only = listed({}), listed({"empty": "include"}), listed({"empty": "only"})

    tax = assorted["tax"].pk
    assert blank.pk not in default and tax in default
    assert {blank.pk, tax} <= included
    assert blank.pk in only and tax not in only
