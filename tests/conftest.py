"""Fixtures shared by the whole suite: a real loopback upstream, a real Daphne, real Chromium."""

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import connections
from django.test import Client

from conversations.realtime import runtime
from tests.support.browser_audit import axe_violations, watch_csp
from tests.support.fixtures import (  # noqa: F401 (fixtures)
    layer_through_redis_proxy,
    postgres_proxy,
    redis_proxy,
)
from tests.support.upstream_server import FakeUpstream

BASE_DIR = Path(__file__).resolve().parent.parent
ARTIFACTS = BASE_DIR / "test-artifacts"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Recognisable, so that a leak can be grepped for in everything a test run produced.
TEST_API_KEY = "sk-test-" + "K3y" * 8
PASSWORD = "correct horse battery staple"

pytest_plugins = ("tests.support.gateway",)


@pytest.fixture(scope="session")
def upstream_server() -> Iterator[FakeUpstream]:
    server = FakeUpstream()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def upstream(upstream_server: FakeUpstream, settings: pytest.FixtureRequest) -> FakeUpstream:
    """The loopback gateway, reset, with the in-process app pointed at it."""
    upstream_server.reset()
    settings.AIMLAPI_BASE_URL = upstream_server.base_url
    settings.AIMLAPI_API_KEY = TEST_API_KEY
    settings.CHAT_UPSTREAM_BACKOFF_BASE = 0.01
    # No background models refresh in the test process; tests of the refresh start it themselves.
    settings.CHAT_MODELS_REFRESH_SECONDS = 0
    runtime.forget_all()
    return upstream_server


@pytest.fixture(scope="session", autouse=True)
def _database_sessions_ended_before_teardown(
    django_db_setup: None, django_db_blocker
) -> Iterator[None]:
    """The ORM threads' connections outlive the tests, idle (in the pool, or held by a thread
    that has no more work): the test database could not be dropped while they were open."""
    yield
    connection = connections["default"]
    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        connection.close_pool()


# Longer than any save of a reply takes; a connection a fault test left stuck is not waited out.
QUIET_DATABASE_SECONDS = 5.0


@pytest.fixture(autouse=True)
def _database_quiet_before_flush(
    request: pytest.FixtureRequest, django_db_blocker: Any
) -> Iterator[None]:
    """A reply may still be saving on an ORM thread when its test ends (the event loop lives for
    the session): a transaction of it racing the flush's TRUNCATE deadlocks the flush. Tearing
    down before pytest-django's flush, this waits until no other session of the test database
    is inside a statement or a transaction."""
    yield
    marker = request.node.get_closest_marker("django_db")
    transactional = (marker is not None and marker.kwargs.get("transaction", False)) or bool(
        {"transactional_db", "live_server"} & set(request.fixturenames)
    )
    if not transactional or connections["default"].vendor != "postgresql":
        return
    # On a thread of its own: a browser test's Playwright loop runs on this one, and Django
    # refuses synchronous queries beside a running loop.
    with django_db_blocker.unblock(), ThreadPoolExecutor(max_workers=1) as executor:
        executor.submit(_wait_for_a_quiet_database).result()


def _wait_for_a_quiet_database() -> None:
    deadline = time.monotonic() + QUIET_DATABASE_SECONDS
    try:
        with connections["default"].cursor() as cursor:
            while time.monotonic() < deadline:
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() "
                    "AND state IN ('active', 'idle in transaction')"
                )
                if cursor.fetchone()[0] == 0:
                    return
                time.sleep(0.01)
    finally:
        connections.close_all()


@pytest.fixture(autouse=True)
def _fresh_runtime() -> Iterator[None]:
    # Each test starts with a new runtime (upstream client built from its settings, no live
    # replies registered); a reply still finishing from the previous test keeps its own, but
    # its background work (titles, sidebar updates) must not reach the next test's gateway.
    _forget_runtimes()
    yield
    _forget_runtimes()


def _forget_runtimes() -> None:
    for live in runtime.all_runtimes():
        live.cancel_background()
    runtime.forget_all()


@pytest.fixture(autouse=True)
def _fresh_channel_layer() -> Iterator[None]:
    # The Redis layer's receive lock belongs to one event loop; a reply task still receiving
    # when the previous test's loop closed would leave it held, so each test gets a new layer.
    channel_layers.backends.pop(DEFAULT_CHANNEL_LAYER, None)
    yield
    channel_layers.backends.pop(DEFAULT_CHANNEL_LAYER, None)


@pytest.fixture(autouse=True)
def _no_rate_limit_unless_asked(settings) -> None:
    # Factories build many turns in a second; tests of the limits set the ones they test.
    settings.CHAT_RATE_LIMIT_PER_MINUTE = 0


@pytest.fixture
def make_user(db: None):
    def make(username: str = "alice", **extra: object) -> User:
        return get_user_model().objects.create_user(username=username, password=PASSWORD, **extra)

    return make


@pytest.fixture
def user(make_user) -> User:
    return make_user("alice")


@pytest.fixture
def conversation(user: User) -> Any:
    """An empty conversation of `user`; modules that need a transcript override it."""
    from conversations.chat.services import conversation_create

    return conversation_create(owner=user)


@pytest.fixture
def owner_client(user) -> Client:
    """A test client signed in as `user`."""
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def fast_password_hashing(settings) -> None:
    """PBKDF2 at full strength costs most of a view-heavy module's run time; use it where
    nothing tests hashing (never for Daphne, which hashes with its own, default, settings)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Daphne exited with code {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"Daphne did not listen on port {port} within {timeout} s")


def live_database_url() -> str:
    db = django_settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


class DaphneServer:
    def __init__(self, *, upstream: FakeUpstream, extra_env: dict[str, str] | None = None) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        ARTIFACTS.mkdir(exist_ok=True)
        self.log_path = ARTIFACTS / f"daphne-{self.port}.log"
        self.env = {
            **os.environ,
            "DJANGO_DEBUG": "1",
            "DATABASE_URL": live_database_url(),
            "AIMLAPI_BASE_URL": upstream.base_url,
            "AIMLAPI_API_KEY": TEST_API_KEY,
            "CHAT_UPSTREAM_BACKOFF_BASE": "0.01",
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            # The run's own spool (see chatsite/test_settings.py), whatever settings the
            # process loads.
            "CHAT_SPOOL_DIR": str(django_settings.CHAT_SPOOL_DIR),
            **(extra_env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                "chatsite.asgi:application",
            ],
            cwd=BASE_DIR,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        _wait_for_port(self.port, self.process)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="session")
def daphne(
    django_db_setup: None, django_db_blocker, upstream_server: FakeUpstream
) -> Iterator[DaphneServer]:
    """The app in a real Daphne process, on the test database, talking to the loopback gateway."""
    prefix = f"chatsite-test-{uuid.uuid4().hex[:8]}"
    server = DaphneServer(upstream=upstream_server, extra_env={"CHANNELS_REDIS_PREFIX": prefix})
    server.start()
    yield server
    server.stop()


@pytest.fixture
def two_processes(
    _sync_orm_beside_playwright: None, transactional_db: None, upstream: FakeUpstream
) -> Iterator[tuple[DaphneServer, DaphneServer]]:
    """Two Daphne processes sharing the test's PostgreSQL database and one Redis layer."""
    if not os.environ.get("REDIS_URL"):
        # On PostgreSQL without Redis the test cannot mean anything: fail, never skip quietly.
        pytest.fail("the scale-out test needs REDIS_URL alongside PostgreSQL")
    prefix = f"chatsite-scaleout-{uuid.uuid4().hex[:8]}"
    servers = [
        DaphneServer(upstream=upstream, extra_env={"CHANNELS_REDIS_PREFIX": prefix})
        for _ in range(2)
    ]
    try:
        for server in servers:
            server.start()
        yield servers[0], servers[1]
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="module")
def chromium_browser(django_db_setup: None):
    """Per module: Playwright's sync API keeps an event loop running in this thread, which
    Django's async-safety check would take for an async context in later, unrelated tests."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is required for browser tests and is missing at {CHROMIUM}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def _sync_orm_beside_playwright() -> Iterator[None]:
    # The ORM calls in a browser test are synchronous; Playwright's loop merely shares the thread.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    yield
    del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


@pytest.fixture
def live(
    _sync_orm_beside_playwright: None,
    transactional_db: None,
    daphne: DaphneServer,
    upstream: FakeUpstream,
) -> Iterator[DaphneServer]:
    """A running app whose database the test can arrange, and a clean loopback gateway."""
    yield daphne
    # The server owns its replies, so they outlive the test's page; their last writes (and the
    # sidebar reads that follow them) would meet the flush that empties the tables for the next
    # test, and on PostgreSQL the two deadlock. End them and let the database go quiet first.
    upstream.end_streams()
    database_wait_quiet()


def database_wait_quiet(*, timeout: float = 30.0) -> None:
    """Wait until no reply is streaming and, on PostgreSQL, no other session has been inside a
    statement or transaction for a few polls in a row."""
    from conversations.models import Message

    postgres = django_settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
    deadline = time.monotonic() + timeout
    quiet_polls = 0
    while quiet_polls < 3:
        if time.monotonic() > deadline:
            pytest.fail(f"the app was still writing {timeout:.0f} s after the test ended")
        busy = Message.objects.filter(status=Message.Status.STREAMING).exists() or (
            postgres and _other_sessions_busy()
        )
        quiet_polls = 0 if busy else quiet_polls + 1
        time.sleep(0.05)


def _other_sessions_busy() -> bool:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND state <> 'idle'"
        )
        (busy,) = cursor.fetchone()
    return bool(busy)


@pytest.fixture
def browser_page(chromium_browser, live: DaphneServer):
    context = chromium_browser.new_context(base_url=live.url)
    context.set_default_timeout(15_000)
    csp_violations = watch_csp(context)
    page = context.new_page()
    yield page
    # Every browser test ends with axe-core on the state it left the page in, so each state the
    # suite visits is checked (test_browser_accessibility covers the states in between).
    idle = page.is_closed() or page.url == "about:blank"
    violations = [] if idle else axe_violations(page)
    context.close()
    assert csp_violations == [], f"Content-Security-Policy violations: {csp_violations}"
    assert violations == [], f"axe-core on the final state of the test ({page.url}): " + "; ".join(
        f"{v['id']}: {v['help']} at {[n['target'] for n in v['nodes']]}" for v in violations
    )


def sign_in(page, *, username: str, password: str = PASSWORD) -> None:
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/c/*/")


@pytest.fixture
def page_on(chromium_browser):
    """Open a page in a fresh browser context on a given Daphne server."""
    contexts = []

    def open_page(server: DaphneServer):
        context = chromium_browser.new_context(base_url=server.url)
        context.set_default_timeout(15_000)
        contexts.append((context, watch_csp(context)))
        return context.new_page()

    yield open_page
    for context, _ in contexts:
        context.close()
    for _, csp_violations in contexts:
        assert csp_violations == [], f"Content-Security-Policy violations: {csp_violations}"
