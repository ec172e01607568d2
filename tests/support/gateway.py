"""Fixtures and helpers for the gateway package's tests (registered from conftest).

Each test gets the loopback fake gateway reset, and clients pointed at it whose backoff sleeps
are recorded instead of waited.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import pytest
import pytest_asyncio

from conversations.gateway.client import UpstreamClient
from conversations.gateway.errors import GatewayError
from conversations.gateway.events import ContentDelta, Event, ReasoningDelta
from conversations.gateway.payload import TurnOptions, build_payload
from conversations.gateway.profiles import SONNET_4_5
from tests.support.upstream_server import Event as SSE
from tests.support.upstream_server import FakeUpstream

API_KEY = "sk-aiml-test-0123456789abcdef"
MODEL = "anthropic/claude-sonnet-4.5"
PAYLOAD = build_payload(
    profile=SONNET_4_5,
    options=TurnOptions(model=MODEL, max_tokens=256),
    messages=[{"role": "user", "content": "Hi"}],
).body
ClientFactory = Callable[..., UpstreamClient]


@pytest.fixture
def fake_gateway(upstream_server: FakeUpstream) -> Iterator[FakeUpstream]:
    upstream_server.reset()
    yield upstream_server
    upstream_server.reset()


@pytest.fixture
def backoff_sleeps() -> list[float]:
    return []


@pytest_asyncio.fixture
async def gateway_client_factory(
    fake_gateway: FakeUpstream, backoff_sleeps: list[float]
) -> AsyncIterator[ClientFactory]:
    clients: list[UpstreamClient] = []

    async def record_sleep(delay: float) -> None:
        backoff_sleeps.append(delay)

    def factory(**overrides: Any) -> UpstreamClient:
        options: dict[str, Any] = {
            "base_url": fake_gateway.base_url,
            "api_key": API_KEY,
            "timeout": 5.0,
            "connect_timeout": 2.0,
            "sleep": record_sleep,
        }
        options.update(overrides)
        client = UpstreamClient(**options)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.aclose()


@pytest_asyncio.fixture
async def gateway_client(gateway_client_factory: ClientFactory) -> UpstreamClient:
    return gateway_client_factory()


async def collect(
    client: UpstreamClient, payload: Mapping[str, Any] = PAYLOAD, **kwargs: Any
) -> tuple[list[Event], GatewayError | None]:
    """Every event yielded before the stream ended, and the error that ended it, if any."""
    events: list[Event] = []
    try:
        async for event in client.stream_chat(payload, **kwargs):
            events.append(event)
    except GatewayError as exc:
        return events, exc
    return events, None


def text_of(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, ContentDelta))


def reasoning_of(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, ReasoningDelta))


def only(events: list[Event], kind: type[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def chunk(
    *,
    content: str | None = None,
    finish_reason: str | None = None,
    delta: dict[str, Any] | None = None,
    **extra: Any,
) -> SSE:
    """A hand-written gateway-style chunk for cases the canned streams do not cover."""
    choice: dict[str, Any] = {"index": 0}
    if delta is not None or content is not None:
        choice["delta"] = {
            "role": "assistant",
            "content": content,
            "refusal": None,
            **(delta or {}),
        }
    if finish_reason is not None:
        choice["finish_reason"] = finish_reason
    body: dict[str, Any] = {"id": "", "object": "chat.completion.chunk", "choices": [choice]}
    body.update(extra)
    return SSE(json.dumps(body))
