"""Whatever the gateway sends, what the parser yields can be saved and read back, byte for
byte, on SQLite and on PostgreSQL (run this file on both legs)."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import pytest

from conversations.chat import services
from conversations.gateway.client import UpstreamClient
from conversations.gateway.errors import GatewayError
from conversations.gateway.events import (
    Citation,
    ContentDelta,
    Event,
    Finished,
    ReasoningDelta,
    Refusal,
    Usage,
)
from conversations.models import Conversation, Message
from tests.support import factories
from tests.support.gateway import API_KEY, collect
from tests.support.upstream_server import Event as SSE
from tests.support.upstream_server import FakeUpstream, Stream

HOSTILE_USAGE: list[dict[str, Any]] = [
    {"prompt_tokens": -1, "completion_tokens": 5e9, "usd_spent": 12345678.5},
    {"prompt_tokens": 10_000_000, "completion_tokens": 10_000_000, "usd_spent": 999999.999999},
    {"prompt_tokens": "12", "completion_tokens": 2**63, "usd_spent": "0.00000049"},
    {"prompt_tokens": 3.5, "completion_tokens": None, "usd_spent": "-Infinity"},
]


def _hostile_stream(usage: dict[str, Any]) -> Stream:
    def sse(body: dict[str, Any]) -> SSE:
        return SSE(json.dumps(body))

    citation = {
        "type": "url_citation",
        "url_citation": {"url": "https://ex.ample/\x00p", "title": "Ti\x00tle \udc00"},
    }
    return Stream(
        [
            sse({"choices": [{"index": 0, "delta": {"reasoning_content": "thin\x00k \ud83d"}}]}),
            sse({"choices": [{"index": 0, "delta": {"reasoning_content": "\ude00"}}]}),
            sse({"choices": [{"index": 0, "delta": {"content": "a\x00b \ud83d"}}]}),
            sse({"choices": [{"index": 0, "delta": {"content": "\ude00 \udfff end"}}]}),
            sse(
                {
                    "choices": [
                        {"index": 0, "delta": {"refusal": "no\x00", "annotations": [citation]}}
                    ]
                }
            ),
            sse(
                {
                    "choices": [{"index": 0, "finish_reason": "stop"}],
                    "usage": {
                        "prompt_tokens": usage["prompt_tokens"],
                        "completion_tokens": usage["completion_tokens"],
                    },
                    "meta": {"usage": {"usd_spent": usage["usd_spent"]}},
                }
            ),
        ]
    )


def _outcome(events: list[Event], error: GatewayError | None) -> services.ReplyOutcome:
    """What the generation builds from the events (kept to the fields it saves)."""
    usage = next((e for e in events if isinstance(e, Usage)), None)
    finished = next((e for e in events if isinstance(e, Finished)), None)
    return services.ReplyOutcome(
        status=Message.Status.ERROR if error else Message.Status.COMPLETE,
        content="".join(e.text for e in events if isinstance(e, ContentDelta)),
        reasoning="".join(e.text for e in events if isinstance(e, ReasoningDelta)),
        refusal="".join(e.text for e in events if isinstance(e, Refusal)),
        finish_reason=finished.reason if finished else "",
        error=error.message if error else "",
        citations=[{"url": c.url, "title": c.title} for c in events if isinstance(c, Citation)],
        prompt_tokens=usage.prompt_tokens if usage else None,
        completion_tokens=usage.completion_tokens if usage else None,
        reasoning_tokens=usage.reasoning_tokens if usage else None,
        cached_tokens=usage.cached_tokens if usage else None,
        cost_usd=usage.cost_usd if usage else None,
    )


def _run(fake: FakeUpstream, stream: Stream) -> tuple[list[Event], GatewayError | None]:
    fake.reset()
    fake.enqueue(stream)

    async def go() -> tuple[list[Event], GatewayError | None]:
        client = UpstreamClient(base_url=fake.base_url, api_key=API_KEY, timeout=5.0)
        try:
            return await collect(client)
        finally:
            await client.aclose()

    return asyncio.run(go())


def _save_and_reload(outcome: services.ReplyOutcome, user: Any) -> Message:
    conversation = Conversation.objects.create(owner=user, max_tokens=1000)
    started = services.turn_start(
        conversation_id=conversation.id,
        owner=user,
        content="question",
        settings=factories.turn_settings(),
        model=factories.MODEL,
    )
    services.reply_finish(message_id=started.reply.id, outcome=outcome)
    return Message.objects.get(id=started.reply.id)


@pytest.mark.django_db
@pytest.mark.parametrize("usage", HOSTILE_USAGE)
def test_every_field_from_a_hostile_stream_round_trips(
    upstream_server: FakeUpstream, user: Any, usage: dict[str, Any]
) -> None:
    events, error = _run(upstream_server, _hostile_stream(usage))
    assert error is None
    outcome = _outcome(events, error)

    saved = _save_and_reload(outcome, user)

    assert saved.content == outcome.content == "ab \U0001f600 \ufffd end"
    assert saved.reasoning == outcome.reasoning == "think \U0001f600"
    assert saved.refusal == outcome.refusal == "no"
    assert (
        saved.citations
        == outcome.citations
        == [{"url": "https://ex.ample/p", "title": "Title \ufffd"}]
    )
    assert saved.finish_reason == "stop"
    for name in ("prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens"):
        assert getattr(saved, name) == getattr(outcome, name)
    assert saved.cost_usd == outcome.cost_usd
    # Readable back through every path the pages and exports use.
    row = Message.objects.filter(id=saved.id).values("cost_usd", "prompt_tokens").get()
    assert row["cost_usd"] == outcome.cost_usd
    assert list(Message.objects.filter(id=saved.id).values_list("cost_usd", flat=True)) == [
        outcome.cost_usd
    ]


@pytest.mark.django_db
def test_the_largest_sane_values_are_kept_exactly(upstream_server: FakeUpstream, user: Any) -> None:
    events, _ = _run(upstream_server, _hostile_stream(HOSTILE_USAGE[1]))

    saved = _save_and_reload(_outcome(events, None), user)

    assert (saved.prompt_tokens, saved.completion_tokens) == (10_000_000, 10_000_000)
    assert saved.cost_usd == Decimal("999999.999999")


@pytest.mark.django_db
def test_error_text_with_nul_and_key_echo_round_trips_clean(
    upstream_server: FakeUpstream, user: Any
) -> None:
    body = {"error": {"message": f"bad\x00 {API_KEY.upper()} \ud83d"}}
    events, error = _run(upstream_server, Stream([SSE(json.dumps(body))]))
    assert error is not None

    saved = _save_and_reload(_outcome(events, error), user)

    assert saved.status == Message.Status.ERROR
    assert saved.error == error.message
    assert "\x00" not in saved.error
    assert API_KEY.lower() not in saved.error.lower()
    assert "bad *** \ufffd" in saved.error
