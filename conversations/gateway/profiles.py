"""What each model takes: the one source of truth for request parameters.

A profile says which sampling parameters a model accepts and in what ranges, how it reasons,
which request dialect it is reached with, what it can read (images, PDFs), what it costs and
when it retires. Forms, templates, the page's controls and the request builder all read limits
from here, never from copied constants.

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
from typing import Any, Final

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
    # None: the model does not take the parameter (the control is hidden, nothing is sent).
    temperature: ParamRange | None = None
    top_p: ParamRange | None = None
    top_k: ParamRange | None = None
    # Claude refuses temperature and top_p in one request.
    sampling_exclusive: bool = True
    reasoning: ReasoningStyle = ReasoningStyle.NONE
    # With thinking on: temperature is not sent (only 1 is allowed) and top_p must lie here.
    top_p_while_thinking: ParamRange | None = None
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
        return self.temperature is not None or self.top_p is not None

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
            if value is None:
                return None
            return {"min": value.low, "max": value.high, "default": value.default}

        return {
            "id": self.id,
            "name": self.display_name,
            "temperature": span(self.temperature),
            "top_p": span(self.top_p),
            "top_p_while_thinking": span(self.top_p_while_thinking),
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


# Sampling as Claude 4.x takes it: temperature 0–1 or top_p, one of them.
_CLAUDE_TEMPERATURE: Final = ParamRange(0.0, 1.0, 1.0)
_CLAUDE_TOP_P: Final = ParamRange(0.0, 1.0, 1.0)
_CLAUDE_TOP_P_THINKING: Final = ParamRange(0.95, 1.0, 1.0)
_CLAUDE_TOP_K: Final = ParamRange(1, 500, 40)


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
        temperature=_CLAUDE_TEMPERATURE,
        top_p=_CLAUDE_TOP_P,
        top_k=_CLAUDE_TOP_K,
        sampling_exclusive=True,
        reasoning=ReasoningStyle.BUDGET,
        top_p_while_thinking=_CLAUDE_TOP_P_THINKING,
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
        temperature=None,
        top_p=None,
        top_k=None,
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


class Sampling(StrEnum):
    """Which sampling parameter the user set; Claude takes one of them, never both."""

    DEFAULT = "default"
    TEMPERATURE = "temperature"
    TOP_P = "top_p"


REASONING_OFF: Final = "off"
# The TurnSettings fields a conversation and a user's preferences keep, column for column.
STORED_FIELDS: Final = ("sampling", "temperature", "top_p", "reasoning_effort", "max_tokens")
REASONING_EFFORTS: Final = ("low", "medium", "high")


def _number(value: float) -> str:
    return f"{value:g}"


@dataclass(frozen=True, slots=True)
class TurnSettings:
    """What the user chose for a turn. `problems` says in words what the chosen model would
    refuse; `request_params` is exactly what is sent (and stored on the reply)."""

    sampling: str = Sampling.DEFAULT
    temperature: float = 1.0
    top_p: float = 1.0
    reasoning_effort: str = REASONING_OFF
    max_tokens: int = 4096
    stop: tuple[str, ...] = ()
    # None leaves the conversation's system prompt as it is.
    system_prompt: str | None = None
    # The model the user picked; "" means the conversation's (or the site's) model.
    model: str = ""

    @property
    def reasoning_on(self) -> bool:
        return self.reasoning_effort != REASONING_OFF

    def _thinking(self, profile: ModelProfile) -> bool:
        return self.reasoning_on and profile.reasoning is ReasoningStyle.BUDGET

    def problems(self, profile: ModelProfile) -> dict[str, str]:
        """Control name → what is wrong, in words. Empty when the model takes everything."""
        name = profile.display_name
        found: dict[str, str] = {}
        if not 1 <= self.max_tokens <= profile.max_output_tokens:
            found["max_tokens"] = (
                f"{name} writes from 1 to {profile.max_output_tokens:,} tokens per reply "
                f"(you asked for {self.max_tokens:,})."
            )
        if self.sampling not in tuple(Sampling):
            found["sampling"] = "Choose the model default, temperature or Top P."
        elif self.sampling == Sampling.TEMPERATURE:
            span = profile.temperature
            if span is None:
                found["temperature"] = profile.sampling_missing_reason()
            elif not span.contains(self.temperature):
                found["temperature"] = (
                    f"{name} takes a temperature from {_number(span.low)} to "
                    f"{_number(span.high)} (you chose {_number(self.temperature)})."
                )
        elif self.sampling == Sampling.TOP_P:
            span = profile.top_p
            thinking_span = profile.top_p_while_thinking
            if span is None:
                found["top_p"] = profile.sampling_missing_reason()
            elif not span.contains(self.top_p):
                found["top_p"] = (
                    f"{name} takes a Top P from {_number(span.low)} to {_number(span.high)} "
                    f"(you chose {_number(self.top_p)})."
                )
            elif (
                self._thinking(profile)
                and thinking_span is not None
                and not thinking_span.contains(self.top_p)
            ):
                found["top_p"] = (
                    f"With reasoning on, {name} only accepts Top P from "
                    f"{_number(thinking_span.low)} to {_number(thinking_span.high)} (you chose "
                    f"{_number(self.top_p)}). Raise Top P or reset sampling to the model default."
                )
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
            ParameterNotSent(parameter=control, reason=reason).sentence
            for control, reason in self.problems(profile).items()
        ]

    def fitted(self, profile: ModelProfile) -> TurnSettings:
        """The nearest settings the model takes: for a switch the user did not make (a retired
        model), where refusing the turn would leave the conversation dead."""
        sampling = self.sampling
        if (sampling == Sampling.TEMPERATURE and profile.temperature is None) or (
            sampling == Sampling.TOP_P and profile.top_p is None
        ):
            sampling = Sampling.DEFAULT
        top_p = self.top_p
        if sampling == Sampling.TOP_P and profile.top_p is not None:
            top_p = min(max(top_p, profile.top_p.low), profile.top_p.high)
            thinking_span = profile.top_p_while_thinking
            if self._thinking(profile) and thinking_span is not None:
                top_p = min(max(top_p, thinking_span.low), thinking_span.high)
        temperature = self.temperature
        if sampling == Sampling.TEMPERATURE and profile.temperature is not None:
            span = profile.temperature
            temperature = min(max(temperature, span.low), span.high)
        return dataclasses.replace(
            self,
            sampling=sampling,
            temperature=temperature,
            top_p=top_p,
            reasoning_effort=(
                self.reasoning_effort if profile.takes_reasoning_switch else REASONING_OFF
            ),
            max_tokens=min(max(self.max_tokens, 1), profile.max_output_tokens),
            stop=self.stop[: profile.max_stop_sequences],
        )

    def request_params(self, profile: ModelProfile) -> dict[str, Any]:
        """Exactly the parameters to send: only what the user set and the model takes.
        Temperature and top_p are either/or, and temperature is never sent while thinking
        (thinking only allows 1)."""
        params: dict[str, Any] = {
            "max_tokens": min(max(self.max_tokens, 1), profile.max_output_tokens)
        }
        if (
            self.sampling == Sampling.TEMPERATURE
            and profile.temperature is not None
            and not self._thinking(profile)
        ):
            params["temperature"] = self.temperature
        elif self.sampling == Sampling.TOP_P and profile.top_p is not None:
            params["top_p"] = self.top_p
        if self.reasoning_on and profile.takes_reasoning_switch:
            params["reasoning_effort"] = self.reasoning_effort
        if self.stop:
            params["stop"] = list(self.stop[: profile.max_stop_sequences])
        return params


def settings_from_params(params: Mapping[str, Any], *, model: str) -> TurnSettings:
    """The settings a stored request was sent with (to send it again, or to another model)."""
    sampling = Sampling.DEFAULT
    if "temperature" in params:
        sampling = Sampling.TEMPERATURE
    elif "top_p" in params:
        sampling = Sampling.TOP_P
    return TurnSettings(
        sampling=sampling,
        temperature=float(params.get("temperature", 1.0)),
        top_p=float(params.get("top_p", 1.0)),
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
