"""The JSON body of ``POST /chat/completions``, built from a model profile in a dialect.

The profile says what the model takes; the dialect says how the request spells it. Nothing the
profile says the model refuses is ever sent, and every parameter the user set that is not sent
comes back as a ``ParameterNotSent`` notice, so the app can tell the user instead of dropping
it silently. Validation with messages for the form is the app's job (it reads the same
profile); this is the last guard before the wire.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from conversations.gateway.content import Content, message_to_wire
from conversations.gateway.dialect import Dialect
from conversations.gateway.events import ParameterNotSent
from conversations.gateway.profiles import (
    BUILT_IN,
    DEMO_MODELS,
    REASONING_EFFORTS,
    SONNET_4_5,
    Lifecycle,
    ModelProfile,
    ReasoningStyle,
    declared_values,
    parameter_not_sent,
    parameters,
    sampling_parameters,
)

THINKING_BUDGETS: Final[Mapping[str, int]] = {"low": 1024, "medium": 4096, "high": 16384}
# Room left for the visible answer when max_tokens has to be raised above the thinking budget.
_ANSWER_HEADROOM: Final = 1024


@dataclass(frozen=True, slots=True, init=False)
class TurnOptions:
    """The turn's parameters as the user set them (None: leave it to the model). The numeric
    parameters are held by name in `values` and passed by name as keywords
    (``TurnOptions(model=m, max_tokens=100, top_p=0.9)``)."""

    model: str
    max_tokens: int
    reasoning_effort: str | None
    stop: tuple[str, ...]
    values: Mapping[str, float | None] = field(hash=False)

    def __init__(
        self,
        *,
        model: str,
        max_tokens: int,
        reasoning_effort: str | None = None,
        stop: tuple[str, ...] = (),
        values: Mapping[str, float | None] | None = None,
        **named: float | None,
    ) -> None:
        for name, value in (
            ("model", model),
            ("max_tokens", max_tokens),
            ("reasoning_effort", reasoning_effort),
            ("stop", stop),
            ("values", declared_values(values, named, of="TurnOptions")),
        ):
            object.__setattr__(self, name, value)


def options_from_params(*, model: str, params: Mapping[str, Any]) -> TurnOptions:
    """The options of a reply's stored parameters (`TurnSettings.request_params`)."""
    return TurnOptions(
        model=model,
        max_tokens=params["max_tokens"],
        values={spec.name: params[spec.name] for spec in parameters() if spec.name in params},
        reasoning_effort=params.get("reasoning_effort"),
        stop=tuple(params.get("stop", ())),
    )


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    content: Content


@dataclass(frozen=True, slots=True)
class Payload:
    body: dict[str, Any]
    not_sent: tuple[ParameterNotSent, ...] = ()


def profile_for(model_id: str) -> ModelProfile:
    """The built-in profile for ``model_id`` (any of its ids), else a Claude 4.x-like profile
    under that id: the strictest common rules, so nothing a Claude model refuses is sent."""
    for profile in (*BUILT_IN, *DEMO_MODELS):
        if model_id in profile.ids:
            return profile
    return dataclasses.replace(
        SONNET_4_5, id=model_id, display_name=model_id, aliases=(), lifecycle=Lifecycle()
    )


class _Plan:
    """What will be sent, and a notice for each parameter that will not."""

    def __init__(self) -> None:
        self.not_sent: list[ParameterNotSent] = []

    def drop(self, parameter: str, reason: str) -> None:
        self.not_sent.append(parameter_not_sent(parameter, reason))


def _effort(options: TurnOptions, profile: ModelProfile, plan: _Plan) -> str | None:
    effort = options.reasoning_effort
    if effort is None:
        return None
    if effort not in REASONING_EFFORTS:
        raise ValueError(f"reasoning_effort must be one of {REASONING_EFFORTS} or None")
    if profile.reasoning is ReasoningStyle.NONE:
        plan.drop("reasoning_effort", f"{profile.display_name} does not think before answering.")
        return None
    if profile.reasoning is ReasoningStyle.ADAPTIVE:
        plan.drop("reasoning_effort", f"{profile.display_name} decides how long to think.")
        return None
    return effort


def _max_tokens(options: TurnOptions, profile: ModelProfile, plan: _Plan) -> int:
    if options.max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    if options.max_tokens > profile.max_output_tokens:
        plan.drop(
            "max_tokens",
            f"{profile.display_name} writes at most {profile.max_output_tokens:,} tokens; "
            "that limit was sent instead.",
        )
        return profile.max_output_tokens
    return options.max_tokens


def _thinking_budget(effort: str, max_tokens: int, profile: ModelProfile) -> tuple[int, int]:
    """(budget, max_tokens) with the budget ≥ the profile's minimum and below max_tokens,
    raising max_tokens (up to the model's ceiling) when it has to."""
    budget = max(THINKING_BUDGETS[effort], profile.thinking_budget_min)
    if max_tokens <= budget:
        max_tokens = min(budget + _ANSWER_HEADROOM, profile.max_output_tokens)
    if budget >= max_tokens:
        budget = max_tokens - 1
    return budget, max_tokens


def _numbers(
    options: TurnOptions, profile: ModelProfile, thinking: bool, plan: _Plan
) -> dict[str, float]:
    """Each numeric parameter the user set, sent as set when the model takes it (while thinking:
    only in `thinking_ranges`), else dropped with a notice; temperature and top_p never both
    when the model refuses that."""
    sent: dict[str, float] = {}
    name = profile.display_name
    either = " or ".join(spec.name for spec in sampling_parameters())
    for spec in parameters():
        value = options.values.get(spec.name)
        if value is None:
            continue
        allowed = profile.allowed(spec.name, thinking=thinking)
        if spec.name not in profile.ranges:
            plan.drop(spec.name, profile.sampling_missing_reason())
        elif allowed is None:
            # Thinking uses the parameter's default: nothing is lost when that is what was set.
            if value != spec.default:
                plan.drop(spec.name, f"{name} takes no {spec.noun} while thinking.")
        elif not allowed.contains(value):
            when = " while thinking" if thinking else ""
            plan.drop(
                spec.name,
                f"{name} takes a {spec.noun} from {allowed.low:g} to {allowed.high:g}{when}.",
            )
        elif (
            spec.sampling
            and profile.sampling_exclusive
            and any(other.name in sent for other in sampling_parameters())
        ):
            plan.drop(spec.name, f"{name} takes {either}, not both.")
        else:
            sent[spec.name] = value
    return sent


def _stop(options: TurnOptions, profile: ModelProfile, plan: _Plan) -> list[str]:
    stop = [s for s in options.stop if s]
    if len(stop) > profile.max_stop_sequences:
        plan.drop(
            "stop",
            f"{profile.display_name} takes at most {profile.max_stop_sequences} stop sequences; "
            f"only the first {profile.max_stop_sequences} were sent.",
        )
        stop = stop[: profile.max_stop_sequences]
    return stop


def _wire_messages(
    messages: Sequence[Mapping[str, Any] | Message], dialect: Dialect
) -> list[dict[str, Any]]:
    wire: list[dict[str, Any]] = []
    for message in messages:
        if isinstance(message, Message):
            message = {"role": message.role, "content": message.content}
        wire.append(message_to_wire(message, dialect.content_style))
    return wire


def build_payload(
    *,
    profile: ModelProfile,
    options: TurnOptions,
    messages: Sequence[Mapping[str, Any] | Message],
    system_prompt: str = "",
    dialect: Dialect | None = None,
    stream: bool = True,
) -> Payload:
    """The request body for one turn; only parameters that are set (and taken) are sent, so the
    gateway's own defaults apply otherwise. ``dialect`` defaults to the profile's."""
    if dialect is None:
        dialect = Dialect.of(profile.dialect)
    plan = _Plan()

    chat = _wire_messages(messages, dialect)
    has_system = bool(system_prompt.strip())
    if has_system and not dialect.system_top_level:
        chat.insert(0, {"role": "system", "content": system_prompt})
    body: dict[str, Any] = {"model": options.model, "messages": chat}
    if has_system and dialect.system_top_level:
        body["system"] = system_prompt
    body["stream"] = stream
    if stream:
        body["stream_options"] = {"include_usage": True}

    max_tokens = _max_tokens(options, profile, plan)
    effort = _effort(options, profile, plan)
    budget_style = profile.reasoning is ReasoningStyle.BUDGET and dialect.thinking_budget
    thinking: dict[str, Any] | None = None
    if effort is not None and budget_style:
        budget, max_tokens = _thinking_budget(effort, max_tokens, profile)
        if budget < profile.thinking_budget_min:
            plan.drop(
                "reasoning_effort",
                f"Thinking needs at least {profile.thinking_budget_min + 1:,} max tokens.",
            )
            effort = None
        else:
            thinking = {"type": "enabled", "budget_tokens": budget}
    body["max_tokens"] = max_tokens
    body.update(_numbers(options, profile, effort is not None, plan))
    stop = _stop(options, profile, plan)
    if stop:
        body["stop_sequences" if dialect.stop_sequences else "stop"] = stop
    if thinking is not None:
        body["thinking"] = thinking
    elif effort is not None:
        body["reasoning_effort"] = effort
    return Payload(body=body, not_sent=tuple(plan.not_sent))


@dataclass(frozen=True, slots=True)
class TurnRequest:
    """Everything one turn's request is built from, so the client can rebuild it in another
    dialect when the gateway refuses one aspect of the shape."""

    profile: ModelProfile
    options: TurnOptions
    messages: Sequence[Mapping[str, Any] | Message]
    system_prompt: str = ""
    # The dialect to start from when the client's memory knows none for this model.
    dialect: Dialect | None = None
    # The memory was read when the turn was gathered, beside its other rows, and `dialect` is
    # its answer (or the profile's when it had none): the client does not ask it again.
    dialect_read: bool = False

    def build(self, dialect: Dialect, *, stream: bool) -> Payload:
        return build_payload(
            profile=self.profile,
            options=self.options,
            messages=self.messages,
            system_prompt=self.system_prompt,
            dialect=dialect,
            stream=stream,
        )

    @property
    def starting_dialect(self) -> Dialect:
        return self.dialect if self.dialect is not None else Dialect.of(self.profile.dialect)
