"""What each model takes: the one source of truth for request parameters.

A profile says which sampling parameters a model accepts and in what ranges, how it reasons,
which request dialect it is reached with, what it can read (images, PDFs), what it costs and
when it retires. Forms, templates, the page's controls and the request builder all read limits
from here, never from copied constants.

Built-in profiles cover the models the gateway documents; an operator can override or add
profiles (see the README), and the models and deprecations endpoints refresh lifecycle facts.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Final

from conversations.gateway.content import RequestStyle


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

    @property
    def ids(self) -> tuple[str, ...]:
        return (self.id, *self.aliases)


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
