"""What each model takes: the one source of truth for request parameters.

Each numeric request parameter is declared once, in `PARAMETERS` (its name, label, bounds and
default); a profile says which of them a model accepts and in what ranges (`ranges`, by name),
how it reasons, which request dialect it is reached with, what it can read (images, PDFs), what
it costs and when it retires. The form, `TurnSettings`, the request builder, the notes and the
page's controls all read the declarations and the ranges from here, never from copied
constants. The rules that are not ranges stay here too, each in one place: temperature or top_p
(the sampling choice), nothing but what `thinking_ranges` lists while thinking, the reasoning
style, and max_tokens within the model's max output.

Built-in profiles cover the models the gateway documents; an operator can override or add
profiles (see the README), and the models and deprecations endpoints refresh lifecycle facts.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

from conversations.gateway.content import RequestStyle
from conversations.gateway.events import ParameterNotSent

KIND_CLAUDE_4: Final = "claude-4"
KIND_ADAPTIVE: Final = "adaptive"
PROFILE_KINDS: Final = (KIND_CLAUDE_4, KIND_ADAPTIVE)


class ReasoningStyle(StrEnum):
    NONE = "none"
    # `reasoning_effort: low|medium|high` only.
    EFFORT = "effort"
    # Extended thinking with a token budget (`thinking: {type: enabled, budget_tokens}`); in the
    # OpenAI dialect the same switch is spelled `reasoning_effort`.
    BUDGET = "budget"
    # The model decides how much to think; a manual thinking switch is refused.
    ADAPTIVE = "adaptive"


@dataclass(frozen=True, slots=True)
class ParamRange:
    low: float
    high: float
    default: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def clamp(self, value: float) -> float:
        return min(max(value, self.low), self.high)

    def as_json(self) -> dict[str, float]:
        return {"min": self.low, "max": self.high, "default": self.default}


@dataclass(frozen=True, slots=True)
class NumericParam:
    """A request parameter that is one number. Declared once in `PARAMETERS`; a model takes it
    when its profile gives it a range (`ModelProfile.ranges`)."""

    # The wire name, the form field and the stored column.
    name: str
    # The control's label, and the subject of a note ("Top P was not sent as set: …").
    label: str
    # How a sentence names it: "takes a temperature from 0 to 1".
    noun: str
    # The wire schema's bounds whatever the model: the form refuses anything outside them, since
    # a value is stored with the conversation even when it is not sent.
    low: float
    high: float
    # A new conversation's value; None leaves it blank (the model's own default, not sent).
    default: float | None = None
    integer: bool = False
    step: float = 1
    # One of the sampling choice's parameters (temperature, top_p): sent only when the choice
    # names it. Any other parameter is sent whenever it is set.
    sampling: bool = False

    def of(self, value: Any) -> float:
        """A stored or sent value as this parameter's type."""
        return int(value) if self.integer else float(value)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "noun": self.noun,
            "default": self.default,
            "step": self.step,
            "sampling": self.sampling,
        }


# Every numeric parameter a request may carry, in the order of the controls and the notes.
PARAMETERS: Final[tuple[NumericParam, ...]] = (
    NumericParam(
        name="temperature",
        label="Temperature",
        noun="temperature",
        low=0.0,
        high=2.0,
        default=1.0,
        step=0.05,
        sampling=True,
    ),
    NumericParam(
        name="top_p",
        label="Top P",
        noun="Top P",
        low=0.0,
        high=1.0,
        default=1.0,
        step=0.01,
        sampling=True,
    ),
)
# The words for the controls that are not numeric parameters, in notes and form errors.
_CONTROL_LABELS: Final[Mapping[str, str]] = {
    "reasoning_effort": "Thinking",
    "max_tokens": "Max tokens",
    "stop": "Stop sequences",
}


def parameters() -> tuple[NumericParam, ...]:
    """The declared numeric parameters, read at call time rather than bound at import."""
    return PARAMETERS


def sampling_parameters() -> tuple[NumericParam, ...]:
    return tuple(spec for spec in PARAMETERS if spec.sampling)


def control_label(name: str) -> str:
    for spec in PARAMETERS:
        if spec.name == name:
            return spec.label
    return _CONTROL_LABELS.get(name, name)


def declared_values(
    values: Mapping[str, float | None] | None, named: Mapping[str, float | None], *, of: str
) -> dict[str, float | None]:
    """Parameter values given as a mapping and as keywords, all of them declared ones."""
    given = {**(values or {}), **named}
    unknown = set(given) - {spec.name for spec in PARAMETERS}
    if unknown:
        raise TypeError(f"{of} takes no parameter {', '.join(sorted(unknown))}")
    return given


def parameter_not_sent(parameter: str, reason: str) -> ParameterNotSent:
    return ParameterNotSent(parameter=parameter, reason=reason, label=control_label(parameter))


@dataclass(frozen=True, slots=True)
class Lifecycle:
    deprecated_at: datetime.date | None = None
    shutdown_at: datetime.date | None = None
    replaced_by: str | None = None


@dataclass(frozen=True, slots=True)
class ModelProfile:
    id: str
    display_name: str
    context_window: int
    max_output_tokens: int
    # What a blank "Max tokens" asks for: the cap a reply gets unless the user sets one.
    default_max_tokens: int = 4096
    # Other ids the gateway accepts for the same model.
    aliases: tuple[str, ...] = ()
    dialect: RequestStyle = RequestStyle.OPENAI
    # The parameters the model takes, by name, in its ranges; a parameter it does not take is
    # absent (its control is hidden, nothing is sent).
    ranges: Mapping[str, ParamRange] = field(default_factory=dict, hash=False)
    # Claude refuses temperature and top_p in one request.
    sampling_exclusive: bool = True
    reasoning: ReasoningStyle = ReasoningStyle.NONE
    # With thinking on, only these parameters are sent, in these ranges (Claude: top_p from
    # 0.95; temperature is left out, thinking uses 1).
    thinking_ranges: Mapping[str, ParamRange] = field(default_factory=dict, hash=False)
    thinking_budget_min: int = 1024
    max_stop_sequences: int = 4
    vision: bool = False
    pdf: bool = False
    tools: bool = False
    # US dollars per million tokens; None when unknown (cost is then not estimated).
    input_price_per_mtok: Decimal | None = None
    output_price_per_mtok: Decimal | None = None
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    # Why a control is missing, in words for the page ("… chooses its own sampling").
    sampling_note: str = ""
    # How the profile was made ("claude-4" or "adaptive"): the operator and the models list map
    # an unknown id to a kind.
    kind: str = "claude-4"

    @property
    def ids(self) -> tuple[str, ...]:
        return (self.id, *self.aliases)

    @property
    def takes_sampling(self) -> bool:
        return any(spec.name in self.ranges for spec in sampling_parameters())

    def allowed(self, name: str, *, thinking: bool) -> ParamRange | None:
        """The range parameter `name` may be sent in; None when it is not sent at all."""
        return (self.thinking_ranges if thinking else self.ranges).get(name)

    @property
    def takes_reasoning_switch(self) -> bool:
        return self.reasoning in (ReasoningStyle.BUDGET, ReasoningStyle.EFFORT)

    def sampling_missing_reason(self) -> str:
        return self.sampling_note or f"{self.display_name} chooses its own sampling."

    def reasoning_missing_reason(self) -> str:
        if self.reasoning is ReasoningStyle.ADAPTIVE:
            return f"{self.display_name} decides for itself how much to think."
        return f"{self.display_name} does not reason before answering."

    def retired_on(self, today: datetime.date) -> bool:
        shutdown = self.lifecycle.shutdown_at
        return shutdown is not None and today >= shutdown

    def retiring_soon(self, today: datetime.date, *, notice_days: int) -> bool:
        """From `notice_days` before the shutdown date until it, the page warns."""
        shutdown = self.lifecycle.shutdown_at
        if shutdown is None or today >= shutdown:
            return False
        return (shutdown - today).days <= notice_days

    def estimated_cost(self, *, prompt_tokens: int, completion_tokens: int) -> Decimal | None:
        """US dollars from the profile's prices; None when a price is unknown."""
        if self.input_price_per_mtok is None or self.output_price_per_mtok is None:
            return None
        total = (
            self.input_price_per_mtok * prompt_tokens
            + self.output_price_per_mtok * completion_tokens
        ) / Decimal(1_000_000)
        return total.quantize(Decimal("0.000001"))

    def controls(self) -> dict[str, Any]:
        """What the page's controls need to follow this model, as plain JSON."""

        def span(value: ParamRange | None) -> dict[str, float] | None:
            return None if value is None else value.as_json()

        return {
            "id": self.id,
            "name": self.display_name,
            "parameters": [
                {
                    **spec.as_json(),
                    "range": span(self.ranges.get(spec.name)),
                    "while_thinking": span(self.thinking_ranges.get(spec.name)),
                }
                for spec in parameters()
            ],
            "sampling_exclusive": self.sampling_exclusive,
            "sampling_reason": "" if self.takes_sampling else self.sampling_missing_reason(),
            "reasoning": self.reasoning.value,
            "reasoning_reason": (
                "" if self.takes_reasoning_switch else self.reasoning_missing_reason()
            ),
            "max_output_tokens": self.max_output_tokens,
            "default_max_tokens": self.default_max_tokens,
            "context_window": self.context_window,
            "max_stop_sequences": self.max_stop_sequences,
        }


# Sampling as Claude 4.x takes it: temperature 0–1 or top_p, one of them; while thinking, only
# top_p from 0.95. (Claude's top_k range is a fact of the model, kept for when it is declared.)
_CLAUDE_RANGES: Final[Mapping[str, ParamRange]] = {
    "temperature": ParamRange(0.0, 1.0, 1.0),
    "top_p": ParamRange(0.0, 1.0, 1.0),
    "top_k": ParamRange(1, 500, 40),
}
_CLAUDE_THINKING_RANGES: Final[Mapping[str, ParamRange]] = {"top_p": ParamRange(0.95, 1.0, 1.0)}


def _claude_4(
    *,
    id: str,
    display_name: str,
    aliases: tuple[str, ...] = (),
    input_price: str,
    output_price: str,
    lifecycle: Lifecycle | None = None,
) -> ModelProfile:
    return ModelProfile(
        id=id,
        display_name=display_name,
        aliases=aliases,
        context_window=200_000,
        max_output_tokens=64_000,
        ranges=_CLAUDE_RANGES,
        sampling_exclusive=True,
        reasoning=ReasoningStyle.BUDGET,
        thinking_ranges=_CLAUDE_THINKING_RANGES,
        vision=True,
        pdf=True,
        tools=True,
        input_price_per_mtok=Decimal(input_price),
        output_price_per_mtok=Decimal(output_price),
        lifecycle=lifecycle or Lifecycle(),
    )


SONNET_4_5: Final = _claude_4(
    id="anthropic/claude-sonnet-4.5",
    display_name="Claude Sonnet 4.5",
    aliases=("claude-sonnet-4-5", "claude-sonnet-4-5-20250929"),
    input_price="3",
    output_price="15",
    lifecycle=Lifecycle(
        shutdown_at=datetime.date(2026, 11, 30), replaced_by="anthropic/claude-sonnet-4.6"
    ),
)
SONNET_4_6: Final = _claude_4(
    id="anthropic/claude-sonnet-4.6",
    display_name="Claude Sonnet 4.6",
    aliases=("claude-sonnet-4-6", "anthropic/claude-sonnet-4-6-20260218"),
    input_price="3",
    output_price="15",
)
OPUS_4_5: Final = _claude_4(
    id="anthropic/claude-opus-4-5",
    display_name="Claude Opus 4.5",
    aliases=("claude-opus-4-5",),
    input_price="5",
    output_price="25",
)


def adaptive_profile(*, id: str, display_name: str) -> ModelProfile:
    """The profile kind for Sonnet 5-class models: they think adaptively and refuse a manual
    thinking switch and any non-default temperature, top_p or top_k."""
    return ModelProfile(
        id=id,
        display_name=display_name,
        context_window=1_000_000,
        max_output_tokens=128_000,
        reasoning=ReasoningStyle.ADAPTIVE,
        vision=True,
        pdf=True,
        tools=True,
        sampling_note=f"{display_name} chooses its own sampling.",
        kind=KIND_ADAPTIVE,
    )


BUILT_IN: Final[tuple[ModelProfile, ...]] = (SONNET_4_5, SONNET_4_6, OPUS_4_5)

# Offline demo mode: one model with every control, one that thinks adaptively, so each kind of
# page can be tried without a key.
DEMO_MODELS: Final[tuple[ModelProfile, ...]] = (
    _claude_4(
        id="demo/claude-like",
        display_name="Demo model",
        input_price="3",
        output_price="15",
    ),
    adaptive_profile(id="demo/adaptive", display_name="Demo adaptive model"),
)


def profile_of_kind(*, kind: str, id: str, display_name: str) -> ModelProfile:
    """A profile for an id the built-ins do not know, from the kind the models list or the
    operator gives it; prices and limits are then filled in from what they say."""
    if kind == KIND_ADAPTIVE:
        return adaptive_profile(id=id, display_name=display_name)
    return dataclasses.replace(
        _claude_4(id=id, display_name=display_name, input_price="0", output_price="0"),
        input_price_per_mtok=None,
        output_price_per_mtok=None,
    )


def profile_index(profiles: Iterable[ModelProfile]) -> dict[str, ModelProfile]:
    """Every id and alias to its profile; a later profile wins over an earlier one."""
    index: dict[str, ModelProfile] = {}
    for profile in profiles:
        for model_id in profile.ids:
            index[model_id] = profile
    return index


# ---------------------------------------------------------------------------------------------
# A turn's parameters, validated against the profile of the model it goes to
# ---------------------------------------------------------------------------------------------


# The sampling choice: the model's defaults, or the one sampling parameter it names.
SAMPLING_DEFAULT: Final = "default"
REASONING_OFF: Final = "off"
# The TurnSettings fields a conversation and a user's preferences keep, column for column.
STORED_FIELDS: Final = (
    "sampling",
    *(spec.name for spec in PARAMETERS),
    "reasoning_effort",
    "max_tokens",
)
REASONING_EFFORTS: Final = ("low", "medium", "high")


def sampling_choices() -> list[tuple[str, str]]:
    return [
        (SAMPLING_DEFAULT, "Model default"),
        *((spec.name, spec.label) for spec in sampling_parameters()),
    ]


def _number(value: float) -> str:
    return f"{value:g}"


def _range_words(span: ParamRange) -> str:
    return f"from {_number(span.low)} to {_number(span.high)}"


@dataclass(frozen=True, slots=True, init=False)
class TurnSettings:
    """What the user chose for a turn. `problems` says in words what the chosen model would
    refuse; `request_params` is exactly what is sent (and stored on the reply).

    The numeric parameters are held by name in `values` and passed by name as keywords
    (``TurnSettings(sampling="top_p", top_p=0.9)``); a parameter left out gets its declared
    default."""

    sampling: str
    reasoning_effort: str
    max_tokens: int
    stop: tuple[str, ...]
    # None leaves the conversation's system prompt as it is.
    system_prompt: str | None
    # The model the user picked; "" means the conversation's (or the site's) model.
    model: str
    values: Mapping[str, float | None] = field(hash=False)

    def __init__(
        self,
        *,
        sampling: str = SAMPLING_DEFAULT,
        reasoning_effort: str = REASONING_OFF,
        max_tokens: int = 4096,
        stop: tuple[str, ...] = (),
        system_prompt: str | None = None,
        model: str = "",
        values: Mapping[str, float | None] | None = None,
        **named: float | None,
    ) -> None:
        given = declared_values(values, named, of="TurnSettings")
        for name, value in (
            ("sampling", sampling),
            ("reasoning_effort", reasoning_effort),
            ("max_tokens", max_tokens),
            ("stop", stop),
            ("system_prompt", system_prompt),
            ("model", model),
            ("values", {spec.name: given.get(spec.name, spec.default) for spec in PARAMETERS}),
        ):
            object.__setattr__(self, name, value)

    if not TYPE_CHECKING:
        # The services copy `STORED_FIELDS` by name, the parameters among them; typed code
        # reads `value(name)`.
        def __getattr__(self, name: str) -> float | None:
            try:
                values = object.__getattribute__(self, "values")
            except AttributeError:
                raise AttributeError(name) from None
            if name in values:
                return values[name]
            raise AttributeError(name)

    def value(self, name: str) -> float | None:
        return self.values.get(name)

    def chosen(self, spec: NumericParam) -> float | None:
        """The value the user asks to send: a sampling parameter only when the sampling
        choice names it, any other whenever it is set."""
        if spec.sampling and self.sampling != spec.name:
            return None
        return self.values.get(spec.name)

    @property
    def reasoning_on(self) -> bool:
        return self.reasoning_effort != REASONING_OFF

    def _thinking(self, profile: ModelProfile) -> bool:
        return self.reasoning_on and profile.reasoning is ReasoningStyle.BUDGET

    def _parameter_problem(self, spec: NumericParam, profile: ModelProfile) -> str | None:
        value = self.chosen(spec)
        if value is None:
            return None
        name = profile.display_name
        span = profile.ranges.get(spec.name)
        if span is None:
            return profile.sampling_missing_reason()
        if not span.contains(value):
            return f"{name} takes a {spec.noun} {_range_words(span)} (you chose {_number(value)})."
        if not self._thinking(profile):
            return None
        thinking_span = profile.thinking_ranges.get(spec.name)
        if thinking_span is None:
            # The page says a sampling parameter is left out while thinking (thinking uses
            # the model's own); any other set parameter would be dropped unseen.
            if spec.sampling:
                return None
            return (
                f"With reasoning on, {name} takes no {spec.noun}. Clear it or turn reasoning off."
            )
        if thinking_span.contains(value):
            return None
        return (
            f"With reasoning on, {name} only accepts {spec.noun} {_range_words(thinking_span)} "
            f"(you chose {_number(value)}). Raise {spec.noun} or reset sampling to the model "
            "default."
        )

    def problems(self, profile: ModelProfile) -> dict[str, str]:
        """Control name → what is wrong, in words. Empty when the model takes everything."""
        name = profile.display_name
        found: dict[str, str] = {}
        if not 1 <= self.max_tokens <= profile.max_output_tokens:
            found["max_tokens"] = (
                f"{name} writes from 1 to {profile.max_output_tokens:,} tokens per reply "
                f"(you asked for {self.max_tokens:,})."
            )
        if self.sampling not in dict(sampling_choices()):
            nouns = " or ".join(spec.noun for spec in sampling_parameters())
            found["sampling"] = f"Choose the model default, {nouns}."
        for spec in parameters():
            problem = self._parameter_problem(spec, profile)
            if problem is not None:
                found[spec.name] = problem
        if self.reasoning_effort not in (REASONING_OFF, *REASONING_EFFORTS):
            found["reasoning_effort"] = "Choose off, low, medium or high."
        elif self.reasoning_on and not profile.takes_reasoning_switch:
            found["reasoning_effort"] = profile.reasoning_missing_reason()
        if len(self.stop) > profile.max_stop_sequences:
            found["stop"] = f"{name} takes at most {profile.max_stop_sequences} stop sequences."
        return found

    def fitting_notes(self, profile: ModelProfile) -> list[str]:
        """What ``fitted`` changes, in words for the reply: a switch the user did not make
        must not drop or change their settings silently."""
        return [
            parameter_not_sent(control, reason).sentence
            for control, reason in self.problems(profile).items()
        ]

    def fitted(self, profile: ModelProfile) -> TurnSettings:
        """The nearest settings the model takes: for a switch the user did not make (a retired
        model), where refusing the turn would leave the conversation dead."""
        thinking = self._thinking(profile)
        sampling = self.sampling
        values = dict(self.values)
        for spec in parameters():
            value = self.chosen(spec)
            span = profile.ranges.get(spec.name)
            if value is None:
                continue
            if span is None:
                # Not taken: the sampling choice goes back to the model's defaults, any other
                # parameter to blank.
                if spec.sampling:
                    sampling = SAMPLING_DEFAULT
                else:
                    values[spec.name] = None
                continue
            fitted: float | None = span.clamp(value)
            thinking_span = profile.thinking_ranges.get(spec.name)
            if thinking and thinking_span is not None:
                fitted = thinking_span.clamp(span.clamp(value))
            elif thinking and not spec.sampling:
                fitted = None
            values[spec.name] = fitted
        return dataclasses.replace(
            self,
            sampling=sampling,
            values=values,
            reasoning_effort=(
                self.reasoning_effort if profile.takes_reasoning_switch else REASONING_OFF
            ),
            max_tokens=min(max(self.max_tokens, 1), profile.max_output_tokens),
            stop=self.stop[: profile.max_stop_sequences],
        )

    def request_params(self, profile: ModelProfile) -> dict[str, Any]:
        """Exactly the parameters to send: only what the user set and the model takes. A
        sampling parameter goes only when the choice names it (temperature and top_p are
        either/or), and while thinking only what `thinking_ranges` lists (never temperature:
        thinking only allows 1)."""
        params: dict[str, Any] = {
            "max_tokens": min(max(self.max_tokens, 1), profile.max_output_tokens)
        }
        thinking = self._thinking(profile)
        for spec in parameters():
            value = self.chosen(spec)
            if value is not None and profile.allowed(spec.name, thinking=thinking) is not None:
                params[spec.name] = value
        if self.reasoning_on and profile.takes_reasoning_switch:
            params["reasoning_effort"] = self.reasoning_effort
        if self.stop:
            params["stop"] = list(self.stop[: profile.max_stop_sequences])
        return params


def settings_from_params(params: Mapping[str, Any], *, model: str) -> TurnSettings:
    """The settings a stored request was sent with (to send it again, or to another model)."""
    declared = parameters()
    sent = [spec.name for spec in declared if spec.sampling and spec.name in params]
    return TurnSettings(
        sampling=sent[0] if sent else SAMPLING_DEFAULT,
        values={spec.name: spec.of(params[spec.name]) for spec in declared if spec.name in params},
        reasoning_effort=str(params.get("reasoning_effort", REASONING_OFF)),
        max_tokens=int(params.get("max_tokens", 4096)),
        stop=tuple(str(s) for s in params.get("stop", ())),
        model=model,
    )


# ---------------------------------------------------------------------------------------------
# Facts from outside (the gateway's models list, the operator's file) laid over a profile
# ---------------------------------------------------------------------------------------------

# Bounds for numbers read from outside: anything beyond them is a broken entry, not a model.
MAX_CONTEXT_WINDOW: Final = 100_000_000
MAX_PRICE_PER_MTOK: Final = Decimal(100_000)


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """What the models list, the deprecations list or the operator says about one id; None
    means "not said", so the profile's own value stays."""

    id: str
    display_name: str | None = None
    kind: str | None = None
    aliases: tuple[str, ...] | None = None
    context_window: int | None = None
    max_output_tokens: int | None = None
    input_price_per_mtok: Decimal | None = None
    output_price_per_mtok: Decimal | None = None
    deprecated_at: datetime.date | None = None
    shutdown_at: datetime.date | None = None
    replaced_by: str | None = None
    # Whether the model reads images / PDFs (the operator's file may say it does not).
    vision: bool | None = None
    pdf: bool | None = None


def apply_facts(profile: ModelProfile | None, facts: ModelFacts) -> ModelProfile:
    """`profile` with what `facts` says; an id without a profile gets one of the facts' kind."""
    if profile is None or (facts.kind is not None and facts.kind != profile.kind):
        profile = profile_of_kind(
            kind=facts.kind or KIND_CLAUDE_4,
            id=facts.id,
            display_name=facts.display_name or (profile.display_name if profile else facts.id),
        )
    lifecycle = profile.lifecycle
    changes: dict[str, Any] = {
        "lifecycle": Lifecycle(
            deprecated_at=facts.deprecated_at or lifecycle.deprecated_at,
            shutdown_at=facts.shutdown_at or lifecycle.shutdown_at,
            replaced_by=facts.replaced_by or lifecycle.replaced_by,
        )
    }
    for name in (
        "display_name",
        "aliases",
        "context_window",
        "max_output_tokens",
        "input_price_per_mtok",
        "output_price_per_mtok",
        "vision",
        "pdf",
    ):
        value = getattr(facts, name)
        if value is not None:
            changes[name] = value
    if facts.display_name and profile.kind == KIND_ADAPTIVE:
        changes["sampling_note"] = f"{facts.display_name} chooses its own sampling."
    return dataclasses.replace(profile, **changes)


def _bounded_int(value: Any, high: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if 1 <= number <= high else None


def _price(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        price = Decimal(str(value))
    except ArithmeticError:
        return None
    if not price.is_finite() or not Decimal(0) <= price <= MAX_PRICE_PER_MTOK:
        return None
    return price.quantize(Decimal("0.000001"))


def _date(value: Any) -> datetime.date | None:
    if not isinstance(value, str) or not 8 <= len(value) <= 40:
        return None
    try:
        return datetime.date.fromisoformat(value[:10])
    except ValueError:
        return None


def _model_id(value: Any) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= 100 and value.isprintable():
        return value
    return None


def _text(value: Any, limit: int = 100) -> str | None:
    if isinstance(value, str) and value.strip() and value.isprintable():
        return value.strip()[:limit]
    return None


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def facts_from_entry(entry: Mapping[str, Any]) -> ModelFacts | None:
    """One model, written either the operator's way (flat keys, see the README) or the models
    list's way (`info.contextLength`, `info.outputMax` or `outputMax`, `pricing.input/output`
    per million tokens, `capabilities.thinking: "adaptive"`). Out-of-bounds values are dropped;
    an entry without a usable id is None."""
    model_id = _model_id(entry.get("id") or entry.get("model"))
    if model_id is None:
        return None
    info = _mapping(entry.get("info"))
    pricing = _mapping(entry.get("pricing"))
    capabilities = _mapping(entry.get("capabilities"))
    kind = entry.get("kind") or entry.get("profile_kind")
    if kind is None and "adaptive" in (capabilities.get("thinking"), capabilities.get("reasoning")):
        kind = KIND_ADAPTIVE
    raw_aliases = entry.get("aliases")
    aliases = None
    if isinstance(raw_aliases, list):
        aliases = tuple(a for a in (_model_id(a) for a in raw_aliases[:10]) if a)
    return ModelFacts(
        id=model_id,
        display_name=_text(entry.get("display_name") or info.get("name")),
        kind=kind if kind in PROFILE_KINDS else None,
        aliases=aliases,
        context_window=_bounded_int(
            entry.get("context_window") or info.get("contextLength"), MAX_CONTEXT_WINDOW
        ),
        max_output_tokens=_bounded_int(
            entry.get("max_output_tokens") or info.get("outputMax") or entry.get("outputMax"),
            MAX_CONTEXT_WINDOW,
        ),
        input_price_per_mtok=_price(entry.get("input_price_per_mtok", pricing.get("input"))),
        output_price_per_mtok=_price(entry.get("output_price_per_mtok", pricing.get("output"))),
        deprecated_at=_date(entry.get("deprecated_at")),
        shutdown_at=_date(entry.get("shutdown_at")),
        replaced_by=_model_id(entry.get("replaced_by")),
        vision=_flag(entry.get("vision")),
        pdf=_flag(entry.get("pdf")),
    )


def entries_of(document: Any, *, limit: int = 1000) -> list[Mapping[str, Any]]:
    """The model entries of a list document: a bare list, or one under `data` or `models`."""
    if isinstance(document, Mapping):
        document = document.get("data", document.get("models"))
    if not isinstance(document, list):
        return []
    return [entry for entry in document[:limit] if isinstance(entry, Mapping)]
