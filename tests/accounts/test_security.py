"""Access control, browser-side protections, production settings, and secrets staying secret."""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.core import serializers
from django.test import Client
from playwright.sync_api import Page, expect

from chatsite.asgi import application
from conversations.chat.services import conversation_create
from conversations.models import Conversation, Message
from tests.conftest import ARTIFACTS, BASE_DIR, PASSWORD, TEST_API_KEY, DaphneServer, sign_in
from tests.support.sockets import (
    SOCKET_TIMEOUT,
    communicator_for,
    drain_final_state,
)
from tests.support.upstream_server import ErrorReply, Event, FakeUpstream, Stream, gateway_chunks

PRODUCTION_ENV = {
    "DJANGO_DEBUG": "0",
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
    "DJANGO_ALLOWED_HOSTS": "example.com",
}


@pytest.fixture
def _fast_hashers(settings: Any) -> None:
    # Sign-in tests hash many passwords; the default hasher is slow on purpose. (Not for tests
    # against Daphne, which must verify the hashes with its own, default, settings.)
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def production_python(code: str) -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "PYTEST_"))
    }
    env.update(PRODUCTION_ENV)
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def owned_conversation(owner: Any, title: str = "Owner's secret plans") -> Conversation:
    conversation = conversation_create(owner=owner)
    conversation.title = title
    user_message = Message.objects.create(
        conversation=conversation, role=Message.Role.USER, content="classified question"
    )
    reply = Message.objects.create(
        conversation=conversation,
        parent=user_message,
        role=Message.Role.ASSISTANT,
        content="classified answer",
        status=Message.Status.ERROR,
        error="failed",
    )
    conversation.active_leaf = reply
    conversation.save()
    return conversation


def snapshot(conversation: Conversation) -> list[tuple[Any, ...]]:
    messages = Message.objects.filter(conversation=conversation).order_by("created_at")
    leaf = Conversation.objects.filter(id=conversation.id).values_list("active_leaf_id").get()
    return [*messages.values_list("id", "status", "content", "parent_id"), leaf]


# Another user's conversation: page, socket, message ids.


@pytest.mark.django_db
def test_another_users_conversation_page_is_404_and_leaks_nothing(
    make_user: Any, client: Client
) -> None:
    owner, intruder = make_user("owner"), make_user("intruder")
    conversation = owned_conversation(owner)
    client.force_login(intruder)

    response = client.get(f"/c/{conversation.id}/")

    assert response.status_code == 404
    body = response.content.decode()
    assert "secret plans" not in body
    assert "classified" not in body
    # Nor does it show up in the intruder's own pages.
    own = client.get("/", follow=True).content.decode()
    assert "secret plans" not in own


@pytest.mark.django_db
def test_non_staff_cannot_reach_the_admin(make_user: Any, client: Client) -> None:
    owner = make_user("owner")
    conversation = owned_conversation(owner)
    client.force_login(make_user("member"))

    for url in (
        "/admin/",
        "/admin/conversations/message/",
        f"/admin/conversations/conversation/{conversation.id}/change/",
        "/admin/conversations/userquota/",
    ):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_another_users_conversation_socket_is_refused(make_user: Any) -> None:
    owner = await database_sync_to_async(make_user)("owner")
    intruder = await database_sync_to_async(make_user)("intruder")
    conversation = await database_sync_to_async(owned_conversation)(owner)

    connected, code = await communicator_for(intruder, conversation).connect(timeout=SOCKET_TIMEOUT)

    assert not connected
    assert code == 4404


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_retry_with_another_users_message_id_changes_nothing(
    make_user: Any, upstream: FakeUpstream
) -> None:
    owner = await database_sync_to_async(make_user)("owner")
    intruder = await database_sync_to_async(make_user)("intruder")
    foreign = await database_sync_to_async(owned_conversation)(owner)
    own = await database_sync_to_async(owned_conversation)(intruder, "mine")
    foreign_reply = await Message.objects.aget(conversation=foreign, role=Message.Role.ASSISTANT)
    before = await database_sync_to_async(snapshot)(foreign)
    own_before = await database_sync_to_async(snapshot)(own)
    comm = communicator_for(intruder, own)
    assert (await comm.connect(timeout=SOCKET_TIMEOUT))[0]
    await drain_final_state(comm)

    await comm.send_to(
        text_data=json.dumps({"action": "retry", "message_id": str(foreign_reply.id)})
    )
    frame = await comm.receive_from(timeout=SOCKET_TIMEOUT)

    assert "not part of this conversation" in frame
    assert "classified" not in frame
    assert await database_sync_to_async(snapshot)(foreign) == before
    assert await database_sync_to_async(snapshot)(own) == own_before
    assert upstream.requests == []
    await comm.disconnect()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_retry_with_own_message_from_another_conversation_is_refused(
    user: Any, upstream: FakeUpstream
) -> None:
    first = await database_sync_to_async(owned_conversation)(user, "first")
    second = await database_sync_to_async(owned_conversation)(user, "second")
    first_reply = await Message.objects.aget(conversation=first, role=Message.Role.ASSISTANT)
    comm = communicator_for(user, second)
    await comm.connect(timeout=SOCKET_TIMEOUT)
    await drain_final_state(comm)

    await comm.send_to(text_data=json.dumps({"action": "retry", "message_id": str(first_reply.id)}))
    frame = await comm.receive_from(timeout=SOCKET_TIMEOUT)

    assert "not part of this conversation" in frame
    assert await Message.objects.acount() == 4
    await comm.disconnect()


# Cross-site websocket hijacking and cookies.


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "origin", [b"http://evil.example", b"null", b"http://localhost.evil.example"]
)
async def test_socket_with_a_foreign_origin_is_refused(user: Any, origin: bytes) -> None:
    conversation = await database_sync_to_async(conversation_create)(owner=user)
    comm = WebsocketCommunicator(
        application, f"/ws/c/{conversation.id}/", headers=[(b"origin", origin)]
    )
    comm.scope["user"] = user

    connected, _ = await comm.connect(timeout=SOCKET_TIMEOUT)

    assert not connected


def test_production_cookies_are_httponly_lax_and_secure() -> None:
    result = production_python(
        "import json, django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'chatsite.settings'; "
        "django.setup(); from django.conf import settings as s; print(json.dumps(["
        "s.SESSION_COOKIE_HTTPONLY, s.SESSION_COOKIE_SAMESITE, s.SESSION_COOKIE_SECURE, "
        "s.CSRF_COOKIE_SAMESITE, s.CSRF_COOKIE_SECURE, s.DEBUG]))"
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [True, "Lax", True, "Lax", True, False]


@pytest.mark.django_db
def test_session_cookie_set_at_sign_in_is_httponly_and_lax(user: Any) -> None:
    client = Client()
    response = client.post("/accounts/login/", {"username": user.username, "password": PASSWORD})

    cookie = response.cookies["sessionid"]
    assert cookie["httponly"]
    assert cookie["samesite"] == "Lax"


def test_manage_py_check_deploy_passes_with_production_settings() -> None:
    result = production_python(
        "import sys; from django.core.management import execute_from_command_line; "
        "import os; os.environ['DJANGO_SETTINGS_MODULE'] = 'chatsite.settings'; "
        "execute_from_command_line(['manage.py', 'check', '--deploy', '--fail-level', 'WARNING'])"
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_refuses_the_development_secret() -> None:
    result = production_python(
        "import os; os.environ.pop('DJANGO_SECRET_KEY'); "
        "os.environ['DJANGO_SETTINGS_MODULE'] = 'chatsite.settings'; import django; django.setup()"
    )

    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in result.stderr


# CSRF and security headers.


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url", ["/accounts/login/", "/accounts/logout/", "/accounts/signup/", "/admin/login/"]
)
def test_state_changing_posts_need_a_csrf_token(user: Any, url: str) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)

    response = client.post(url, {"username": "x", "password": "y"})

    assert response.status_code == 403


@pytest.mark.django_db
def test_only_get_is_allowed_on_pages(user: Any, client: Client) -> None:
    client.force_login(user)
    conversation = conversation_create(owner=user)

    assert client.post("/").status_code in (403, 405)
    assert client.post(f"/c/{conversation.id}/").status_code in (403, 405)


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/accounts/login/", "/c/"])
def test_security_headers(user: Any, client: Client, path: str) -> None:
    if path == "/c/":
        client.force_login(user)
        path = f"/c/{conversation_create(owner=user).id}/"

    response = client.get(path)

    assert response.status_code == 200
    csp = {
        directive.split()[0]: directive.split()[1:]
        for directive in response["Content-Security-Policy"].split("; ")
    }
    assert csp["script-src"] == ["'self'"]
    assert "'unsafe-inline'" not in response["Content-Security-Policy"]
    assert "'unsafe-eval'" not in response["Content-Security-Policy"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"
    # The CSP forbids inline scripts, so the pages must not rely on any.
    body = response.content.decode()
    assert "<script>" not in body
    assert " onclick=" not in body


# Sign-in brute force.


@pytest.mark.django_db
@pytest.mark.usefixtures("_fast_hashers")
def test_sign_in_is_locked_after_repeated_failures(user: Any, settings: Any) -> None:
    settings.LOGIN_MAX_FAILURES = 3
    attacker = Client(REMOTE_ADDR="203.0.113.9")
    for _ in range(3):
        response = attacker.post(
            "/accounts/login/", {"username": user.username, "password": "wrong"}
        )
        assert "Please enter a correct username and password" in response.content.decode()

    response = attacker.post("/accounts/login/", {"username": user.username, "password": PASSWORD})

    assert "Too many failed sign-in attempts" in response.content.decode()
    assert "_auth_user_id" not in attacker.session
    # The owner, elsewhere, is not locked out by the attacker's failures.
    owner = Client(REMOTE_ADDR="198.51.100.7")
    response = owner.post("/accounts/login/", {"username": user.username, "password": PASSWORD})
    assert response.status_code == 302


@pytest.mark.django_db
@pytest.mark.usefixtures("_fast_hashers")
def test_one_address_trying_many_usernames_is_locked(make_user: Any, settings: Any) -> None:
    settings.LOGIN_MAX_FAILURES_PER_ADDRESS = 4
    victim = make_user("victim")
    sprayer = Client(REMOTE_ADDR="203.0.113.10")
    for name in ("a", "b", "c", "d"):
        sprayer.post("/accounts/login/", {"username": name, "password": "guess"})

    response = sprayer.post("/accounts/login/", {"username": victim.username, "password": PASSWORD})

    assert "Too many failed sign-in attempts" in response.content.decode()


@pytest.mark.django_db
@pytest.mark.usefixtures("_fast_hashers")
def test_successful_sign_in_clears_the_failure_count(user: Any, settings: Any) -> None:
    settings.LOGIN_MAX_FAILURES = 3
    client = Client(REMOTE_ADDR="203.0.113.11")
    for _ in range(2):
        client.post("/accounts/login/", {"username": user.username, "password": "wrong"})
    client.post("/accounts/login/", {"username": user.username, "password": PASSWORD})
    client.logout()
    for _ in range(2):
        client.post("/accounts/login/", {"username": user.username, "password": "wrong"})

    response = client.post("/accounts/login/", {"username": user.username, "password": PASSWORD})

    assert response.status_code == 302


# The API key never leaves the server. Browser last: its module-scoped Playwright loop would
# upset async tests after it.


def _all_text_under(directory: Path) -> str:
    return "".join(
        path.read_text(errors="replace") for path in directory.rglob("*") if path.is_file()
    )


@pytest.mark.browser
def test_api_key_never_reaches_a_page_a_frame_a_log_or_the_database(
    browser_page: Page,
    live: DaphneServer,
    upstream: FakeUpstream,
    user: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A careless gateway echoes the key back in every way it can.
    echoed = f"key {TEST_API_KEY} / Authorization: Bearer {TEST_API_KEY}"
    upstream.enqueue(
        ErrorReply(401, {"message": f"Invalid API key {echoed}", "statusCode": 401}),
        Stream(
            [
                *gateway_chunks(["Some text "])[:1],
                Event(json.dumps({"error": {"message": echoed, "code": 400}})),
            ]
        ),
        ErrorReply(400, {"error": {"message": echoed, "type": "invalid_request_error"}}),
        ErrorReply(500, f"<html>{echoed}</html>"),
        ErrorReply(500, echoed),
        ErrorReply(500, {"error": {"message": echoed}}),
        Stream(gateway_chunks(["All ", "good."])),
    )
    page = browser_page
    frames: list[str] = []
    page.on(
        "websocket",
        lambda ws: ws.on("framereceived", lambda payload: frames.append(str(payload))),
    )
    sign_in(page, username=user.username)
    page.get_by_label("Message").fill("Hello")
    page.get_by_role("button", name="Send").click()
    reply = page.locator('article[data-role="assistant"]')
    pages = []
    for expected in ("API key was rejected", "reported an error", "rejected the request"):
        expect(reply).to_have_attribute("data-status", "error")
        expect(reply).to_contain_text(expected)
        pages.append(page.content())
        reply.get_by_role("button", name="Retry").click()
    expect(reply).to_have_attribute("data-status", "error")
    expect(reply).to_contain_text("gave up after 3 attempts")
    pages.append(page.content())
    reply.get_by_role("button", name="Retry").click()
    expect(reply).to_have_attribute("data-status", "complete")
    page.reload()
    pages.append(page.content())

    assert len(upstream.requests) == 7
    assert all(r.headers["authorization"] == f"Bearer {TEST_API_KEY}" for r in upstream.requests)
    database = serializers.serialize("json", [*Message.objects.all(), *Conversation.objects.all()])
    produced = {
        "pages": "".join(pages),
        "frames": "".join(frames),
        "database": database,
        "test logs": caplog.text,
        "daphne logs and other artifacts": _all_text_under(ARTIFACTS),
    }
    assert "***" in produced["database"]  # the echo was there, and was scrubbed
    for where, text in produced.items():
        assert TEST_API_KEY not in text, f"the API key leaked into the {where}"
