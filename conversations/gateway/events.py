"""The typed events a reply stream yields to the app."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final

from conversations.gateway.dialect import Aspect, Dialect


@dataclass(frozen=True, slots=True)
class ContentDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    text: str


@dataclass(frozen=True, slots=True)
class Refusal:
    text: str


@dataclass(frozen=True, slots=True)
class Citation:
    url: str
    title: str
    start_index: int | None
    end_index: int | None


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts and cost; None means unknown (absent, or a value that made no sense)."""

    prompt_tokens: int | None
    completion_tokens: int | None
    reasoning_tokens: int | None
    cached_tokens: int | None
    cost_usd: Decimal | None


@dataclass(frozen=True, slots=True)
class Finished:
    """End of a successful stream.

    ``reason`` is normalised to OpenAI's vocabulary (``stop``, ``length``, ``content_filter``,
    ``tool_calls``; unknown values pass through). It is ``"unknown"`` when the stream ended
    cleanly without ever stating a finish reason.
    """

    reason: str


@dataclass(frozen=True, slots=True)
class Retrying:
    """Emitted before waiting ``delay`` seconds to try again.

    ``attempt`` is the 1-based number of the try that just failed (the next one is
    ``attempt + 1``); ``reason`` is a short phrase such as ``"overloaded (529)"``.
    """

    attempt: int
    delay: float
    reason: str


@dataclass(frozen=True, slots=True)
class ParameterNotSent:
    """A parameter the user set that the request does not carry, and why, in words."""

    parameter: str
    reason: str
    # The control's name in words ("Top P"), from the parameter's declaration in the profiles.
    label: str = field(default="", compare=False)

    @property
    def sentence(self) -> str:
        """The notice in words for the user, e.g. "Temperature was not sent: …"."""
        return f"{self.label or self.parameter} was not sent as set: {self.reason}"


@dataclass(frozen=True, slots=True)
class DialectSwitched:
    """The gateway refused one aspect of the request's shape; the turn was sent again with
    ``dialect``, which the client also gave to its ``DialectMemory`` for ``model``."""

    model: str
    aspect: Aspect
    dialect: Dialect

    @property
    def sentence(self) -> str:
        """The switch in words for the user and the operator."""
        return (
            f"The gateway did not take {_ASPECT_NAMES[self.aspect]} in the form sent; the request "
            f"was sent again with {self.dialect.describe(self.aspect)}."
        )


@dataclass(frozen=True, slots=True)
class DialectUsed:
    """The gateway accepted the turn in ``dialect`` (the one remembered for ``model``, its
    profile's, or one switched to); comes before the turn's first delta."""

    model: str
    dialect: Dialect


_ASPECT_NAMES: Final[Mapping[Aspect, str]] = {
    Aspect.SYSTEM: "the system prompt",
    Aspect.REASONING: "the thinking switch",
    Aspect.STOP: "the stop sequences",
    Aspect.CONTENT: "the images and files",
}


Event = (
    ContentDelta
    | ReasoningDelta
    | Refusal
    | Citation
    | Usage
    | Finished
    | Retrying
    | ParameterNotSent
    | DialectSwitched
    | DialectUsed
)
