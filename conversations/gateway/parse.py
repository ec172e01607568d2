"""Reply chunks (already-decoded JSON) to typed events, for every stream shape we know.

The gateway's stream has quirks this absorbs (see the gateway notes): only the first chunk has
an ``id``; every delta repeats ``role`` and ``refusal: null``; usage may sit in the finish chunk
or in a separate empty-``choices`` chunk; a trailing ``delta``-less chunk repeats
``finish_reason``; ``data: [DONE]`` may be missing; reasoning may be ``reasoning_content`` or
``reasoning``; failures may arrive as an ``error`` object inside an HTTP 200 stream; before
2026-02-13 every chunk came wrapped as ``{"event": <chunk>, "state": {"usage": {...}}}`` with the
real token counts in ``state.usage`` under Anthropic's names.

Every value leaves here bounded (see ``values``): a reply that carried data but nothing this
parser recognises raises ``UnreadableStream`` instead of passing for an empty answer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

from conversations.gateway.classify import as_int, in_band_error, protocol_error, scrub
from conversations.gateway.errors import UnreadableStream
from conversations.gateway.events import (
    Citation,
    ContentDelta,
    Event,
    Finished,
    ReasoningDelta,
    Refusal,
    Usage,
)
from conversations.gateway.values import TextJoiner, bounded, cost_usd, storable_text, token_count

logger = logging.getLogger(__name__)

FINISH_MAP: Final[Mapping[str, str]] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}
# How much of an unreadable reply's first event is kept for staff.
RAW_EVENT_CHARS: Final = 2000
UNREADABLE_MESSAGE: Final = "The gateway's reply could not be read."
_URL_CHARS: Final = 2048
_TITLE_CHARS: Final = 500


class _Counts:
    """Token counts from one source; a count that made no sense is remembered as rejected."""

    __slots__ = ("cached", "completion", "prompt", "reasoning")

    def __init__(self) -> None:
        self.prompt: int | None = None
        self.completion: int | None = None
        self.reasoning: int | None = None
        self.cached: int | None = None


class UsageAccumulator:
    """Merges usage that may arrive in pieces (finish chunk, usage chunk, meta, wrapper state)."""

    __slots__ = ("_rejected", "cost", "own", "state")

    def __init__(self) -> None:
        self.own = _Counts()
        self.state = _Counts()
        self.cost: Decimal | None = None
        self._rejected: list[str] = []

    def _count(self, name: str, value: object) -> int | None:
        if value is None:
            return None
        count = token_count(value)
        if count is None:
            self._rejected.append(f"{name}={str(value)[:40]}")
        return count

    def merge_usage(self, usage: Mapping[str, Any]) -> None:
        own = self.own
        value = self._count("prompt_tokens", usage.get("prompt_tokens"))
        if value is not None:
            own.prompt = value
        value = self._count("completion_tokens", usage.get("completion_tokens"))
        if value is not None:
            own.completion = value
        details = usage.get("completion_tokens_details")
        if isinstance(details, Mapping):
            value = self._count("reasoning_tokens", details.get("reasoning_tokens"))
            if value is not None:
                own.reasoning = value
        details = usage.get("prompt_tokens_details")
        if isinstance(details, Mapping):
            value = self._count("cached_tokens", details.get("cached_tokens"))
            if value is not None:
                own.cached = value
        meta = usage.get("meta")
        if isinstance(meta, Mapping):
            self.merge_meta(meta)

    def merge_state_usage(self, usage: Mapping[str, Any]) -> None:
        """Anthropic's names, as the wrapped stream's ``state.usage`` carries them."""
        state = self.state
        input_tokens = self._count("input_tokens", usage.get("input_tokens"))
        cache_read = self._count("cache_read_input_tokens", usage.get("cache_read_input_tokens"))
        cache_write = self._count(
            "cache_creation_input_tokens", usage.get("cache_creation_input_tokens")
        )
        if input_tokens is not None:
            # OpenAI's prompt_tokens include the cached ones; Anthropic's input_tokens do not.
            state.prompt = token_count(input_tokens + (cache_read or 0) + (cache_write or 0))
        if cache_read is not None:
            state.cached = cache_read
        value = self._count("output_tokens", usage.get("output_tokens"))
        if value is not None:
            state.completion = value

    def merge_meta(self, meta: Mapping[str, Any]) -> None:
        inner = meta.get("usage")
        source = inner if isinstance(inner, Mapping) else meta
        raw = source.get("usd_spent")
        if raw is None:
            return
        cost = cost_usd(raw)
        if cost is None:
            self._rejected.append(f"usd_spent={str(raw)[:40]}")
        else:
            self.cost = cost

    def rejected(self) -> list[str]:
        return self._rejected

    def event(self) -> Usage | None:
        own, state = self.own, self.state

        def pick(mine: int | None, wrapped: int | None) -> int | None:
            # The wrapped stream's own usage is null or all zeros; the state has the counts.
            return mine if mine or wrapped is None else wrapped

        usage = Usage(
            pick(own.prompt, state.prompt),
            pick(own.completion, state.completion),
            own.reasoning,
            pick(own.cached, state.cached),
            self.cost,
        )
        if usage == Usage(None, None, None, None, None):
            return None
        return usage


def _citations(annotations: object) -> list[Citation]:
    found: list[Citation] = []
    if not isinstance(annotations, list):
        return found
    for item in annotations:
        if not isinstance(item, Mapping) or item.get("type") != "url_citation":
            continue
        # OpenAI nests the fields under "url_citation"; some gateways flatten them.
        body = item.get("url_citation")
        if not isinstance(body, Mapping):
            body = item
        url = body.get("url")
        if not isinstance(url, str) or not url:
            continue
        title = body.get("title")
        found.append(
            Citation(
                url=bounded(storable_text(url), _URL_CHARS),
                title=bounded(storable_text(title), _TITLE_CHARS) if isinstance(title, str) else "",
                start_index=token_count(body.get("start_index")),
                end_index=token_count(body.get("end_index")),
            )
        )
    return found


def message_text(content: object) -> str:
    if isinstance(content, str):
        return storable_text(content)
    if isinstance(content, list):
        # Anthropic-style content blocks.
        return storable_text(
            "".join(
                block["text"]
                for block in content
                if isinstance(block, Mapping) and isinstance(block.get("text"), str)
            )
        )
    return ""


def _finish_error(choice: Mapping[str, Any]) -> Mapping[str, Any]:
    err = choice.get("error")
    if err is not None:
        return {"error": err}
    return {"message": "the reply stopped with finish_reason 'error'"}


def looks_like_error(body: Mapping[str, Any]) -> bool:
    if body.get("error") is not None:
        return True
    status = as_int(body.get("statusCode"))
    return status is not None and status >= 400 and "choices" not in body


class StreamParser:
    """One reply's stream: ``feed`` each SSE data payload, then ``end``.

    ``feed`` returns the deltas the payload carried (possibly none); ``end`` returns at most one
    ``Usage`` and exactly one ``Finished``. Both are held back to the end because the OpenAI
    shape sends usage after the finish chunk, so this gives one order for every gateway.
    """

    def __init__(self, *, secret: str) -> None:
        self._secret = secret
        self.usage = UsageAccumulator()
        self.finish: str | None = None
        self.done = False
        self._first_event: str | None = None
        self._recognised = False
        self._unrecognised = 0
        self._seen_citations: set[Citation] = set()
        self._content = TextJoiner()
        self._reasoning = TextJoiner()
        self._refusal = TextJoiner()

    def feed(self, data: str) -> list[Event]:
        if not data:
            return []
        if data[0] == "[" and data.strip() == "[DONE]":
            self.done = True
            return []
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            raise protocol_error("a malformed line in the reply stream") from exc
        if self._first_event is None:
            self._first_event = bounded(storable_text(scrub(data, self._secret)), RAW_EVENT_CHARS)
        if type(chunk) is not dict:
            self._unrecognised += 1
            return []
        if "choices" not in chunk and isinstance(chunk.get("event"), dict):
            state = chunk.get("state")
            if isinstance(state, dict) and isinstance(state.get("usage"), dict):
                self.usage.merge_state_usage(state["usage"])
            chunk = chunk["event"]
        return self._chunk(chunk)

    def _chunk(self, chunk: dict[str, Any]) -> list[Event]:
        err = chunk.get("error")
        if err is not None:
            raise in_band_error({"error": err}, self._secret)
        events: list[Event] = []
        known = False
        choices = chunk.get("choices")
        if isinstance(choices, list):
            known = True
            if choices and isinstance(choices[0], dict):
                self._choice(choices[0], events)
        chunk_usage = chunk.get("usage")
        if isinstance(chunk_usage, dict):
            known = True
            self.usage.merge_usage(chunk_usage)
        meta = chunk.get("meta")
        if isinstance(meta, dict):
            known = True
            self.usage.merge_meta(meta)
        if not known:
            self._unrecognised += 1
        return events

    def _choice(self, choice: dict[str, Any], events: list[Event]) -> None:
        delta = choice.get("delta") or choice.get("message")
        if isinstance(delta, dict):
            text = delta.get("reasoning_content") or delta.get("reasoning")
            if text and type(text) is str:
                self._recognised = True
                if text := self._reasoning.feed(text):
                    events.append(ReasoningDelta(text))
            text = delta.get("content")
            if isinstance(text, list):
                # Anthropic-style blocks inside a delta.
                text = message_text(text)
            if text and type(text) is str:
                self._recognised = True
                if text := self._content.feed(text):
                    events.append(ContentDelta(text))
            text = delta.get("refusal")
            if text and type(text) is str:
                self._recognised = True
                if text := self._refusal.feed(text):
                    events.append(Refusal(text))
            if delta.get("tool_calls"):
                self._recognised = True
            annotations = delta.get("annotations")
            if annotations:
                for citation in _citations(annotations):
                    if citation not in self._seen_citations:
                        self._recognised = True
                        self._seen_citations.add(citation)
                        events.append(citation)
        reason = choice.get("finish_reason")
        if reason and self.finish is None:
            if reason == "error":
                raise in_band_error(_finish_error(choice), self._secret)
            if isinstance(reason, str):
                self.finish = FINISH_MAP.get(reason, bounded(storable_text(reason), 40))

    def end(self) -> list[Event]:
        events: list[Event] = []
        for joiner, kind in (
            (self._reasoning, ReasoningDelta),
            (self._content, ContentDelta),
            (self._refusal, Refusal),
        ):
            if tail := joiner.flush():
                events.append(kind(tail))
        self.log_oddities()
        if self._first_event is None:
            raise protocol_error("an empty reply")
        if not self._recognised:
            raise UnreadableStream(UNREADABLE_MESSAGE, raw_event=self._first_event)
        usage = self.usage.event()
        if usage is not None:
            events.append(usage)
        events.append(Finished(self.finish or "unknown"))
        return events

    def log_oddities(self) -> None:
        """Once per reply: events not understood and numbers that made no sense."""
        if self._unrecognised:
            logger.warning(
                "the gateway's reply had %d unrecognised event(s); the first event was: %s",
                self._unrecognised,
                self._first_event,
            )
            self._unrecognised = 0
        rejected = self.usage.rejected()
        if rejected:
            logger.warning(
                "the gateway's reply had usage values out of range, kept as unknown: %s",
                ", ".join(rejected[:10]),
            )
            rejected.clear()


def completion_events(body: object, *, secret: str) -> list[Event]:
    """Events for a non-streamed ``chat.completion`` reply."""
    message, reason, usage = completion_parts(body, secret=secret)
    events: list[Event] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        events.append(ReasoningDelta(storable_text(reasoning)))
    content = message_text(message.get("content"))
    if content:
        events.append(ContentDelta(content))
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        events.append(Refusal(storable_text(refusal)))
    events.extend(_citations(message.get("annotations")))
    usage_event = usage.event()
    if usage_event is not None:
        events.append(usage_event)
    events.append(Finished(reason))
    return events


def completion_parts(
    body: object, *, secret: str
) -> tuple[Mapping[str, Any], str, UsageAccumulator]:
    if not isinstance(body, dict):
        raise protocol_error("a reply in an unexpected format")
    if looks_like_error(body):
        raise in_band_error(body, secret)
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise protocol_error("a reply without any choices")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        message = {}
    raw_reason = choice.get("finish_reason")
    if raw_reason == "error":
        raise in_band_error(_finish_error(choice), secret)
    reason = FINISH_MAP.get(raw_reason, raw_reason) if isinstance(raw_reason, str) else None
    usage = UsageAccumulator()
    if isinstance(body.get("usage"), dict):
        usage.merge_usage(body["usage"])
    if isinstance(body.get("meta"), dict):
        usage.merge_meta(body["meta"])
    return message, bounded(storable_text(reason or "unknown"), 40), usage
