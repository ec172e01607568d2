"""Request bodies in both dialects."""

from __future__ import annotations

import pytest

from conversations.gateway.content import RequestStyle
from conversations.gateway.payload import TurnOptions, build_payload
from tests.gateway_support import (
    MODEL,
)

MESSAGES = [
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi!"},
    {"role": "user", "content": "Tell me more"},
]


def test_openai_style_payload() -> None:
    options = TurnOptions(model=MODEL, max_tokens=1000, temperature=0.3, stop=("END",))

    payload = build_payload(options=options, messages=MESSAGES, system_prompt="Be brief.")

    assert payload == {
        "model": MODEL,
        "messages": [{"role": "system", "content": "Be brief."}, *MESSAGES],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 1000,
        "temperature": 0.3,
        "stop": ["END"],
    }


def test_openai_style_payload_with_reasoning_drops_temperature() -> None:
    options = TurnOptions(model=MODEL, max_tokens=1000, temperature=0.3, reasoning_effort="high")

    payload = build_payload(options=options, messages=MESSAGES, system_prompt="  ")

    assert payload == {
        "model": MODEL,
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 1000,
        "reasoning_effort": "high",
    }


def test_anthropic_style_payload() -> None:
    options = TurnOptions(model=MODEL, max_tokens=2048, top_p=0.9)

    payload = build_payload(
        options=options,
        messages=MESSAGES,
        system_prompt="Be brief.",
        style=RequestStyle.ANTHROPIC,
        stream=False,
    )

    assert payload == {
        "model": MODEL,
        "messages": MESSAGES,
        "system": "Be brief.",
        "stream": False,
        "max_tokens": 2048,
        "top_p": 0.9,
    }


@pytest.mark.parametrize(
    ("effort", "max_tokens", "budget", "expected_max"),
    [
        ("low", 512, 1024, 2048),
        ("medium", 4096, 4096, 5120),
        ("high", 1000, 16384, 17408),
        ("high", 32000, 16384, 32000),
        ("low", 1025, 1024, 1025),
    ],
)
def test_anthropic_thinking_budget_raises_max_tokens_when_needed(
    effort: str, max_tokens: int, budget: int, expected_max: int
) -> None:
    options = TurnOptions(
        model=MODEL, max_tokens=max_tokens, temperature=0.7, reasoning_effort=effort
    )

    payload = build_payload(options=options, messages=MESSAGES, style=RequestStyle.ANTHROPIC)

    assert payload["thinking"] == {"type": "enabled", "budget_tokens": budget}
    assert payload["max_tokens"] == expected_max
    assert payload["max_tokens"] > budget
    assert "temperature" not in payload
    assert "reasoning_effort" not in payload
    assert "system" not in payload


def test_temperature_and_top_p_together_are_refused() -> None:
    options = TurnOptions(model=MODEL, max_tokens=100, temperature=0.5, top_p=0.9)

    with pytest.raises(ValueError, match="temperature and top_p"):
        build_payload(options=options, messages=MESSAGES)


def test_unknown_reasoning_effort_is_refused() -> None:
    options = TurnOptions(model=MODEL, max_tokens=100, reasoning_effort="extreme")

    with pytest.raises(ValueError, match="reasoning_effort"):
        build_payload(options=options, messages=MESSAGES)


def test_build_payload_copies_messages() -> None:
    source = [{"role": "user", "content": "Hi", "id": "123"}]

    payload = build_payload(options=TurnOptions(model=MODEL, max_tokens=10), messages=source)

    assert payload["messages"] == [{"role": "user", "content": "Hi"}]
    payload["messages"][0]["content"] = "changed"
    assert source[0]["content"] == "Hi"
