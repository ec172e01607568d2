"""The request dialect as independent aspects, so one can be switched without the others.

OpenAI-style and Anthropic-style requests differ in four independent ways: where the system
prompt goes, how reasoning is switched on, what the stop field is called, and how content parts
are spelled. A gateway may take one aspect of each (e.g. OpenAI messages but a top-level
``system``), so each aspect is a separate switch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Protocol

from conversations.gateway.content import RequestStyle


class Aspect(StrEnum):
    SYSTEM = "system"
    REASONING = "reasoning"
    STOP = "stop"
    CONTENT = "content"


@dataclass(frozen=True, slots=True)
class Dialect:
    # True: a top-level "system" string; False: a first message with role "system".
    system_top_level: bool = False
    # True: `thinking: {type: enabled, budget_tokens}`; False: `reasoning_effort`.
    thinking_budget: bool = False
    # True: `stop_sequences`; False: `stop`.
    stop_sequences: bool = False
    # Content parts in Anthropic's spelling (`image`/`document`) or OpenAI's (`image_url`/`file`).
    content_style: RequestStyle = RequestStyle.OPENAI

    @classmethod
    def of(cls, style: RequestStyle) -> Dialect:
        if style is RequestStyle.ANTHROPIC:
            return cls(True, True, True, RequestStyle.ANTHROPIC)
        return cls()

    def switched(self, aspect: Aspect) -> Dialect:
        if aspect is Aspect.SYSTEM:
            return replace(self, system_top_level=not self.system_top_level)
        if aspect is Aspect.REASONING:
            return replace(self, thinking_budget=not self.thinking_budget)
        if aspect is Aspect.STOP:
            return replace(self, stop_sequences=not self.stop_sequences)
        other = (
            RequestStyle.OPENAI
            if self.content_style is RequestStyle.ANTHROPIC
            else RequestStyle.ANTHROPIC
        )
        return replace(self, content_style=other)

    def as_json(self) -> dict[str, Any]:
        return {
            "system_top_level": self.system_top_level,
            "thinking_budget": self.thinking_budget,
            "stop_sequences": self.stop_sequences,
            "content_style": self.content_style.value,
        }

    @classmethod
    def from_json(cls, stored: object) -> Dialect | None:
        """The dialect a stored value describes, or None when it is not one (a row written by
        another version, or edited by hand): the caller then starts from its own default."""
        if not isinstance(stored, Mapping):
            return None
        flags = [
            stored.get(name) for name in ("system_top_level", "thinking_budget", "stop_sequences")
        ]
        if not all(isinstance(flag, bool) for flag in flags):
            return None
        try:
            style = RequestStyle(str(stored.get("content_style")))
        except ValueError:
            return None
        system, thinking, stop = flags
        return cls(bool(system), bool(thinking), bool(stop), style)

    def describe(self, aspect: Aspect) -> str:
        """How this dialect spells ``aspect``, in words for the user and the operator."""
        if aspect is Aspect.SYSTEM:
            return (
                "the system prompt as a top-level field"
                if self.system_top_level
                else "the system prompt as the first message"
            )
        if aspect is Aspect.REASONING:
            return "thinking as a token budget" if self.thinking_budget else "thinking as an effort"
        if aspect is Aspect.STOP:
            return (
                "stop sequences as `stop_sequences`"
                if self.stop_sequences
                else ("stop sequences as `stop`")
            )
        if self.content_style is RequestStyle.ANTHROPIC:
            return "images and files in Anthropic's spelling"
        return "images and files in OpenAI's spelling"

    def summary(self) -> str:
        return "; ".join(self.describe(aspect) for aspect in Aspect)


class DialectMemory(Protocol):
    """Where the working dialect per model is kept. Async, so the app can keep it in its
    database (shared by every server process) without blocking the event loop."""

    async def get(self, model_id: str) -> Dialect | None: ...

    async def remember(self, model_id: str, dialect: Dialect) -> None: ...


class InMemoryDialects:
    """The default memory: per client object, forgotten on restart."""

    def __init__(self) -> None:
        self._known: dict[str, Dialect] = {}

    async def get(self, model_id: str) -> Dialect | None:
        return self._known.get(model_id)

    async def remember(self, model_id: str, dialect: Dialect) -> None:
        self._known[model_id] = dialect
