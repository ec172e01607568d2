import pytest

from conversations.chat.forms import RenameForm, TurnSettingsForm, turn_settings_from
from conversations.gateway.profiles import SONNET_4_5
from tests.support.factories import CONTROLS, builtin_choice


def test_stop_sequences_are_kept_verbatim_deduplicated_and_sent_as_stop() -> None:
    frame = {**CONTROLS, "stop_1": "\n\nHuman:", "stop_2": "", "stop_3": " END", "stop_4": " END"}
    form = TurnSettingsForm(data=frame, choice=builtin_choice())

    assert form.is_valid(), form.errors
    settings = turn_settings_from(form=form, frame=frame)

    assert settings.stop == ("\n\nHuman:", " END")
    assert settings.request_params(SONNET_4_5)["stop"] == ["\n\nHuman:", " END"]


def test_a_blank_stop_sequence_is_refused() -> None:
    form = TurnSettingsForm(data={**CONTROLS, "stop_2": "   "}, choice=builtin_choice())

    assert not form.is_valid()
    assert "only spaces" in form.errors["stop_2"][0]


def test_no_stop_sequences_sends_no_stop() -> None:
    form = TurnSettingsForm(data=CONTROLS, choice=builtin_choice())

    assert form.is_valid()
    assert "stop" not in turn_settings_from(form=form, frame=CONTROLS).request_params(SONNET_4_5)


@pytest.mark.parametrize(
    ("frame", "expected"),
    [({**CONTROLS, "system_prompt": "Be brief."}, "Be brief."), (CONTROLS, None)],
)
def test_system_prompt_is_only_changed_when_the_frame_carries_one(frame, expected) -> None:
    form = TurnSettingsForm(data=frame, choice=builtin_choice())

    assert form.is_valid()
    assert turn_settings_from(form=form, frame=frame).system_prompt == expected


def test_rename_collapses_whitespace_and_refuses_blank() -> None:
    form = RenameForm(data={"title": "  Trip \n to   Lisbon "})
    blank = RenameForm(data={"title": " \t "})

    assert form.is_valid()
    assert form.cleaned_data["title"] == "Trip to Lisbon"
    assert not blank.is_valid()


def test_blank_max_tokens_means_the_models_default() -> None:
    frame = {**CONTROLS, "max_tokens": ""}
    form = TurnSettingsForm(data=frame, choice=builtin_choice())

    assert form.is_valid(), form.errors
    settings = turn_settings_from(form=form, frame=frame)
    assert settings.max_tokens == SONNET_4_5.default_max_tokens
    assert settings.request_params(SONNET_4_5)["max_tokens"] == SONNET_4_5.default_max_tokens


@pytest.mark.parametrize("value", ["0", "-5", "64001"])
def test_max_tokens_out_of_range_gets_the_apps_own_words(value: str) -> None:
    form = TurnSettingsForm(data={**CONTROLS, "max_tokens": value}, choice=builtin_choice())

    assert not form.is_valid()
    assert form.errors["max_tokens"] == [
        f"Claude Sonnet 4.5 writes from 1 to 64,000 tokens per reply (you asked for "
        f"{int(value):,})."
    ]
