"""The rules of each model profile: what a turn may send, in words when it may not."""

import datetime
from decimal import Decimal

import pytest

from conversations.gateway.profiles import (
    BUILT_IN,
    DEMO_MODELS,
    KIND_ADAPTIVE,
    OPUS_4_5,
    SONNET_4_5,
    SONNET_4_6,
    ModelFacts,
    TurnSettings,
    adaptive_profile,
    apply_facts,
    facts_from_entry,
    settings_from_params,
)

SONNET_5 = adaptive_profile(id="anthropic/claude-sonnet-5", display_name="Claude Sonnet 5")
CLAUDE_4 = (SONNET_4_5, SONNET_4_6, OPUS_4_5, DEMO_MODELS[0])
EVERY_PROFILE = (*BUILT_IN, *DEMO_MODELS, SONNET_5)


@pytest.mark.parametrize("profile", CLAUDE_4, ids=lambda p: p.id)
def test_claude_4_takes_temperature_or_top_p_never_both(profile) -> None:
    by_temperature = TurnSettings(sampling="temperature", temperature=0.3, top_p=0.5)
    by_top_p = TurnSettings(sampling="top_p", temperature=0.3, top_p=0.5)

    assert by_temperature.problems(profile) == {}
    assert by_temperature.request_params(profile) == {"max_tokens": 4096, "temperature": 0.3}
    assert by_top_p.request_params(profile) == {"max_tokens": 4096, "top_p": 0.5}


@pytest.mark.parametrize("profile", CLAUDE_4, ids=lambda p: p.id)
def test_claude_4_thinking_drops_temperature_and_limits_top_p(profile) -> None:
    thinking_temperature = TurnSettings(
        sampling="temperature", temperature=0.3, reasoning_effort="low"
    )
    thinking_top_p = TurnSettings(sampling="top_p", top_p=0.5, reasoning_effort="low")

    assert thinking_temperature.request_params(profile) == {
        "max_tokens": 4096,
        "reasoning_effort": "low",
    }
    assert thinking_top_p.problems(profile) == {
        "top_p": f"With reasoning on, {profile.display_name} only accepts Top P from 0.95 to 1 "
        "(you chose 0.5). Raise Top P or reset sampling to the model default."
    }


@pytest.mark.parametrize("profile", CLAUDE_4, ids=lambda p: p.id)
def test_out_of_range_values_are_explained_in_words(profile) -> None:
    settings = TurnSettings(sampling="temperature", temperature=1.5, max_tokens=100_000)

    problems = settings.problems(profile)

    assert problems["temperature"] == (
        f"{profile.display_name} takes a temperature from 0 to 1 (you chose 1.5)."
    )
    assert problems["max_tokens"] == (
        f"{profile.display_name} writes from 1 to 64,000 tokens per reply (you asked for 100,000)."
    )


def test_an_adaptive_model_is_sent_no_sampling_and_no_thinking_switch() -> None:
    settings = TurnSettings(sampling="temperature", temperature=0.3, reasoning_effort="high")

    assert settings.problems(SONNET_5) == {
        "temperature": "Claude Sonnet 5 chooses its own sampling.",
        "reasoning_effort": "Claude Sonnet 5 decides for itself how much to think.",
    }
    # Even when asked, nothing it would refuse goes out.
    assert settings.request_params(SONNET_5) == {"max_tokens": 4096}


@pytest.mark.parametrize("profile", EVERY_PROFILE, ids=lambda p: p.id)
def test_fitted_settings_are_always_accepted(profile) -> None:
    wild = TurnSettings(
        sampling="top_p",
        top_p=0.1,
        reasoning_effort="high",
        max_tokens=10**7,
        stop=("a", "b", "c", "d", "e"),
    )

    fitted = wild.fitted(profile)

    assert fitted.problems(profile) == {}
    assert fitted.max_tokens == profile.max_output_tokens


def test_stored_params_read_back_into_the_same_request() -> None:
    params = {"max_tokens": 900, "top_p": 0.97, "reasoning_effort": "low", "stop": ["END"]}

    settings = settings_from_params(params, model=SONNET_4_5.id)

    assert settings.request_params(SONNET_4_5) == params


def test_retirement_dates_and_the_notice_period() -> None:
    assert not SONNET_4_5.retired_on(datetime.date(2026, 11, 29))
    assert SONNET_4_5.retired_on(datetime.date(2026, 11, 30))
    assert SONNET_4_5.retiring_soon(datetime.date(2026, 11, 16), notice_days=14)
    assert not SONNET_4_5.retiring_soon(datetime.date(2026, 11, 15), notice_days=14)
    assert not SONNET_4_6.retiring_soon(datetime.date(2026, 11, 29), notice_days=14)


def test_cost_is_estimated_from_the_profile_prices() -> None:
    assert SONNET_4_5.estimated_cost(prompt_tokens=1_000_000, completion_tokens=0) == Decimal("3")
    assert OPUS_4_5.estimated_cost(prompt_tokens=1000, completion_tokens=2000) == Decimal("0.055")
    assert SONNET_5.estimated_cost(prompt_tokens=10, completion_tokens=10) is None


def test_a_models_list_entry_maps_an_unknown_id_to_the_adaptive_kind() -> None:
    entry = {
        "id": "anthropic/claude-sonnet-5",
        "info": {"name": "Claude Sonnet 5", "contextLength": 1_000_000, "outputMax": 128_000},
        "pricing": {"input": 3, "output": "15"},
        "capabilities": {"thinking": "adaptive"},
    }

    facts = facts_from_entry(entry)
    assert facts is not None
    profile = apply_facts(None, facts)

    assert profile.kind == KIND_ADAPTIVE
    assert profile.display_name == "Claude Sonnet 5"
    assert "temperature" not in profile.ranges
    assert (profile.context_window, profile.max_output_tokens) == (1_000_000, 128_000)
    assert profile.input_price_per_mtok == Decimal("3")


@pytest.mark.parametrize(
    "entry",
    [
        {"id": ""},
        {"id": 42},
        {"model": "x" * 101},
        {"id": "bad\nid"},
    ],
)
def test_entries_without_a_usable_id_are_ignored(entry) -> None:
    assert facts_from_entry(entry) is None


def test_out_of_bounds_numbers_from_outside_are_dropped() -> None:
    facts = facts_from_entry(
        {
            "id": "anthropic/claude-sonnet-4.5",
            "info": {"contextLength": -5, "outputMax": 10**12},
            "pricing": {"input": "NaN", "output": True},
            "shutdown_at": "not a date",
        }
    )
    assert facts == ModelFacts(id="anthropic/claude-sonnet-4.5")
    assert apply_facts(SONNET_4_5, facts) == SONNET_4_5
