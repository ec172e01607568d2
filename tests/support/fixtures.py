"""Fixtures that put a TCP fault proxy in front of the test's PostgreSQL or Redis.

Imported by tests/conftest.py. A proxy is restored and stopped after its test, so a test that
fails midway never leaves the next one cut off.
"""

import os
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from django.conf import settings as django_settings

from tests.support.tcp_proxy import TcpFaultProxy


def _proxy_to(host: str, port: int) -> Iterator[TcpFaultProxy]:
    proxy = TcpFaultProxy(target_host=host, target_port=port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.restore()
        proxy.stop()


def redis_url() -> str:
    url = os.environ.get("REDIS_URL", "")
    if not url:
        pytest.fail("this test needs REDIS_URL (the PostgreSQL + Redis leg)")
    return url


@pytest.fixture
def redis_proxy() -> Iterator[TcpFaultProxy]:
    """A proxy in front of the suite's Redis; `redis_proxy.url_for(redis_url())` reaches it."""
    parts = urlsplit(redis_url())
    yield from _proxy_to(parts.hostname or "127.0.0.1", parts.port or 6379)


@pytest.fixture
def postgres_proxy() -> Iterator[TcpFaultProxy]:
    """A proxy in front of the suite's PostgreSQL (hand its URL to a Daphne process)."""
    db = django_settings.DATABASES["default"]
    if not db["ENGINE"].endswith("postgresql"):
        pytest.fail("this test needs PostgreSQL (the PostgreSQL + Redis leg)")
    yield from _proxy_to(db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432))


@pytest.fixture
def layer_through_redis_proxy(redis_proxy: TcpFaultProxy, settings) -> TcpFaultProxy:
    """The in-process app's channel layer talks to Redis through `redis_proxy`."""
    layers = {**settings.CHANNEL_LAYERS}
    default = {**layers["default"], "CONFIG": {**layers["default"].get("CONFIG", {})}}
    if "hosts" not in default["CONFIG"]:
        pytest.fail("this test needs the Redis channel layer (REDIS_URL)")
    default["CONFIG"]["hosts"] = [
        {**host, "address": redis_proxy.url_for(host["address"])}
        for host in default["CONFIG"]["hosts"]
    ]
    layers["default"] = default
    settings.CHANNEL_LAYERS = layers
    return redis_proxy
