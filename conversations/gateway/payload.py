"""The JSON body of ``POST /chat/completions``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from conversations.gateway.content import RequestStyle

REASONING_EFFORTS: Final = ("low", "medium", "high")
THINKING_BUDGETS: Final[Mapping[str, int]] = {"low": 1024, "medium": 4096, "high": 16384}
# Claude Sonnet 4.5's output ceiling; raising max_tokens for a thinking budget must not pass it.
MAX_OUTPUT_TOKENS: Final = 64000
# Room left for the visible answer when max_tokens has to be raised above the thinking budget.
_ANSWER_HEADROOM: Final = 1024


@dataclass(frozen=True, slots=True)
class TurnOptions:
    model: str
    max_tokens: int
    # Claude refuses temperature and top_p together; the caller validates, build_payload enforces.
    temperature: float | None = None
    top_p: float | None = None
    reasoning_effort: str | None = None
    stop: tuple[str, ...] = ()


def build_payload(
    *,
    options: TurnOptions,
    messages: Sequence[Mapping[str, str]],
    system_prompt: str = "",
    style: RequestStyle = RequestStyle.OPENAI,
    stream: bool = True,
) -> dict[str, Any]:
    """Build the JSON body for ``POST /chat/completions``.

    Only parameters that are set are sent, so the gateway's own defaults apply otherwise.
    With reasoning on, ``temperature`` is dropped in both styles because Claude only accepts 1
    while thinking, and sending anything else turns the whole turn into a 400.
    """
    if options.temperature is not None and options.top_p is not None:
        raise ValueError("temperature and top_p cannot both be set for this model; use only one")
    effort = options.reasoning_effort
    if effort is not None and effort not in REASONING_EFFORTS:
        raise ValueError(f"reasoning_effort must be one of {REASONING_EFFORTS} or None")

    chat: list[dict[str, str]] = []
    has_system = bool(system_prompt.strip())
    if has_system and style is RequestStyle.OPENAI:
        chat.append({"role": "system", "content": system_prompt})
    chat.extend({"role": m["role"], "content": m["content"]} for m in messages)

    payload: dict[str, Any] = {"model": options.model, "messages": chat}
    if has_system and style is RequestStyle.ANTHROPIC:
        payload["system"] = system_prompt
    payload["stream"] = stream
    if stream:
        payload["stream_options"] = {"include_usage": True}

    max_tokens = options.max_tokens
    thinking: dict[str, Any] | None = None
    if effort is not None and style is RequestStyle.ANTHROPIC:
        budget = THINKING_BUDGETS[effort]
        thinking = {"type": "enabled", "budget_tokens": budget}
        # Anthropic requires max_tokens > budget_tokens.
        if max_tokens <= budget:
            max_tokens = min(budget + _ANSWER_HEADROOM, MAX_OUTPUT_TOKENS)
    payload["max_tokens"] = max_tokens

    if options.temperature is not None and effort is None:
        payload["temperature"] = options.temperature
    if options.top_p is not None:
        payload["top_p"] = options.top_p
    if options.stop:
        payload["stop"] = list(options.stop)
    if thinking is not None:
        payload["thinking"] = thinking
    elif effort is not None:
        payload["reasoning_effort"] = effort
    return payload
