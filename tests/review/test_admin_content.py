"""Content reaches staff only through the reason gate and the access log.

Canary strings are seeded into every place content lives (message text, thinking, titles,
system prompts, share snapshots, the access log); every admin page reachable with each set of
permissions is then walked without ever giving a reason, and no canary may appear (titles only
for staff allowed to see them).
"""

import re
from collections import deque
from html import unescape

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from conversations.chat import services as chat_services
from conversations.models import (
    Conversation,
    LoginThrottle,
    TranscriptAccess,
    UserPreferences,
    UserQuota,
)
from conversations.review import services as review_services
from conversations.sharing import services as sharing_services
from conversations.sharing.services import ShareOptions
from tests.support.transcripts import add_turn

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_password_hashing")]

CHANGELIST = "/admin/conversations/conversation/"
MESSAGE_CANARY = "PIN is 4831 canary-message"
THINKING_CANARY = "canary-thinking-2323"
TITLE_CANARY = "canary-title-4412"
SYSTEM_PROMPT_CANARY = "canary-system-9090"
PREFERENCE_CANARY = "canary-preference-5151"
# The first event of a stream the app could not read: gateway text, so content.
RAW_EVENT_CANARY = "canary-raw-event-6262"
FEEDBACK_CANARY = "canary-feedback-7373"
CONTENT_CANARIES = (
    MESSAGE_CANARY,
    THINKING_CANARY,
    SYSTEM_PROMPT_CANARY,
    PREFERENCE_CANARY,
    RAW_EVENT_CANARY,
    FEEDBACK_CANARY,
)
MODELS = (
    "conversation",
    "conversationreview",
    "sharelink",
    "transcriptaccess",
    "userpreferences",
    "userquota",
    "loginthrottle",
    "usagerecord",
    "messagefeedback",
)
MAX_PAGES = 250


@pytest.fixture
def seeded(make_user) -> dict[str, object]:
    owner = make_user("owner")
    conversation = Conversation.objects.create(
        owner=owner, title=TITLE_CANARY, system_prompt=SYSTEM_PROMPT_CANARY
    )
    reply = add_turn(
        conversation, f"remember: {MESSAGE_CANARY}", MESSAGE_CANARY, reasoning=THINKING_CANARY
    )
    # The owner's comment on a reply is content too.
    chat_services.message_feedback_set(
        message_id=reply.id, owner=owner, rating="down", comment=FEEDBACK_CANARY
    )
    unreadable = add_turn(conversation, "and then?", "")
    unreadable.status, unreadable.error = "error", "The gateway's reply could not be read."
    unreadable.raw_event = f'{{"type": "message_start", "note": "{RAW_EVENT_CANARY}"}}'
    unreadable.save()
    sharing_services.share_link_create(
        conversation_id=conversation.id,
        user=owner,
        options=ShareOptions(include_system_prompt=True, include_thinking=True),
    )
    preferences = UserPreferences.objects.create(user=owner, system_prompt=PREFERENCE_CANARY)
    UserQuota.objects.create(user=owner, messages_per_day=7)
    LoginThrottle.objects.create(
        key="user:owner|127.0.0.1", window_started_at=conversation.created_at
    )
    # Another staff member read it with a reason: the log itself must not leak the title.
    auditor = make_user("auditor", is_staff=True)
    review_services.transcript_access_record(
        conversation=conversation, staff=auditor, reason="abuse report", kind="view"
    )
    return {"conversation": conversation, "preferences": preferences, "owner": owner}


def staff_with(make_user, name: str, codenames: list[str], **extra: bool) -> Client:
    staff = make_user(name, is_staff=True, **extra)
    staff.user_permissions.set(
        Permission.objects.filter(content_type__app_label="conversations", codename__in=codenames)
    )
    client = Client()
    client.force_login(staff)
    return client


def _seed_urls(seeded: dict[str, object]) -> list[str]:
    conversation = seeded["conversation"]
    preferences = seeded["preferences"]
    link = conversation.share_links.get()
    message = conversation.messages.filter(role="assistant").order_by("created_at").first()
    return [
        "/admin/",
        f"{CHANGELIST}?q=4831",
        f"{CHANGELIST}?q=canary",
        f"{CHANGELIST}?negative_feedback=yes",
        f"{CHANGELIST}{conversation.pk}/change/",
        f"{CHANGELIST}{conversation.pk}/history/",
        f"{CHANGELIST}{conversation.pk}/delete/",
        f"{CHANGELIST}{conversation.pk}/transcript/",
        f"/admin/conversations/message/{message.pk}/change/",
        f"/admin/conversations/message/{message.pk}/history/",
        f"/admin/conversations/sharelink/{link.pk}/change/",
        f"/admin/conversations/sharelink/{link.pk}/history/",
        "/admin/conversations/sharelink/?q=canary",
        f"/admin/conversations/userpreferences/{preferences.pk}/change/",
        f"/admin/conversations/userpreferences/{preferences.pk}/history/",
        f"/admin/conversations/userpreferences/{preferences.pk}/system-prompt/",
        "/admin/conversations/transcriptaccess/?q=canary",
        "/admin/autocomplete/?app_label=conversations&model_name=userquota&field_name=user&term=o",
        reverse("admin:conversations_conversation_usage"),
    ]


HREF = re.compile(r'href="(/admin/[^"#]*)"')


def walk(client: Client, start: list[str]) -> dict[str, str]:
    """Every admin page reachable by GET from `start` (links followed, never a form)."""
    seen: dict[str, str] = {}
    queue = deque(start)
    while queue and len(seen) < MAX_PAGES:
        url = unescape(queue.popleft())
        if url in seen or "/logout/" in url:
            continue
        response = client.get(url)
        body = response.content.decode(errors="replace")
        seen[url] = body
        if response.status_code in (301, 302) and response["Location"].startswith("/admin/"):
            queue.append(response["Location"])
        for href in HREF.findall(body):
            queue.append(href)
    return seen


def permission_sets() -> list[tuple[str, list[str], dict[str, bool]]]:
    sets: list[tuple[str, list[str], dict[str, bool]]] = []
    for model in MODELS:
        sets.append((f"view_{model}", [f"view_{model}"], {}))
        sets.append((f"change_{model}", [f"view_{model}", f"change_{model}"], {}))
    everything = [f"{action}_{model}" for model in MODELS for action in ("view", "change")]
    sets.append(("all_but_titles", everything, {}))
    sets.append(("all_with_titles", [*everything, "view_conversation_title"], {}))
    sets.append(("superuser", [], {"is_superuser": True}))
    return sets


@pytest.mark.parametrize(
    ("label", "codenames", "extra"), permission_sets(), ids=[s[0] for s in permission_sets()]
)
def test_no_admin_page_shows_content_without_a_logged_reason(
    seeded, make_user, label, codenames, extra
) -> None:
    client = staff_with(make_user, f"staff_{label}"[:150], codenames, **extra)
    may_see_titles = "view_conversation_title" in codenames or extra.get("is_superuser")
    logged_before = TranscriptAccess.objects.count()

    pages = walk(client, _seed_urls(seeded))

    assert len(pages) > 5
    leaks = [
        (url, canary)
        for url, body in pages.items()
        for canary in CONTENT_CANARIES
        if canary in body or canary in unescape(body)
    ]
    assert leaks == []
    title_pages = [url for url, body in pages.items() if TITLE_CANARY in body]
    if not may_see_titles:
        assert title_pages == []
    # Walking never logs: nothing was read.
    assert TranscriptAccess.objects.count() == logged_before


def test_titles_show_in_lists_only_with_the_title_permission(seeded, make_user) -> None:
    without = staff_with(make_user, "plain", ["view_conversation"])
    with_titles = staff_with(make_user, "titled", ["view_conversation", "view_conversation_title"])

    assert TITLE_CANARY not in without.get(CHANGELIST).content.decode()
    assert TITLE_CANARY in with_titles.get(CHANGELIST).content.decode()


def _search_page(client: Client, terms: str) -> str:
    body = client.get(CHANGELIST, {"q": terms}).content.decode()
    # The page echoes the staff member's own terms and carries a fresh CSRF token; everything
    # else must be the same.
    body = re.sub(r'name="csrfmiddlewaretoken" value="[^"]*"', "", body)
    return body.replace(terms, "TERMS")


def test_search_is_no_oracle_without_a_reason(seeded, make_user) -> None:
    client = staff_with(make_user, "prober", ["view_conversation"])

    hit = _search_page(client, "PIN is 4")
    miss = _search_page(client, "PIN is 9")

    # Before: the list answered with the matching conversation, one digit at a time.
    assert hit == miss
    assert "Why are you searching conversation content?" in hit
    assert not TranscriptAccess.objects.filter(kind=TranscriptAccess.Kind.SEARCH).exists()


def test_a_search_with_a_reason_is_logged_with_its_terms_and_matches_and_the_owner_sees_it(
    seeded, make_user
) -> None:
    conversation, owner = seeded["conversation"], seeded["owner"]
    other = Conversation.objects.create(owner=make_user("bystander"), title="unrelated")
    add_turn(other, "nothing here", "nothing")
    client = staff_with(make_user, "searcher", ["view_conversation"])

    gate = client.post(f"{CHANGELIST}?q=PIN+is+4", {"reason": "police request 17"})
    results = client.get(gate["Location"])

    assert [c.pk for c in results.context["cl"].result_list] == [conversation.pk]
    (entry,) = TranscriptAccess.objects.filter(kind=TranscriptAccess.Kind.SEARCH)
    assert entry.search_terms == "PIN is 4"
    assert entry.reason == "police request 17"
    assert entry.conversation_id == conversation.pk
    assert entry.owner_username == "owner"
    # A reload shows the results again without a second entry.
    client.get(gate["Location"])
    assert TranscriptAccess.objects.filter(kind=TranscriptAccess.Kind.SEARCH).count() == 1
    # Other terms need their own reason.
    assert "cl" not in client.get(CHANGELIST, {"q": "PIN is 48"}).context
    owner_client = Client()
    owner_client.force_login(owner)
    page = owner_client.get(f"/c/{conversation.pk}/").content.decode()
    assert "matched in a content search by staff member" in page
    assert "searcher" in page


def test_a_search_that_matches_nothing_is_still_logged(seeded, make_user) -> None:
    client = staff_with(make_user, "searcher", ["view_conversation"])

    client.post(f"{CHANGELIST}?q=no+such+text", {"reason": "checking a report"})

    (entry,) = TranscriptAccess.objects.filter(kind=TranscriptAccess.Kind.SEARCH)
    assert entry.conversation_uuid is None
    assert entry.search_terms == "no such text"


def test_reading_a_default_system_prompt_asks_why_logs_it_and_tells_the_user(
    seeded, make_user
) -> None:
    preferences, owner = seeded["preferences"], seeded["owner"]
    client = staff_with(make_user, "support", ["view_userpreferences"])
    url = reverse("admin:conversations_userpreferences_system_prompt", args=[preferences.pk])

    change = client.get(
        reverse("admin:conversations_userpreferences_change", args=[preferences.pk])
    )
    gate = client.get(url)
    shown = client.post(url, {"reason": "user asked for help"})

    assert PREFERENCE_CANARY not in change.content.decode()
    assert PREFERENCE_CANARY not in gate.content.decode()
    assert PREFERENCE_CANARY in shown.content.decode()
    (entry,) = TranscriptAccess.objects.filter(kind=TranscriptAccess.Kind.SYSTEM_PROMPT)
    assert (entry.owner_id, entry.staff_username, entry.reason) == (
        owner.pk,
        "support",
        "user asked for help",
    )
    owner_client = Client()
    owner_client.force_login(owner)
    settings_page = owner_client.get("/settings/").content.decode()
    assert "last read by staff member <strong>support</strong>" in settings_page


def test_the_transcript_gate_does_not_show_the_title(seeded, make_user) -> None:
    client = staff_with(make_user, "gatekeeper", ["view_conversation"])
    conversation = seeded["conversation"]

    gate = client.get(
        reverse("admin:conversations_conversation_transcript", args=[conversation.pk])
    )

    assert "Why are you opening this transcript?" in gate.content.decode()
    assert TITLE_CANARY not in gate.content.decode()


def test_the_raw_event_of_an_unreadable_stream_shows_in_the_logged_transcript_only(
    seeded, make_user
) -> None:
    client = staff_with(make_user, "reader", ["view_conversation"])
    conversation = seeded["conversation"]
    url = reverse("admin:conversations_conversation_transcript", args=[conversation.pk])

    gate = client.get(url)
    opened = client.post(url, {"reason": "reply could not be read"})
    transcript = client.get(opened["Location"]).content.decode()

    assert RAW_EVENT_CANARY not in unescape(gate.content.decode())
    assert RAW_EVENT_CANARY in unescape(transcript)
    assert "The gateway's first event, as received" in unescape(transcript)
    entry = TranscriptAccess.objects.filter(staff_username="reader").get()
    assert entry.reason == "reply could not be read"
