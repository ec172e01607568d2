"""The gateway's replies written out: the one set of builders behind every stand-in gateway.

The offline demo transport, the tests' loopback fake gateway and the benchmark's upstream all
speak the shapes documented in the gateway notes; they build them here so that a shape is
written once. Nothing here is used on the production path.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final

MODEL: Final = "anthropic/claude-sonnet-4.5"
# The gateway's credits per US dollar, for a plausible meta.usage.credits_used.
CREDITS_PER_USD: Final = 2_100_000

JSON = dict[str, Any]


def dumps(value: object) -> str:
    """Compact JSON with non-ASCII kept raw, like the gateway's Node.js ``JSON.stringify``; a
    lone surrogate (which UTF-8 cannot carry) is written as a ``\\uXXXX`` escape, as there."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    try:
        text.encode()
    except UnicodeEncodeError:
        return json.dumps(value, ensure_ascii=True, separators=(",", ":"))
    return text


def sse(data: object) -> bytes:
    """One SSE event: ``data: <json or text>`` and the blank line."""
    text = data if isinstance(data, str) else dumps(data)
    return b"data: " + text.encode() + b"\n\n"


def usage(
    prompt_tokens: int, completion_tokens: int, *, reasoning_tokens: int = 0, cached_tokens: int = 0
) -> JSON:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


def meta(usd_spent: float) -> JSON:
    return {"usage": {"credits_used": round(usd_spent * CREDITS_PER_USD), "usd_spent": usd_spent}}


def gateway_chunks(
    text_pieces: Sequence[str],
    *,
    reasoning_pieces: Sequence[str] = (),
    finish_reason: str = "stop",
    usage: Mapping[str, Any] | None = None,
    usd_spent: float | None = None,
    model: str = MODEL,
    trailing_finish_reason: str | None = "stop",
) -> list[JSON]:
    """The AIML gateway's stream for Claude, as documented (February 2026 on).

    Only the first chunk has an id; every delta repeats role and ``refusal: null``; no
    ``finish_reason`` key before the end; usage and ``meta.usage`` ride in the finish chunk;
    a ``delta``-less trailing chunk follows (``trailing_finish_reason=None`` omits it); no
    ``[DONE]``.
    """
    chunk_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    chunks: list[JSON] = []

    def chunk(choice: JSON, **extra: Any) -> JSON:
        body: JSON = {
            "id": "" if chunks else chunk_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [choice],
        }
        body.update(extra)
        return body

    for piece in reasoning_pieces:
        delta = {"role": "assistant", "content": "", "reasoning_content": piece, "refusal": None}
        chunks.append(chunk({"index": 0, "delta": delta}))
    for piece in text_pieces:
        delta = {"role": "assistant", "content": piece, "refusal": None}
        chunks.append(chunk({"index": 0, "delta": delta}))
    finish: JSON = {
        "index": 0,
        "delta": {"role": "assistant", "content": "", "refusal": None},
        "finish_reason": finish_reason,
    }
    extra: JSON = {"usage": dict(usage) if usage is not None else None}
    if usd_spent is not None:
        extra["meta"] = meta(usd_spent)
    chunks.append(chunk(finish, **extra))
    if trailing_finish_reason is not None:
        chunks.append(chunk({"index": 0, "finish_reason": trailing_finish_reason}, usage=None))
    return chunks


def openai_chunk(choices: list[JSON], *, chunk_id: str, model: str, **extra: Any) -> JSON:
    body: JSON = {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
    }
    body.update(extra)
    return body


def openai_content(text: str, *, chunk_id: str, model: str) -> JSON:
    return openai_chunk(
        [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
        chunk_id=chunk_id,
        model=model,
    )


def openai_tail(
    *, finish_reason: str, usage: Mapping[str, Any] | None, chunk_id: str, model: str
) -> list[JSON | str]:
    """Classic OpenAI ending: a finish chunk, usage in an empty-choices chunk, ``[DONE]``."""
    tail: list[JSON | str] = [
        openai_chunk(
            [{"index": 0, "delta": {}, "finish_reason": finish_reason}],
            chunk_id=chunk_id,
            model=model,
        )
    ]
    if usage is not None:
        tail.append(openai_chunk([], chunk_id=chunk_id, model=model, usage=dict(usage)))
    tail.append("[DONE]")
    return tail


def wrapped_chunks(
    text_pieces: Sequence[str],
    *,
    input_tokens: int = 16,
    output_tokens: int = 3,
    cache_read_input_tokens: int = 0,
    model: str = MODEL,
) -> list[JSON]:
    """The gateway's Claude stream before 2026-02-13: each chunk wrapped as
    ``{"event": <chunk>, "state": {...}}``, the chunk's own usage null or all zeros and the real
    counts in ``state.usage`` under Anthropic's names (input first, output near the end)."""
    generation_id = uuid.uuid4().hex
    created = int(time.time())
    zeros = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}

    def wrap(choice: JSON, output: int, finish: str | None) -> JSON:
        inner: JSON = {
            "id": generation_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [choice],
            "usage": zeros if finish else None,
        }
        state: JSON = {
            "generationId": generation_id,
            "tools": [],
            "usage": {
                "input_tokens": input_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": cache_read_input_tokens,
                "output_tokens": output,
            },
            "finishReason": finish,
        }
        return {"event": inner, "state": state}

    chunks = [
        wrap({"index": 0, "delta": {"role": "assistant", "content": piece}}, 1, None)
        for piece in text_pieces
    ]
    chunks.append(wrap({"index": 0, "finish_reason": "stop"}, output_tokens, "end_turn"))
    return chunks


def completion_body(
    content: str,
    *,
    finish_reason: str = "stop",
    usage: Mapping[str, Any] | None = None,
    model: str = MODEL,
) -> JSON:
    """A non-streamed ``chat.completion``."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "finish_reason": finish_reason,
            }
        ],
        "usage": dict(usage) if usage is not None else None,
    }


def error_body(status: int, message: str, *, path: str = "/v1/chat/completions") -> JSON:
    """The gateway's own error shape."""
    return {
        "message": message,
        "path": path,
        "requestId": uuid.uuid4().hex,
        "statusCode": status,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
