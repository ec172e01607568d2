"""The numeric parameters' controls, from their declarations and the chosen model's ranges, so
the templates loop over them instead of naming each one."""

from __future__ import annotations

from dataclasses import dataclass

from django import forms, template

from conversations.gateway.profiles import (
    ModelProfile,
    NumericParam,
    ParamRange,
    parameters,
)

register = template.Library()


def _listed(nouns: list[str], last: str) -> str:
    return nouns[0] if len(nouns) == 1 else f"{', '.join(nouns[:-1])} {last} {nouns[-1]}"


@dataclass(frozen=True, slots=True)
class ParameterControl:
    spec: NumericParam
    field: forms.BoundField
    # The chosen model's range; None when it does not take the parameter (the control hides).
    span: ParamRange | None
    # A sampling parameter the choice names and the model takes.
    chosen: bool

    @property
    def choice_label(self) -> str:
        """The sampling choice's words for it: "temperature", "top P"."""
        return self.spec.noun[:1].lower() + self.spec.noun[1:]


@dataclass(frozen=True, slots=True)
class ParameterControls:
    sampling: list[ParameterControl]
    plain: list[ParameterControl]

    @property
    def chosen(self) -> ParameterControl | None:
        return next((control for control in self.sampling if control.chosen), None)

    @property
    def hint(self) -> str:
        """What the sampling choice sends, in words (controls.js says the same after a
        change)."""
        chosen = self.chosen
        if chosen is None:
            nouns = [control.spec.noun for control in self.sampling]
            return f"Model defaults: neither {_listed(nouns, 'nor')} is sent."
        others = [c.spec.noun for c in self.sampling if c is not chosen]
        return f"Sending {chosen.spec.noun}; {_listed(others, 'or')} is not sent."

    @property
    def sampling_errors(self) -> list[str]:
        if not self.sampling:
            return []
        fields = [self.sampling[0].field.form["sampling"], *(c.field for c in self.sampling)]
        return [str(error) for field in fields for error in field.errors]


@register.simple_tag
def parameter_controls(form: forms.Form, profile: ModelProfile) -> ParameterControls:
    chosen_sampling = form["sampling"].value()
    controls = [
        ParameterControl(
            spec=spec,
            field=form[spec.name],
            span=profile.ranges.get(spec.name),
            chosen=(spec.sampling and chosen_sampling == spec.name and spec.name in profile.ranges),
        )
        for spec in parameters()
    ]
    return ParameterControls(
        sampling=[c for c in controls if c.spec.sampling],
        plain=[c for c in controls if not c.spec.sampling],
    )
