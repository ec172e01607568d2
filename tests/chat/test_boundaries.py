"""The edges of the site: websocket origins, trusted proxy headers, one sign-in throttle for
every form, sign-up throttling, and sockets that end with the session or misbehave."""

import asyncio
import re
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import urlencode

import pytest
from channels.db import database_sync_to_async
from channels.routing import URLRouter
from channels.testing import HttpCommunicator, WebsocketCommunicator
from django.contrib.auth import authenticate
from django.contrib.sessions.backends.db import SessionStore
from django.test import Client

from chatsite.asgi import application
from chatsite.proxy import client_address, trusted_networks
from chatsite.sockets import CLOSE_TOO_MANY_FRAMES, CLOSE_TOO_MANY_SOCKETS, SocketGuard
from conversations.accounts.sessions import CLOSE_SESSION_ENDED
from conversations.chat.routing import websocket_urlpatterns
from conversations.chat.services import conversation_create
from conversations.models import LoginThrottle
from tests.conftest import PASSWORD

SOCKET_TIMEOUT = 10
HOST = b"127.0.0.1:8713"


# --- Origins, checked exactly ------------------------------------------------------------


async def _connect(
    user: Any, *, origin: bytes | None, host: bytes = HOST, client: str = "127.0.0.1"
) -> bool:
    conversation = await database_sync_to_async(conversation_create)(owner=user)
    headers = [(b"host", host)]
    if origin is not None:
        headers.append((b"origin", origin))
    comm = WebsocketCommunicator(application, f"/ws/c/{conversation.id}/", headers=headers)
    comm.scope["user"] = user
    comm.scope["client"] = (client, 50000)
    connected, _ = await comm.connect(timeout=SOCKET_TIMEOUT)
    await comm.disconnect()
    return connected


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "origin",
    [
        pytest.param(b"http://127.0.0.1:9998", id="same-host-other-port"),
        pytest.param(b"http://127.0.0.1:1234", id="same-host-another-port"),
        pytest.param(b"https://127.0.0.1:8713", id="other-scheme"),
        pytest.param(b"http://127.0.0.1", id="default-port-is-another-port"),
        pytest.param(b"null", id="null"),
        pytest.param(None, id="missing"),
        pytest.param(b"http://127.0.0.1:8713.evil.example", id="suffix"),
        pytest.param(b"http://evil.example", id="other-host"),
    ],
)
async def test_websocket_from_any_other_origin_is_refused(user: Any, origin: bytes | None) -> None:
    # Before: host names only, so another port of the same host got the victim's socket.
    assert not await _connect(user, origin=origin)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_websocket_from_the_sites_own_origin_is_accepted(user: Any) -> None:
    assert await _connect(user, origin=b"http://127.0.0.1:8713")


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_explicitly_allowed_origins_are_accepted(user: Any, settings: Any) -> None:
    settings.CHAT_ALLOWED_ORIGINS = ["http://127.0.0.1:9000"]
    settings.CSRF_TRUSTED_ORIGINS = ["https://chat.example.com"]

    assert await _connect(user, origin=b"http://127.0.0.1:9000")
    assert await _connect(user, origin=b"https://chat.example.com:443")
    assert not await _connect(user, origin=b"http://127.0.0.1:9001")


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_behind_a_trusted_tls_proxy_the_https_origin_is_the_sites_own(
    user: Any, settings: Any
) -> None:
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "chat.example.com"]
    conversation = await database_sync_to_async(conversation_create)(owner=user)

    async def connect(peer: str) -> bool:
        comm = WebsocketCommunicator(
            application,
            f"/ws/c/{conversation.id}/",
            headers=[
                (b"host", b"chat.example.com"),
                (b"origin", b"https://chat.example.com"),
                (b"x-forwarded-proto", b"https"),
            ],
        )
        comm.scope["user"] = user
        comm.scope["client"] = (peer, 50000)
        connected, _ = await comm.connect(timeout=SOCKET_TIMEOUT)
        await comm.disconnect()
        return connected

    assert await connect("127.0.0.1")
    # The same claim from a peer that is not our proxy is not believed.
    assert not await connect("203.0.113.5")


# --- Client addresses you can trust ------------------------------------------------------

LOOPBACK = trusted_networks(["127.0.0.1", "::1"])


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "networks", "expected"),
    [
        # The spoof: the client's own entry on the left, nginx's on the right.
        ("127.0.0.1", "10.0.0.7, 203.0.113.7", LOOPBACK, "203.0.113.7"),
        # nginx overwriting the header with $remote_addr, as the operations guide does.
        ("127.0.0.1", "203.0.113.8", LOOPBACK, "203.0.113.8"),
        # Headers from a peer that is not a proxy of ours are ignored.
        ("203.0.113.50", "10.0.0.1", LOOPBACK, "203.0.113.50"),
        # A chain of our own proxies is skipped from the right.
        (
            "127.0.0.1",
            "198.51.100.1, 203.0.113.9, 10.1.1.1",
            trusted_networks(["127.0.0.1", "10.0.0.0/8"]),
            "203.0.113.9",
        ),
        ("127.0.0.1", "not-an-address", LOOPBACK, "127.0.0.1"),
        ("127.0.0.1", "[2001:db8::1]:4711", LOOPBACK, "2001:db8::1"),
        ("127.0.0.1", None, LOOPBACK, "127.0.0.1"),
    ],
)
def test_client_address_is_the_right_most_untrusted_hop(
    peer: str, forwarded_for: str | None, networks: Any, expected: str
) -> None:
    assert client_address(peer=peer, forwarded_for=forwarded_for, networks=networks) == expected


async def _asgi_sign_in_failure(*, peer: str, forwarded_for: str, username: str) -> int:
    """A wrong password posted through the real ASGI stack from `peer` (CSRF included)."""
    base = [(b"host", b"127.0.0.1"), (b"x-forwarded-for", forwarded_for.encode())]
    page = HttpCommunicator(application, "GET", "/accounts/login/", headers=base)
    page.scope["client"] = (peer, 50000)
    response = await page.get_response(timeout=SOCKET_TIMEOUT)
    cookies = SimpleCookie()
    for name, value in response["headers"]:
        if name.lower() == b"set-cookie":
            cookies.load(value.decode())
    csrf = cookies["csrftoken"].value
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', response["body"]).group(1)
    body = urlencode(
        {"username": username, "password": "wrong", "csrfmiddlewaretoken": token.decode()}
    ).encode()
    post = HttpCommunicator(
        application,
        "POST",
        "/accounts/login/",
        body=body,
        headers=[
            *base,
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"cookie", f"csrftoken={csrf}".encode()),
        ],
    )
    post.scope["client"] = (peer, 50000)
    return (await post.get_response(timeout=SOCKET_TIMEOUT))["status"]


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("fast_password_hashing")
async def test_a_spoofed_forwarded_for_cannot_choose_the_throttled_address(
    user: Any, settings: Any
) -> None:
    settings.LOGIN_MAX_FAILURES = 3
    # Behind the proxy: each try claims another address on the left.
    for n in range(3):
        await _asgi_sign_in_failure(
            peer="127.0.0.1", forwarded_for=f"10.0.0.{n}, 203.0.113.7", username=user.username
        )
    # Straight from the internet: the header is the attacker's alone.
    for n in range(3):
        await _asgi_sign_in_failure(
            peer="198.51.100.20", forwarded_for=f"10.0.0.{n}", username=user.username
        )

    keys = set(
        await database_sync_to_async(list)(LoginThrottle.objects.values_list("key", "failures"))
    )
    assert (f"user:{user.username}|203.0.113.7", 3) in keys
    assert (f"user:{user.username}|198.51.100.20", 3) in keys
    assert not any("10.0.0." in key for key, _ in keys)


# --- One sign-in throttle for every form -------------------------------------------------


@pytest.mark.django_db
@pytest.mark.usefixtures("fast_password_hashing")
def test_admin_sign_in_is_throttled_and_shares_the_apps_count(
    make_user: Any, settings: Any
) -> None:
    settings.LOGIN_MAX_FAILURES = 3
    staff = make_user("staffer", is_staff=True)
    attacker = Client(REMOTE_ADDR="203.0.113.30")
    attacker.post("/accounts/login/", {"username": "staffer", "password": "wrong"})
    for _ in range(2):
        attacker.post("/admin/login/", {"username": "staffer", "password": "wrong"})

    # Before: 40 wrong admin passwords, then the right one got in.
    response = attacker.post("/admin/login/", {"username": "staffer", "password": PASSWORD})

    assert response.status_code == 200
    assert "Too many failed sign-in attempts" in response.content.decode()
    assert "_auth_user_id" not in attacker.session
    # The app's form is locked for that address too.
    response = attacker.post("/accounts/login/", {"username": "staffer", "password": PASSWORD})
    assert "Too many failed sign-in attempts" in response.content.decode()
    # The owner, elsewhere, still gets in.
    owner = Client(REMOTE_ADDR="198.51.100.30")
    response = owner.post("/admin/login/", {"username": staff.username, "password": PASSWORD})
    assert response.status_code == 302


@pytest.mark.django_db
@pytest.mark.usefixtures("fast_password_hashing")
def test_any_form_that_authenticates_goes_through_the_throttle(
    user: Any, settings: Any, rf: Any
) -> None:
    settings.LOGIN_MAX_FAILURES = 2
    request = rf.post("/some/future/login/", REMOTE_ADDR="203.0.113.31")
    for _ in range(2):
        assert authenticate(request, username=user.username, password="wrong") is None

    assert authenticate(request, username=user.username, password=PASSWORD) is None
    elsewhere = rf.post("/some/future/login/", REMOTE_ADDR="198.51.100.31")
    assert authenticate(elsewhere, username=user.username, password=PASSWORD) == user


@pytest.mark.django_db
def test_sessions_signed_in_before_the_throttled_backend_stay_valid(user: Any) -> None:
    client = Client()
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")

    assert client.get("/settings/").status_code == 200


# --- Sign-up throttled per address -------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.usefixtures("fast_password_hashing")
def test_sign_up_is_throttled_per_address(settings: Any) -> None:
    settings.SIGNUP_MAX_PER_ADDRESS = 2
    farm = Client(REMOTE_ADDR="203.0.113.40")

    def sign_up(client: Client, name: str) -> int:
        client.logout()
        data = {
            "username": name,
            "password1": "s3cret-Passphrase",
            "password2": "s3cret-Passphrase",
        }
        return client.post("/accounts/signup/", data).status_code

    codes = [sign_up(farm, f"farmed{n}") for n in range(3)]

    assert codes == [302, 302, 429]
    assert sign_up(Client(REMOTE_ADDR="198.51.100.40"), "neighbour") == 302


# --- Sockets end with the session --------------------------------------------------------


def _signed_in_session(user: Any) -> SessionStore:
    client = Client()
    client.force_login(user)
    return SessionStore(session_key=client.session.session_key), client


async def _chat_socket(user: Any, session: SessionStore, app: Any = None) -> WebsocketCommunicator:
    conversation = await database_sync_to_async(conversation_create)(owner=user)
    comm = WebsocketCommunicator(
        app or SocketGuard(URLRouter(websocket_urlpatterns)), f"/ws/c/{conversation.id}/"
    )
    comm.scope["user"] = user
    comm.scope["session"] = session
    connected, _ = await comm.connect(timeout=SOCKET_TIMEOUT)
    assert connected
    return comm


async def _closed_with(comm: WebsocketCommunicator) -> tuple[int | None, str]:
    """Read until the socket closes; the close code and the text sent before it."""
    texts = []
    async with asyncio.timeout(SOCKET_TIMEOUT):
        while True:
            message = await comm.receive_output(timeout=SOCKET_TIMEOUT)
            if message["type"] == "websocket.close":
                return message.get("code"), "".join(texts)
            texts.append(message.get("text", ""))


async def _still_open(comm: WebsocketCommunicator) -> bool:
    await comm.send_to(text_data='{"action": "stop"}')
    # A stop with nothing streaming answers nothing; the socket staying up is the point.
    return await comm.receive_nothing(timeout=0.3)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_logout_closes_that_sessions_sockets_only(user: Any) -> None:
    (session, client), (other_session, _) = await asyncio.gather(
        database_sync_to_async(_signed_in_session)(user),
        database_sync_to_async(_signed_in_session)(user),
    )
    comm = await _chat_socket(user, session)
    other = await _chat_socket(user, other_session)

    await database_sync_to_async(client.post)("/accounts/logout/")

    code, text = await _closed_with(comm)
    assert code == CLOSE_SESSION_ENDED
    assert "Your session has ended" in text
    assert await _still_open(other)
    await other.disconnect()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("change", ["deactivate", "password"])
async def test_deactivation_and_password_change_close_every_socket(user: Any, change: str) -> None:
    session, _ = await database_sync_to_async(_signed_in_session)(user)
    comm = await _chat_socket(user, session)

    def apply() -> None:
        if change == "deactivate":
            user.is_active = False
        else:
            user.set_password("a whole new passphrase")
        user.save()

    await database_sync_to_async(apply)()

    code, _ = await _closed_with(comm)
    assert code == CLOSE_SESSION_ENDED


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_an_expired_session_closes_its_socket(user: Any, settings: Any) -> None:
    settings.CHAT_SOCKET_SESSION_CHECK_SECONDS = 30

    def short_session() -> SessionStore:
        session, _ = _signed_in_session(user)
        session.set_expiry(1)
        session.save()
        return session

    session = await database_sync_to_async(short_session)()
    comm = await _chat_socket(user, session)

    # Closed at expiry, long before the next periodic check.
    code, text = await _closed_with(comm)
    assert code == CLOSE_SESSION_ENDED
    assert "Your session has ended" in text


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_frame_flood_closes_the_socket_with_a_reason(user: Any, settings: Any) -> None:
    settings.CHAT_SOCKET_FRAMES_PER_SECOND = 1
    settings.CHAT_SOCKET_FRAME_BURST = 5
    session, _ = await database_sync_to_async(_signed_in_session)(user)
    comm = await _chat_socket(user, session)

    for _ in range(50):
        await comm.send_to(text_data='{"action": "stop"}')

    code, text = await _closed_with(comm)
    assert code == CLOSE_TOO_MANY_FRAMES
    assert "Too many messages on this connection" in text


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_one_user_cannot_open_unbounded_sockets(user: Any, settings: Any) -> None:
    settings.CHAT_SOCKETS_PER_USER = 2
    guard = SocketGuard(URLRouter(websocket_urlpatterns))
    session, _ = await database_sync_to_async(_signed_in_session)(user)
    first = await _chat_socket(user, session, guard)
    second = await _chat_socket(user, session, guard)

    third = await _chat_socket(user, session, guard)
    code, text = await _closed_with(third)

    assert code == CLOSE_TOO_MANY_SOCKETS
    assert "Too many chat tabs" in text
    await first.disconnect()
    # A closed socket frees its place.
    fourth = await _chat_socket(user, session, guard)
    assert await _still_open(fourth)
    await second.disconnect()
    await fourth.disconnect()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_zero_turns_the_socket_limits_off(user: Any, settings: Any) -> None:
    settings.CHAT_SOCKETS_PER_USER = 0
    settings.CHAT_SOCKET_FRAMES_PER_SECOND = 0
    settings.CHAT_SOCKET_FRAME_BURST = 0
    guard = SocketGuard(URLRouter(websocket_urlpatterns))
    session, _ = await database_sync_to_async(_signed_in_session)(user)
    sockets = [await _chat_socket(user, session, guard) for _ in range(3)]

    for _ in range(40):
        await sockets[0].send_to(text_data='{"action": "stop"}')

    assert all([await _still_open(comm) for comm in sockets])
    for comm in sockets:
        await comm.disconnect()
