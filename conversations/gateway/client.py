"""Streaming client for the AIML API's OpenAI-compatible ``/chat/completions`` endpoint.

Framework-free on purpose (stdlib, httpx and httpx_sse only) so it can be tested against a
loopback server and reused outside Django.

The gateway's stream has quirks that this module absorbs (see the gateway notes): only the
first chunk has an ``id``; every delta repeats ``role`` and ``refusal: null``; usage may sit in
the finish chunk or in a separate empty-``choices`` chunk; a trailing ``delta``-less chunk repeats
``finish_reason``; ``data: [DONE]`` may be missing; reasoning may be ``reasoning_content`` or
``reasoning``; failures may arrive as an ``error`` object inside an HTTP 200 stream.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import random
import re
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Final

import httpx
from httpx_sse import EventSource, SSEError

from conversations.gateway.content import RequestStyle, message_to_wire

logger = logging.getLogger(__name__)

__all__ = [
    "Citation",
    "ContentDelta",
    "ErrorKind",
    "Event",
    "Finished",
    "ReasoningDelta",
    "Refusal",
    "RequestStyle",
    "Retrying",
    "TurnOptions",
    "UpstreamClient",
    "UpstreamError",
    "Usage",
    "build_payload",
]


class ErrorKind(StrEnum):
    AUTH = "auth"
    CREDITS = "credits"
    VALIDATION = "validation"
    RATE_LIMITED = "rate_limited"
    SERVER = "server"
    MODEL_UNAVAILABLE = "model_unavailable"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    STREAM = "stream"
    PROTOCOL = "protocol"


# ---------------------------------------------------------------------------------------------
# Request payload
# ---------------------------------------------------------------------------------------------

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
    messages: Sequence[Mapping[str, Any]],
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

    chat: list[dict[str, Any]] = []
    has_system = bool(system_prompt.strip())
    if has_system and style is RequestStyle.OPENAI:
        chat.append({"role": "system", "content": system_prompt})
    chat.extend(message_to_wire(m, style) for m in messages)

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


# ---------------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------------


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


Event = ContentDelta | ReasoningDelta | Refusal | Citation | Usage | Finished | Retrying


class UpstreamError(Exception):
    """A failure talking to the model, with a message fit to show the user.

    ``retryable`` says whether the same request may succeed later (the UI may offer "try
    again"); the client itself retries automatically only before anything reached the user.
    """

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return (
            f"UpstreamError(kind={self.kind.value!r}, status={self.status!r}, "
            f"retryable={self.retryable!r}, message={self.message!r})"
        )


# ---------------------------------------------------------------------------------------------
# Error classification (cold path: regexes and allocations are fine here)
# ---------------------------------------------------------------------------------------------

RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504, 529})
# Kinds worth an automatic retry before the first token; timeouts are excluded because
# another full timeout before anything appears is worse than letting the user decide.
_AUTO_RETRY_KINDS: Final = frozenset(
    {ErrorKind.RATE_LIMITED, ErrorKind.SERVER, ErrorKind.CONNECTION, ErrorKind.STREAM}
)
_RETRYABLE_ERROR_TYPES: Final = frozenset(
    {"overloaded_error", "rate_limit_error", "api_error", "server_error", "timeout_error"}
)
# A Retry-After longer than this (e.g. the free tier's hourly limit) is reported, not waited.
MAX_HONOURED_RETRY_AFTER: Final = 60.0
_MAX_MESSAGE_CHARS: Final = 600
_MAX_ERROR_BODY_BYTES: Final = 64 * 1024
_MAX_JSON_BODY_BYTES: Final = 8 * 1024 * 1024
_MODEL_GONE_HINTS: Final = (
    "not found",
    "retired",
    "deprecated",
    "does not exist",
    "no longer available",
    "no longer supported",
    "unknown model",
    "invalid model",
    "model_not_found",
)
_FINISH_MAP: Final[Mapping[str, str]] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}
_REQUEST_ID_RE: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_BEARER_RE: Final = re.compile(r"(?i)(bearer\s+)[^\s\"',;]+")


def _scrub(text: str, secret: str) -> str:
    if secret and secret in text:
        text = text.replace(secret, "***")
    # Gateways sometimes echo the Authorization header; hide any bearer token, not just ours.
    return _BEARER_RE.sub(r"\1***", text)


def _clip(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > _MAX_MESSAGE_CHARS:
        text = text[: _MAX_MESSAGE_CHARS - 1] + "…"
    return text


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        # NestJS-style validation errors give a list of messages.
        return "; ".join(_as_text(v) for v in value if v is not None)
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError):
        return str(value)


def _error_parts(body: Any) -> tuple[str, Any, Any]:
    """Return (message, code, type) from any of the three documented error body shapes."""
    if not isinstance(body, dict):
        return _as_text(body), None, None
    err = body.get("error")
    if isinstance(err, dict):
        # OpenAI {error: {message, type, code}} and Anthropic {type: "error", error: {...}}.
        message = _as_text(err.get("message")) or _as_text(err.get("type"))
        details = err.get("details") or err.get("metadata")
        code = err.get("code", err.get("status"))
        etype = err.get("type")
    elif isinstance(err, str) and "message" not in body:
        message, details, code, etype = err, None, body.get("code"), None
    else:
        # AIML: {message, statusCode, path, requestId, timestamp}, maybe with details.
        message = _as_text(body.get("message")) or _as_text(err)
        details = body.get("details") or body.get("errors")
        code = body.get("statusCode", body.get("code"))
        etype = body.get("type") if body.get("type") != "error" else None
    if details:
        detail_text = _as_text(details)
        if detail_text and detail_text not in message:
            message = f"{message}: {detail_text}" if message else detail_text
    return message, code, etype


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _parse_retry_after(headers: httpx.Headers) -> float | None:
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            seconds = float(raw_ms) / 1000.0
        except ValueError:
            seconds = math.nan
        if math.isfinite(seconds):
            return max(0.0, seconds)
    raw = headers.get("retry-after")
    if not raw:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - time.time()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _mentions_missing_model(message: str, code: Any) -> bool:
    if code == "model_not_found":
        return True
    low = message.lower()
    return "model" in low and any(hint in low for hint in _MODEL_GONE_HINTS)


def _decode_body(raw: bytes) -> Any:
    text = raw.decode("utf-8", errors="replace").strip()
    if not text:
        return ""
    try:
        return json.loads(text)
    except ValueError:
        if text.startswith("<"):
            return "the gateway answered with an HTML error page"
        return text


def _status_error(
    status: int, body: Any, headers: httpx.Headers, model: str, secret: str
) -> UpstreamError:
    message, code, _ = _error_parts(body)
    detail = _clip(_scrub(message, secret))
    suffix = f": {detail}" if detail else "."
    retry_after = _parse_retry_after(headers)

    if (400 <= status < 500 and status not in (401, 429)) and (
        status in (404, 410) or _mentions_missing_model(message, code)
    ):
        return UpstreamError(
            ErrorKind.MODEL_UNAVAILABLE,
            f"The model '{_scrub(model, secret)}' is not available "
            f"(it may have been retired){suffix}",
            status=status,
        )
    if status == 401:
        return UpstreamError(
            ErrorKind.AUTH, f"The API key was rejected ({status}){suffix}", status=status
        )
    if status == 403:
        return UpstreamError(
            ErrorKind.CREDITS, f"The account is out of credits ({status}){suffix}", status=status
        )
    if status == 429:
        hint = f" Try again in {math.ceil(retry_after)} s." if retry_after else ""
        return UpstreamError(
            ErrorKind.RATE_LIMITED,
            f"Rate limited ({status}){suffix}{hint}",
            status=status,
            retryable=True,
            retry_after=retry_after,
        )
    if 400 <= status < 500:
        return UpstreamError(
            ErrorKind.VALIDATION,
            f"The model rejected the request ({status}){suffix}",
            status=status,
        )
    if status >= 500:
        lead = {
            500: "The model service had an internal error",
            502: "The model service got a bad response from the model",
            503: "The model service is unavailable",
            504: "The model service timed out while generating the reply",
            529: "The model is overloaded",
        }.get(status, "The model service failed")
        return UpstreamError(
            ErrorKind.SERVER,
            f"{lead} ({status}){suffix}",
            status=status,
            retryable=status in RETRY_STATUSES,
            retry_after=retry_after,
        )
    return UpstreamError(
        ErrorKind.PROTOCOL,
        f"The model service sent an unexpected response ({status}){suffix}",
        status=status,
    )


def _in_band_error(body: Mapping[str, Any], secret: str) -> UpstreamError:
    """An error reported inside an HTTP 200 body (an SSE data line or a JSON reply)."""
    message, code, etype = _error_parts(body)
    status = _as_int(code)
    retryable = (
        status in RETRY_STATUSES
        or etype in _RETRYABLE_ERROR_TYPES
        or "overloaded" in message.lower()
    )
    detail = _clip(_scrub(message, secret)) or "no details were given"
    return UpstreamError(
        ErrorKind.STREAM,
        f"The model reported an error while answering: {detail}",
        status=status if status is not None and 400 <= status < 600 else None,
        retryable=retryable,
    )


def _retry_reason(error: UpstreamError) -> str:
    status = f" ({error.status})" if error.status is not None else ""
    if error.kind is ErrorKind.RATE_LIMITED:
        return f"rate limited{status}"
    if error.status == 529 or "overloaded" in error.message.lower():
        return f"overloaded{status}"
    if error.kind is ErrorKind.SERVER:
        return f"server error{status}"
    if error.kind is ErrorKind.CONNECTION:
        return "connection problem"
    return f"model error{status}"


def _protocol_error(what: str) -> UpstreamError:
    return UpstreamError(ErrorKind.PROTOCOL, f"The model service sent {what}.")


# ---------------------------------------------------------------------------------------------
# Chunk parsing helpers
# ---------------------------------------------------------------------------------------------


class _UsageAccumulator:
    """Merges usage that may arrive in pieces (finish chunk, usage chunk, top-level meta)."""

    __slots__ = ("cached", "completion", "cost", "prompt", "reasoning")

    def __init__(self) -> None:
        self.prompt: int | None = None
        self.completion: int | None = None
        self.reasoning: int | None = None
        self.cached: int | None = None
        self.cost: Decimal | None = None

    def merge_usage(self, usage: Mapping[str, Any]) -> None:
        value = _as_int(usage.get("prompt_tokens"))
        if value is not None:
            self.prompt = value
        value = _as_int(usage.get("completion_tokens"))
        if value is not None:
            self.completion = value
        details = usage.get("completion_tokens_details")
        if isinstance(details, Mapping):
            value = _as_int(details.get("reasoning_tokens"))
            if value is not None:
                self.reasoning = value
        details = usage.get("prompt_tokens_details")
        if isinstance(details, Mapping):
            value = _as_int(details.get("cached_tokens"))
            if value is not None:
                self.cached = value
        meta = usage.get("meta")
        if isinstance(meta, Mapping):
            self.merge_meta(meta)

    def merge_meta(self, meta: Mapping[str, Any]) -> None:
        inner = meta.get("usage")
        source = inner if isinstance(inner, Mapping) else meta
        cost = _as_decimal(source.get("usd_spent"))
        if cost is not None:
            self.cost = cost

    def event(self) -> Usage | None:
        if (
            self.prompt is None
            and self.completion is None
            and self.reasoning is None
            and self.cached is None
            and self.cost is None
        ):
            return None
        return Usage(self.prompt, self.completion, self.reasoning, self.cached, self.cost)


def _as_decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        # str() first so a float like 0.0012 does not become 0.00119999999...
        result = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return result if result.is_finite() else None


def _citations(annotations: Any) -> list[Citation]:
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
                url=url,
                title=title if isinstance(title, str) else "",
                start_index=_as_int(body.get("start_index")),
                end_index=_as_int(body.get("end_index")),
            )
        )
    return found


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        # Anthropic-style content blocks.
        return "".join(
            block.get("text", "")
            for block in content
            if isinstance(block, Mapping) and isinstance(block.get("text"), str)
        )
    return ""


def _looks_like_error(body: Mapping[str, Any]) -> bool:
    if body.get("error") is not None:
        return True
    status = _as_int(body.get("statusCode"))
    return status is not None and status >= 400 and "choices" not in body


# ---------------------------------------------------------------------------------------------
# Client
# ---------------------------------------------------------------------------------------------


class _LenientEventSource(EventSource):
    # Some proxies rewrite or drop the SSE content type; the body is still parseable.
    def _check_content_type(self) -> None:
        return None


class UpstreamClient:
    """One shared connection pool per event loop; safe for hundreds of concurrent streams."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        timeout: float = 60.0,
        connect_timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        max_attempts: int = 3,
        backoff_base: float = 1.0,
        backoff_max: float = 20.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._api_key = api_key
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._transport = transport
        self._max_attempts = max(1, max_attempts)
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._sleep = sleep
        try:
            self._host = httpx.URL(self._url).host or self._url
        except httpx.InvalidURL:
            self._host = "(invalid URL)"
        # httpx pools are bound to the loop that opened their connections; Django may drive
        # this client from several loops (async_to_sync), so keep one pool per loop.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient]
        self._clients = weakref.WeakKeyDictionary()

    # -- plumbing -----------------------------------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None or client.is_closed:
            client = httpx.AsyncClient(
                timeout=httpx.Timeout(self._timeout, connect=self._connect_timeout),
                # As many kept alive as may be open: with hundreds of replies streaming, a
                # smaller keep-alive pool closed most connections after each reply, and every
                # next turn paid a new TCP (and TLS) handshake.
                limits=httpx.Limits(
                    max_connections=1000, max_keepalive_connections=1000, keepalive_expiry=30.0
                ),
                transport=self._transport,
                follow_redirects=False,
            )
            self._clients[loop] = client
        return client

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        client = self._clients.pop(loop, None)
        if client is not None:
            await client.aclose()
        # Pools of other (possibly dead) loops cannot be awaited from here; let them go.
        self._clients.clear()

    def _headers(self, request_id: str | None, *, stream: bool) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self._api_key}",
            "Accept": "text/event-stream" if stream else "application/json",
        }
        if request_id is not None and _REQUEST_ID_RE.fullmatch(request_id):
            headers["X-Client-Request-Id"] = request_id
        elif request_id is not None:
            logger.debug("dropping malformed client request id (%d chars)", len(request_id))
        return headers

    def _transport_error(self, exc: httpx.HTTPError, *, started: bool) -> UpstreamError:
        """Map an httpx failure; ``started`` means response headers had already arrived."""
        reason = _clip(_scrub(str(exc) or type(exc).__name__, self._api_key))
        if isinstance(exc, httpx.ConnectTimeout):
            return UpstreamError(
                ErrorKind.CONNECTION,
                f"Could not connect to the model service at {self._host} within "
                f"{self._connect_timeout:g} s.",
                retryable=True,
            )
        if isinstance(exc, httpx.TimeoutException):
            what = "to send more of its reply" if started else "to respond"
            return UpstreamError(
                ErrorKind.TIMEOUT,
                f"The model took longer than {self._timeout:g} s {what}.",
                retryable=True,
            )
        if isinstance(exc, httpx.ConnectError):
            return UpstreamError(
                ErrorKind.CONNECTION,
                f"Could not connect to the model service at {self._host}: {reason}",
                retryable=True,
            )
        if isinstance(exc, httpx.DecodingError):
            return _protocol_error("a reply that could not be decoded")
        if isinstance(exc, httpx.UnsupportedProtocol):
            return UpstreamError(
                ErrorKind.CONNECTION,
                f"The model service URL is not usable: {reason}",
            )
        if started:
            return UpstreamError(
                ErrorKind.CONNECTION,
                "The connection to the model was lost before the reply finished.",
                retryable=True,
            )
        return UpstreamError(
            ErrorKind.CONNECTION,
            f"The connection to the model service at {self._host} failed: {reason}",
            retryable=True,
        )

    async def _open(
        self, payload: Mapping[str, Any], headers: Mapping[str, str], model: str
    ) -> httpx.Response:
        """Send the request and return a 2xx response with its body still unread."""
        client = self._client()
        try:
            request = client.build_request("POST", self._url, json=payload, headers=headers)
            response = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, started=False) from exc
        except httpx.InvalidURL as exc:
            raise UpstreamError(
                ErrorKind.CONNECTION, "The model service URL is not valid."
            ) from exc
        if 200 <= response.status_code < 300:
            return response
        try:
            raw = await _read_limited(response, _MAX_ERROR_BODY_BYTES)
        except httpx.HTTPError:
            raw = b""
        finally:
            await response.aclose()
        raise _status_error(
            response.status_code, _decode_body(raw), response.headers, model, self._api_key
        )

    def _retry_delay(self, attempt: int, error: UpstreamError) -> float | None:
        """Delay before the next try, or None when the error must go to the caller."""
        if attempt >= self._max_attempts:
            return None
        if not error.retryable or error.kind not in _AUTO_RETRY_KINDS:
            return None
        if error.retry_after is not None:
            if error.retry_after > MAX_HONOURED_RETRY_AFTER:
                return None
            return error.retry_after
        # Full jitter spreads out hundreds of streams that failed at the same moment.
        ceiling = min(self._backoff_max, self._backoff_base * (2 ** (attempt - 1)))
        return random.uniform(0.0, ceiling)

    def _give_up(self, error: UpstreamError, attempt: int) -> UpstreamError:
        if attempt <= 1:
            return error
        return UpstreamError(
            error.kind,
            f"{error.message} (gave up after {attempt} attempts)",
            status=error.status,
            retryable=error.retryable,
            retry_after=error.retry_after,
        )

    # -- public API ---------------------------------------------------------------------------

    async def stream_chat(
        self, payload: Mapping[str, Any], *, request_id: str | None = None
    ) -> AsyncIterator[Event]:
        """Stream one chat turn as typed events.

        Ordering: deltas (``ReasoningDelta``, ``ContentDelta``, ``Refusal``, ``Citation``) as
        they arrive; then, once the body ends (``[DONE]`` or a clean end of body), at most one
        ``Usage`` followed by exactly one ``Finished``. Both are held back to the end because
        the OpenAI shape sends usage after the finish chunk, so this gives one order for every
        gateway. A connection lost or stalled after the finish reason arrived still ends
        normally, since the reply itself is complete.

        Errors raise ``UpstreamError``. Retryable failures are retried (with a ``Retrying``
        event before each wait) only while nothing has been yielded to the caller yet.
        Close the iterator (``contextlib.aclosing``) when abandoning it early so the
        connection is released at once.
        """
        headers = self._headers(request_id, stream=True)
        model = str(payload.get("model", ""))
        attempt = 1
        while True:
            produced = False
            try:
                response = await self._open(payload, headers, model)
                try:
                    async with aclosing(self._events(response)) as events:
                        async for event in events:
                            produced = True
                            yield event
                finally:
                    await response.aclose()
                return
            except UpstreamError as exc:
                error = exc
            delay = None if produced else self._retry_delay(attempt, error)
            if delay is None:
                raise self._give_up(error, attempt)
            logger.warning(
                "upstream try %d/%d failed (%s, status=%s, request_id=%s); retrying in %.2f s",
                attempt,
                self._max_attempts,
                error.kind.value,
                error.status,
                headers.get("X-Client-Request-Id", "-"),
                delay,
            )
            yield Retrying(attempt=attempt, delay=delay, reason=_retry_reason(error))
            attempt += 1
            await self._sleep(delay)

    async def _events(self, response: httpx.Response) -> AsyncIterator[Event]:
        content_type = response.headers.get("content-type", "").lower()
        if "json" in content_type:
            body = await self._read_json(response)
            for event in self._completion_events(body):
                yield event
            return
        if "html" in content_type:
            raise _protocol_error("an HTML page instead of a reply stream")

        secret = self._api_key
        usage = _UsageAccumulator()
        finish: str | None = None
        seen_citations: set[Citation] | None = None
        saw_data = False
        loads = json.loads
        try:
            async for sse in _LenientEventSource(response).aiter_sse():
                data = sse.data
                if not data:
                    continue
                if data[0] == "[" and data.strip() == "[DONE]":
                    break
                try:
                    chunk = loads(data)
                except ValueError as exc:
                    raise _protocol_error("a malformed line in the reply stream") from exc
                if type(chunk) is not dict:
                    raise _protocol_error("a malformed line in the reply stream")
                saw_data = True

                err = chunk.get("error")
                if err is not None:
                    raise _in_band_error({"error": err}, secret)
                choices = chunk.get("choices")
                if choices:
                    choice = choices[0]
                    delta = choice.get("delta") or choice.get("message")
                    if delta:
                        text = delta.get("reasoning_content") or delta.get("reasoning")
                        if text and type(text) is str:
                            yield ReasoningDelta(text)
                        text = delta.get("content")
                        if text and type(text) is str:
                            yield ContentDelta(text)
                        text = delta.get("refusal")
                        if text and type(text) is str:
                            yield Refusal(text)
                        annotations = delta.get("annotations")
                        if annotations:
                            if seen_citations is None:
                                seen_citations = set()
                            for citation in _citations(annotations):
                                if citation not in seen_citations:
                                    seen_citations.add(citation)
                                    yield citation
                    reason = choice.get("finish_reason")
                    if reason and finish is None:
                        if reason == "error":
                            raise _in_band_error(_finish_error(choice), secret)
                        finish = _FINISH_MAP.get(reason, reason)
                chunk_usage = chunk.get("usage")
                if chunk_usage:
                    usage.merge_usage(chunk_usage)
                meta = chunk.get("meta")
                if meta and type(meta) is dict:
                    usage.merge_meta(meta)
        except httpx.HTTPError as exc:
            if finish is None:
                raise self._transport_error(exc, started=True) from exc
            logger.info("upstream stream ended abnormally after its finish reason; ignoring")
        except SSEError as exc:
            raise _protocol_error("a malformed event stream") from exc
        except (AttributeError, TypeError, IndexError, KeyError) as exc:
            # A chunk with the right keys but wrong value types; cheaper than checking each.
            raise _protocol_error("a reply chunk in an unexpected format") from exc

        if not saw_data:
            raise _protocol_error("an empty reply")
        usage_event = usage.event()
        if usage_event is not None:
            yield usage_event
        yield Finished(finish or "unknown")

    async def _read_json(self, response: httpx.Response) -> Any:
        try:
            raw = await _read_limited(response, _MAX_JSON_BODY_BYTES)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, started=True) from exc
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise _protocol_error("a reply that is not valid JSON") from exc

    def _completion_events(self, body: Any) -> list[Event]:
        """Events for a non-streamed ``chat.completion`` reply (stream requested but refused)."""
        message, reason, usage = self._completion_parts(body)
        events: list[Event] = []
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            events.append(ReasoningDelta(reasoning))
        content = _message_text(message.get("content"))
        if content:
            events.append(ContentDelta(content))
        refusal = message.get("refusal")
        if isinstance(refusal, str) and refusal:
            events.append(Refusal(refusal))
        events.extend(_citations(message.get("annotations")))
        usage_event = usage.event()
        if usage_event is not None:
            events.append(usage_event)
        events.append(Finished(reason))
        return events

    def _completion_parts(self, body: Any) -> tuple[Mapping[str, Any], str, _UsageAccumulator]:
        if not isinstance(body, dict):
            raise _protocol_error("a reply in an unexpected format")
        if _looks_like_error(body):
            raise _in_band_error(body, self._api_key)
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise _protocol_error("a reply without any choices")
        choice = choices[0]
        message = choice.get("message")
        if not isinstance(message, dict):
            message = {}
        raw_reason = choice.get("finish_reason")
        if raw_reason == "error":
            raise _in_band_error(_finish_error(choice), self._api_key)
        reason = _FINISH_MAP.get(raw_reason, raw_reason) if isinstance(raw_reason, str) else None
        usage = _UsageAccumulator()
        if isinstance(body.get("usage"), dict):
            usage.merge_usage(body["usage"])
        if isinstance(body.get("meta"), dict):
            usage.merge_meta(body["meta"])
        return message, reason or "unknown", usage

    async def complete(self, payload: Mapping[str, Any], *, request_id: str | None = None) -> str:
        """Run one non-streamed turn and return the reply text (used for short titles)."""
        body = dict(payload)
        body["stream"] = False
        # OpenAI-style APIs reject stream_options on non-streamed requests.
        body.pop("stream_options", None)
        headers = self._headers(request_id, stream=False)
        model = str(payload.get("model", ""))
        attempt = 1
        while True:
            try:
                response = await self._open(body, headers, model)
                try:
                    if "event-stream" in response.headers.get("content-type", ""):
                        # Some gateways stream even when asked not to; the text is the same.
                        async with aclosing(self._events(response)) as events:
                            return "".join(
                                [e.text async for e in events if isinstance(e, ContentDelta)]
                            )
                    reply = await self._read_json(response)
                finally:
                    await response.aclose()
                message, _, _ = self._completion_parts(reply)
                return _message_text(message.get("content"))
            except UpstreamError as exc:
                error = exc
            delay = self._retry_delay(attempt, error)
            if delay is None:
                raise self._give_up(error, attempt)
            logger.warning(
                "upstream completion try %d/%d failed (%s, status=%s); retrying in %.2f s",
                attempt,
                self._max_attempts,
                error.kind.value,
                error.status,
                delay,
            )
            attempt += 1
            await self._sleep(delay)


def _finish_error(choice: Mapping[str, Any]) -> Mapping[str, Any]:
    err = choice.get("error")
    if err is not None:
        return {"error": err}
    return {"message": "the reply stopped with finish_reason 'error'"}


async def _read_limited(response: httpx.Response, limit: int) -> bytes:
    buffer = bytearray()
    async for piece in response.aiter_bytes():
        buffer += piece
        if len(buffer) >= limit:
            break
    return bytes(buffer[:limit])
