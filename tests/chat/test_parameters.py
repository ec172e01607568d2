"""A plain numeric parameter is declared once, in `profiles.PARAMETERS`, and given a range by
each profile that takes it: the form, the settings' checks and fitting, the request builder, the
notes, the page's controls and its template all follow with no other code naming it. Here a
hypothetical one is registered for the test alone (it has no column, so nothing is stored)."""

import dataclasses

import pytest
from django.template.loader import render_to_string

from conversations.catalogue.selectors import Catalogue, ModelChoice
from conversations.chat.forms import TurnSettingsForm, turn_settings_from
from conversations.gateway import profiles
from conversations.gateway.payload import TurnOptions, build_payload, options_from_params
from conversations.gateway.profiles import (
    PARAMETERS,
    SONNET_4_5,
    STORED_FIELDS,
    NumericParam,
    ParamRange,
    adaptive_profile,
    profile_index,
    settings_from_params,
)
from conversations.models import Conversation, UserPreferences
from tests.support.factories import CONTROLS

TOP_K = NumericParam(name="top_k", label="Top K", noun="Top K", low=1, high=10_000, integer=True)
TAKES = dataclasses.replace(
    SONNET_4_5,
    id="test/takes-top-k",
    display_name="Test model",
    aliases=(),
    ranges={**SONNET_4_5.ranges, "top_k": ParamRange(1, 500, 40)},
)
REFUSES = adaptive_profile(id="test/adaptive", display_name="Test adaptive model")
MESSAGES = [{"role": "user", "content": "Hello"}]


@pytest.fixture(autouse=True)
def top_k_declared(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(profiles, "PARAMETERS", (*PARAMETERS, TOP_K))


def choice_of(current: str) -> ModelChoice:
    catalogue = Catalogue(profiles=(TAKES, REFUSES), by_id=profile_index((TAKES, REFUSES)))
    return ModelChoice(catalogue=catalogue, offered=[TAKES, REFUSES], current=current)


def checked_form(model: str = TAKES.id, **controls: str) -> TurnSettingsForm:
    form = TurnSettingsForm(data={**CONTROLS, "model": model, **controls}, choice=choice_of(model))
    form.is_valid()
    return form


def test_the_form_takes_it_and_the_request_carries_it_as_set() -> None:
    frame = {**CONTROLS, "top_k": "40"}
    form = checked_form(top_k="40")

    assert form.is_valid(), form.errors
    settings = turn_settings_from(form=form, frame=frame)
    params = settings.request_params(TAKES)

    assert params == {"max_tokens": 1000, "top_k": 40}
    payload = build_payload(
        profile=TAKES, options=options_from_params(model=TAKES.id, params=params), messages=MESSAGES
    )
    assert payload.body["top_k"] == 40 and payload.not_sent == ()
    assert settings_from_params(params, model=TAKES.id).request_params(TAKES) == params


def test_left_blank_it_is_not_sent() -> None:
    form = checked_form(top_k="")

    assert form.is_valid(), form.errors
    assert "top_k" not in turn_settings_from(form=form, frame={}).request_params(TAKES)


def test_the_form_refuses_it_out_of_the_wire_bounds_the_model_range_or_while_thinking() -> None:
    assert checked_form(top_k="0").errors["top_k"] == [
        "Ensure this value is greater than or equal to 1."
    ]
    assert checked_form(top_k="900").errors["top_k"] == [
        "Test model takes a Top K from 1 to 500 (you chose 900)."
    ]
    assert checked_form(model=REFUSES.id, top_k="40").errors["top_k"] == [
        "Test adaptive model chooses its own sampling."
    ]
    assert checked_form(top_k="40", reasoning_effort="low").errors["top_k"] == [
        "With reasoning on, Test model takes no Top K. Clear it or turn reasoning off."
    ]


def test_a_model_switch_the_user_did_not_make_fits_it_and_says_so() -> None:
    settings = settings_from_params({"max_tokens": 100, "top_k": 900}, model=TAKES.id)

    assert settings.fitted(TAKES).value("top_k") == 500
    assert settings.fitted(REFUSES).value("top_k") is None
    assert settings.fitted(REFUSES).problems(REFUSES) == {}
    assert settings.fitting_notes(REFUSES) == [
        "Top K was not sent as set: Test adaptive model chooses its own sampling."
    ]


def test_the_request_builder_drops_it_with_a_note_where_the_model_would_refuse_it() -> None:
    def sentences(profile: profiles.ModelProfile, **options: object) -> list[str]:
        turn = TurnOptions(model=profile.id, max_tokens=100, **options)
        payload = build_payload(profile=profile, options=turn, messages=MESSAGES)
        assert "top_k" not in payload.body
        return [notice.sentence for notice in payload.not_sent]

    assert sentences(REFUSES, top_k=40) == [
        "Top K was not sent as set: Test adaptive model chooses its own sampling."
    ]
    assert sentences(TAKES, top_k=900) == [
        "Top K was not sent as set: Test model takes a Top K from 1 to 500."
    ]
    assert sentences(TAKES, top_k=40, reasoning_effort="low") == [
        "Top K was not sent as set: Test model takes no Top K while thinking."
    ]


def test_the_page_gets_its_control_and_its_range_from_the_declaration() -> None:
    controls = {p["name"]: p for p in TAKES.controls()["parameters"]}
    assert controls["top_k"]["range"] == {"min": 1, "max": 500, "default": 40}
    assert {p["name"]: p for p in REFUSES.controls()["parameters"]}["top_k"]["range"] is None

    form = TurnSettingsForm(initial={"top_k": 40}, choice=choice_of(TAKES.id), auto_id="%s")
    html = render_to_string("chat/_parameters.html", {"form": form, "profile": TAKES})
    assert 'name="top_k" min="1" max="500" step="1" value="40" placeholder="default (40)"' in html
    assert "Top K" in html
    hidden = render_to_string("chat/_parameters.html", {"form": form, "profile": REFUSES})
    assert 'data-parameter-control="top_k" hidden' in hidden and 'value=""' in hidden


def test_every_declared_parameter_is_a_column_of_both_settings_models() -> None:
    """The settings object is the one other place a new parameter needs (and its migration)."""
    for spec in PARAMETERS:
        assert spec.name in STORED_FIELDS
        for model in (Conversation, UserPreferences):
            column = model._meta.get_field(spec.name)
            assert column.default == spec.default or (spec.default is None and column.null)
