"""Request bodies from a model profile, in both dialects and every mix of their aspects.

Nothing a profile says its model refuses is ever sent, and each parameter left out comes back
as a notice.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conversations.gateway.content import DocumentPart, ImagePart, RequestStyle, TextPart
from conversations.gateway.dialect import Aspect, Dialect
from conversations.gateway.events import ParameterNotSent
from conversations.gateway.payload import Message, TurnOptions, build_payload, profile_for
from conversations.gateway.profiles import (
    BUILT_IN,
    DEMO_MODELS,
    SONNET_4_5,
    ModelProfile,
    ReasoningStyle,
    adaptive_profile,
)

MODEL = SONNET_4_5.id
MESSAGES = [
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi!"},
    {"role": "user", "content": "Tell me more"},
]
OPENAI = Dialect.of(RequestStyle.OPENAI)
ANTHROPIC = Dialect.of(RequestStyle.ANTHROPIC)
ADAPTIVE = adaptive_profile(id="anthropic/claude-sonnet-5", display_name="Claude Sonnet 5")
PROFILES = [*BUILT_IN, *DEMO_MODELS, ADAPTIVE]
ALL_DIALECTS = [
    Dialect(system, thinking, stop, style)
    for system, thinking, stop, style in itertools.product(
        (False, True), (False, True), (False, True), RequestStyle
    )
]


def body(options: TurnOptions, dialect: Dialect = OPENAI, **kwargs: Any) -> dict[str, Any]:
    return build_payload(
        profile=kwargs.pop("profile", SONNET_4_5),
        options=options,
        messages=kwargs.pop("messages", MESSAGES),
        dialect=dialect,
        **kwargs,
    ).body


def not_sent(options: TurnOptions, profile: ModelProfile = SONNET_4_5) -> list[str]:
    payload = build_payload(profile=profile, options=options, messages=MESSAGES)
    return [notice.parameter for notice in payload.not_sent]


# -- the two dialects -------------------------------------------------------------------------


def test_openai_style_payload() -> None:
    options = TurnOptions(model=MODEL, max_tokens=1000, temperature=0.3, stop=("END",))

    assert body(options, system_prompt="Be brief.") == {
        "model": MODEL,
        "messages": [{"role": "system", "content": "Be brief."}, *MESSAGES],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 1000,
        "temperature": 0.3,
        "stop": ["END"],
    }


def test_openai_style_payload_with_reasoning_sends_effort_and_no_temperature() -> None:
    options = TurnOptions(model=MODEL, max_tokens=1000, temperature=0.3, reasoning_effort="high")

    payload = build_payload(
        profile=SONNET_4_5, options=options, messages=MESSAGES, system_prompt="  "
    )

    assert payload.body == {
        "model": MODEL,
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 1000,
        "reasoning_effort": "high",
    }
    assert payload.not_sent == (
        ParameterNotSent("temperature", "Claude Sonnet 4.5 takes no temperature while thinking."),
    )


def test_anthropic_style_payload() -> None:
    options = TurnOptions(model=MODEL, max_tokens=2048, top_p=0.9, stop=("END", "STOP"))

    assert body(options, ANTHROPIC, system_prompt="Be brief.", stream=False) == {
        "model": MODEL,
        "messages": MESSAGES,
        "system": "Be brief.",
        "stream": False,
        "max_tokens": 2048,
        "top_p": 0.9,
        "stop_sequences": ["END", "STOP"],
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
def test_thinking_budget_is_at_least_1024_and_below_max_tokens(
    effort: str, max_tokens: int, budget: int, expected_max: int
) -> None:
    options = TurnOptions(model=MODEL, max_tokens=max_tokens, reasoning_effort=effort)

    payload = body(options, ANTHROPIC)

    assert payload["thinking"] == {"type": "enabled", "budget_tokens": budget}
    assert payload["max_tokens"] == expected_max
    assert "reasoning_effort" not in payload


@pytest.mark.parametrize("aspect", list(Aspect))
def test_each_aspect_switches_alone(aspect: Aspect) -> None:
    options = TurnOptions(model=MODEL, max_tokens=4000, reasoning_effort="low", stop=("X",))
    messages = [Message("user", [TextPart("Look"), ImagePart("image/png", b"\x89PNG")])]
    before = body(options, OPENAI, messages=messages, system_prompt="S")
    after = body(options, OPENAI.switched(aspect), messages=messages, system_prompt="S")

    changed = {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}

    expected = {
        Aspect.SYSTEM: {"messages", "system"},
        Aspect.REASONING: {"reasoning_effort", "thinking"},
        Aspect.STOP: {"stop", "stop_sequences"},
        Aspect.CONTENT: {"messages"},
    }[aspect]
    assert changed == expected
    if aspect is Aspect.CONTENT:
        assert after["messages"][1]["content"][1]["type"] == "image"
        assert before["messages"][1]["content"][1]["type"] == "image_url"


def test_content_parts_are_written_in_the_dialects_spelling() -> None:
    parts = [TextPart("Read this"), DocumentPart(b"%PDF-1.7", "a.pdf")]
    messages = [{"role": "user", "content": parts}]
    options = TurnOptions(model=MODEL, max_tokens=100)

    openai = body(options, OPENAI, messages=messages)["messages"][0]["content"]
    anthropic = body(options, ANTHROPIC, messages=messages)["messages"][0]["content"]

    assert [p["type"] for p in openai] == ["text", "file"]
    assert [p["type"] for p in anthropic] == ["text", "document"]


# -- what each profile refuses is never sent --------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.id)
@pytest.mark.parametrize("dialect", ALL_DIALECTS, ids=str)
@settings(max_examples=25, deadline=None)
@given(
    temperature=st.none() | st.floats(-1, 3),
    top_p=st.none() | st.floats(-0.5, 1.5),
    effort=st.none() | st.sampled_from(["low", "medium", "high"]),
    max_tokens=st.integers(1, 300_000),
    stop=st.lists(st.text(min_size=1, max_size=5), max_size=8),
)
def test_nothing_the_profile_refuses_is_sent(
    profile: ModelProfile,
    dialect: Dialect,
    temperature: float | None,
    top_p: float | None,
    effort: str | None,
    max_tokens: int,
    stop: list[str],
) -> None:
    options = TurnOptions(
        model=profile.id,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        reasoning_effort=effort,
        stop=tuple(stop),
    )

    payload = build_payload(profile=profile, options=options, messages=MESSAGES, dialect=dialect)
    sent = payload.body
    dropped = {notice.parameter for notice in payload.not_sent}

    thinking = "thinking" in sent or "reasoning_effort" in sent
    assert not ("temperature" in sent and "top_p" in sent and profile.sampling_exclusive)
    assert sent["max_tokens"] <= profile.max_output_tokens
    assert len(sent.get("stop", sent.get("stop_sequences", []))) <= profile.max_stop_sequences
    if "thinking" in sent:
        budget = sent["thinking"]["budget_tokens"]
        assert profile.thinking_budget_min <= budget < sent["max_tokens"]
    if thinking:
        assert "temperature" not in sent
        if "top_p" in sent:
            top_p_while_thinking = profile.thinking_ranges.get("top_p")
            assert top_p_while_thinking is not None
            assert top_p_while_thinking.contains(sent["top_p"])
    if profile.reasoning is ReasoningStyle.ADAPTIVE:
        assert not {"temperature", "top_p", "top_k", "thinking", "reasoning_effort"} & set(sent)
    for name in ("temperature", "top_p"):
        if name in sent:
            assert name in profile.ranges and profile.ranges[name].contains(sent[name])
    # Everything the user set is either sent or reported.
    if temperature is not None and temperature != 1.0:
        assert "temperature" in sent or "temperature" in dropped
    if top_p is not None:
        assert "top_p" in sent or "top_p" in dropped
    if effort is not None:
        assert thinking or "reasoning_effort" in dropped
    if len(stop) > profile.max_stop_sequences:
        assert "stop" in dropped
    if max_tokens > profile.max_output_tokens:
        assert "max_tokens" in dropped


def test_temperature_and_top_p_together_send_temperature_and_report_top_p() -> None:
    options = TurnOptions(model=MODEL, max_tokens=100, temperature=0.5, top_p=0.9)

    assert "top_p" not in body(options)
    assert not_sent(options) == ["top_p"]


def test_top_p_while_thinking_only_from_095() -> None:
    low = TurnOptions(model=MODEL, max_tokens=5000, top_p=0.9, reasoning_effort="low")
    high = TurnOptions(model=MODEL, max_tokens=5000, top_p=0.97, reasoning_effort="low")

    assert "top_p" not in body(low, ANTHROPIC)
    assert not_sent(low) == ["top_p"]
    assert body(high, ANTHROPIC)["top_p"] == 0.97


def test_adaptive_models_get_no_sampling_and_no_manual_thinking() -> None:
    options = TurnOptions(
        model=ADAPTIVE.id, max_tokens=1000, temperature=0.2, reasoning_effort="high"
    )

    payload = build_payload(profile=ADAPTIVE, options=options, messages=MESSAGES, dialect=ANTHROPIC)

    assert not {"temperature", "thinking", "reasoning_effort"} & set(payload.body)
    assert [(n.parameter, n.reason) for n in payload.not_sent] == [
        ("reasoning_effort", "Claude Sonnet 5 decides how long to think."),
        ("temperature", "Claude Sonnet 5 chooses its own sampling."),
    ]


def test_max_tokens_and_stop_sequences_are_capped_and_reported() -> None:
    options = TurnOptions(model=MODEL, max_tokens=100_000, stop=("a", "b", "c", "d", "e"))

    assert body(options)["max_tokens"] == 64_000
    assert body(options)["stop"] == ["a", "b", "c", "d"]
    assert not_sent(options) == ["max_tokens", "stop"]


def test_unknown_reasoning_effort_is_refused() -> None:
    options = TurnOptions(model=MODEL, max_tokens=100, reasoning_effort="extreme")

    with pytest.raises(ValueError, match="reasoning_effort"):
        body(options)


def test_build_payload_copies_messages() -> None:
    source = [{"role": "user", "content": "Hi", "id": "123"}]

    payload = body(TurnOptions(model=MODEL, max_tokens=10), messages=source)

    assert payload["messages"] == [{"role": "user", "content": "Hi"}]
    payload["messages"][0]["content"] = "changed"
    assert source[0]["content"] == "Hi"


def test_profile_for_finds_aliases_and_falls_back_to_claude_rules() -> None:
    assert profile_for("claude-sonnet-4-5") is SONNET_4_5
    unknown = profile_for("someone/else")
    assert unknown.id == "someone/else"
    assert unknown.max_output_tokens == SONNET_4_5.max_output_tokens
    assert unknown.lifecycle.shutdown_at is None
