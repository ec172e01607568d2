"""The request dialect as independent aspects, so one can be switched without the others.

OpenAI-style and Anthropic-style requests differ in four independent ways: where the system
prompt goes, how reasoning is switched on, what the stop field is called, and how content parts
are spelled. A gateway may take one aspect of each (e.g. OpenAI messages but a top-level
``system``), so each aspect is a separate switch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Protocol

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


class DialectMemory(Protocol):
    """Where the working dialect per model is kept (the app stores it across processes)."""

    def get(self, model_id: str) -> Dialect | None: ...

    def remember(self, model_id: str, dialect: Dialect) -> None: ...


class InMemoryDialects:
    """The default memory: per client object, forgotten on restart."""

    def __init__(self) -> None:
        self._known: dict[str, Dialect] = {}

    def get(self, model_id: str) -> Dialect | None:
        return self._known.get(model_id)

    def remember(self, model_id: str, dialect: Dialect) -> None:
        self._known[model_id] = dialect
