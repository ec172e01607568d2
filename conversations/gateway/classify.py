"""Turning what the gateway said went wrong into an error class and a message for the user.

Cold path: regexes and allocations are fine here. Every message is scrubbed of the API key
(also its case changes and any 12+ character piece of it) and clipped.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
import time
from collections.abc import Mapping
from datetime import UTC
from typing import Final

import httpx

from conversations.gateway.dialect import Aspect
from conversations.gateway.errors import (
    AuthError,
    BadRequest,
    ConnectionFailed,
    ContextTooLong,
    CreditsError,
    GatewayError,
    ModelUnavailable,
    ProtocolError,
    RateLimited,
    ServerError,
    ShapeRejected,
    StreamBroken,
)
from conversations.gateway.values import storable_text

RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504, 529})
_RETRYABLE_ERROR_TYPES: Final = frozenset(
    {"overloaded_error", "rate_limit_error", "api_error", "server_error", "timeout_error"}
)
MAX_MESSAGE_CHARS: Final = 600
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
_BEARER_RE: Final = re.compile(r"(?i)(bearer\s+)[^\s\"',;]+")
# An echo of this much of the key is treated as the key itself.
KEY_ECHO_CHARS: Final = 12
_CONTEXT_TOO_LONG_RE: Final = re.compile(
    r"prompt is too long:\s*([\d,]+)\s*tokens?\s*>\s*([\d,]+)", re.IGNORECASE
)
# Words saying a field or value is not accepted at all (a shape problem, not a bad value).
_REFUSAL_WORDS: Final = (
    "not supported",
    "unsupported",
    "does not support",
    "unknown",
    "unrecognized",
    "unrecognised",
    "not permitted",
    "not allowed",
    "unexpected",
    "should not exist",
    "extra inputs",
    "invalid field",
)
_ASPECT_HINTS: Final[tuple[tuple[Aspect, tuple[str, ...]], ...]] = (
    (Aspect.SYSTEM, ("'system'", '"system"', "`system`", "system:", "system role", "role system")),
    (Aspect.REASONING, ("reasoning_effort", "thinking")),
    (Aspect.STOP, ("stop_sequences", "`stop`", "'stop'", '"stop"', "stop:")),
    (
        Aspect.CONTENT,
        ("image_url", "content part", "part type", "content type", "'file'", "'document'"),
    ),
)


def _lower_keep_length(text: str) -> str:
    # str.lower() can change length ("İ" → 2 chars); indices must stay aligned with the text.
    return "".join(c if len(low := c.lower()) != 1 else low for c in text)


def scrub(text: str, secret: str) -> str:
    """``text`` without the key, any case change of it, or any 12+ character piece of it."""
    if secret:
        key = secret.lower()
        lowered = _lower_keep_length(text)
        if len(key) < KEY_ECHO_CHARS:
            spans = [m.span() for m in re.finditer(re.escape(key), lowered)]
        else:
            grams = {key[i : i + KEY_ECHO_CHARS] for i in range(len(key) - KEY_ECHO_CHARS + 1)}
            spans = []
            i = 0
            while i <= len(lowered) - KEY_ECHO_CHARS:
                if lowered[i : i + KEY_ECHO_CHARS] not in grams:
                    i += 1
                    continue
                end = i + KEY_ECHO_CHARS
                while end < len(lowered) and lowered[i : end + 1] in key:
                    end += 1
                spans.append((i, end))
                i = end
        for start, end in reversed(spans):
            text = text[:start] + "***" + text[end:]
    # Gateways sometimes echo the Authorization header; hide any bearer token, not just ours.
    return _BEARER_RE.sub(r"\1***", text)


def clip(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[: MAX_MESSAGE_CHARS - 1] + "…"
    return text


def safe_detail(text: str, secret: str) -> str:
    return clip(storable_text(scrub(text, secret)))


def _as_text(value: object) -> str:
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


def as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit() and len(value) < 20:
        return int(value)
    return None


def error_parts(body: object) -> tuple[str, object, object]:
    """Return (message, code, type) from any of the three documented error body shapes."""
    if not isinstance(body, dict):
        return _as_text(body), None, None
    err = body.get("error")
    details: object
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


def parse_retry_after(headers: httpx.Headers) -> float | None:
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


def _mentions_missing_model(message: str, code: object) -> bool:
    if code == "model_not_found":
        return True
    low = message.lower()
    return "model" in low and any(hint in low for hint in _MODEL_GONE_HINTS)


def shape_aspect(message: str) -> Aspect | None:
    """Which aspect of the request's dialect a 400's message says the model does not take."""
    low = message.lower()
    if not any(word in low for word in _REFUSAL_WORDS):
        return None
    for aspect, hints in _ASPECT_HINTS:
        if any(hint in low for hint in hints):
            return aspect
    return None


def decode_body(raw: bytes) -> object:
    text = raw.decode("utf-8", errors="replace").strip()
    if not text:
        return ""
    try:
        parsed: object = json.loads(text)
    except ValueError:
        if text.startswith("<"):
            return "the gateway answered with an HTML error page"
        return text
    return parsed


def status_error(
    status: int, body: object, headers: httpx.Headers, model: str, secret: str
) -> GatewayError:
    message, code, _ = error_parts(body)
    detail = safe_detail(message, secret)
    suffix = f": {detail}" if detail else "."
    retry_after = parse_retry_after(headers)

    if status == 400 and (too_long := _CONTEXT_TOO_LONG_RE.search(message)):
        prompt_tokens, limit = (int(g.replace(",", "")[:12]) for g in too_long.groups())
        return ContextTooLong(
            f"The conversation is too long for the model: the prompt is {prompt_tokens:,} "
            f"tokens and the model reads at most {limit:,}.",
            prompt_tokens=prompt_tokens,
            limit=limit,
            status=status,
        )
    if (400 <= status < 500 and status not in (401, 429)) and (
        status in (404, 410) or _mentions_missing_model(message, code)
    ):
        shown_model = safe_detail(model, secret)
        return ModelUnavailable(
            f"The model '{shown_model}' is not available (it may have been retired){suffix}",
            model=model,
            status=status,
        )
    if status == 401:
        return AuthError(f"The API key was rejected ({status}){suffix}", status=status)
    if status == 403:
        return CreditsError(f"The account is out of credits ({status}){suffix}", status=status)
    if status == 429:
        hint = f" Try again in {math.ceil(retry_after)} s." if retry_after else ""
        return RateLimited(
            f"Rate limited ({status}){suffix}{hint}",
            status=status,
            retryable=True,
            retry_after=retry_after,
        )
    if 400 <= status < 500:
        text = f"The model rejected the request ({status}){suffix}"
        aspect = shape_aspect(message) if status == 400 else None
        if aspect is not None:
            return ShapeRejected(text, aspect=aspect, status=status)
        return BadRequest(text, status=status)
    if status >= 500:
        lead = {
            500: "The model service had an internal error",
            502: "The model service got a bad response from the model",
            503: "The model service is unavailable",
            504: "The model service timed out while generating the reply",
            529: "The model is overloaded",
        }.get(status, "The model service failed")
        return ServerError(
            f"{lead} ({status}){suffix}",
            status=status,
            retryable=status in RETRY_STATUSES,
            retry_after=retry_after,
        )
    return ProtocolError(
        f"The model service sent an unexpected response ({status}){suffix}", status=status
    )


def in_band_error(body: Mapping[str, object], secret: str) -> StreamBroken:
    """An error reported inside an HTTP 200 body (an SSE data line or a JSON reply)."""
    message, code, etype = error_parts(body)
    status = as_int(code)
    retryable = (
        status in RETRY_STATUSES
        or etype in _RETRYABLE_ERROR_TYPES
        or "overloaded" in message.lower()
    )
    detail = safe_detail(message, secret) or "no details were given"
    return StreamBroken(
        f"The model reported an error while answering: {detail}",
        status=status if status is not None and 400 <= status < 600 else None,
        retryable=retryable,
    )


def retry_reason(error: GatewayError) -> str:
    status = f" ({error.status})" if error.status is not None else ""
    if isinstance(error, RateLimited):
        return f"rate limited{status}"
    if error.status == 529 or "overloaded" in error.message.lower():
        return f"overloaded{status}"
    if isinstance(error, ServerError):
        return f"server error{status}"
    if isinstance(error, ConnectionFailed):
        return "connection problem"
    return f"model error{status}"


def protocol_error(what: str) -> ProtocolError:
    return ProtocolError(f"The model service sent {what}.")
