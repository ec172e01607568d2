"""An offline stand-in for the model, used when no API key is configured.

``DemoTransport`` plugs into ``UpstreamClient(transport=...)`` and answers
``POST */chat/completions`` exactly the way the AIML gateway streams Claude, quirks included,
so the demo exercises the same parsing code path as production.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Final

import httpx

from conversations.gateway import wire

__all__ = ["DemoTransport"]

DEMO_MODEL: Final = wire.MODEL
_QUOTE_CHARS: Final = 120
_NOTE_CHARS: Final = 600
# How the app names the files of a message (conversations/attachments/selectors.py).
_ATTACHED: Final = "Attached files: "
_IMAGE_SIZE_RE: Final = re.compile(r"(\d{1,5})×(\d{1,5}) px")
# Claude Sonnet 4.5 list prices, so the demo's cost column looks plausible.
_USD_PER_INPUT_TOKEN: Final = 3 / 1_000_000
_USD_PER_OUTPUT_TOKEN: Final = 15 / 1_000_000
_WORD_RE: Final = re.compile(r"\s*\S+\s*")

_REASONING: Final = (
    "The user is trying the offline demo, so no real model is connected. "
    "I should say so, explain how to switch to Claude, quote their message, "
    "and show some Markdown so the interface can be checked."
)

_SAMPLE: Final = """Here is a little Markdown so you can check the rendering:

- a bulleted list item
- **bold text** and *italics*
- `inline code`

```python
def greet(name: str) -> str:
    return f"Hello, {name}!"
```

Everything you see was streamed word by word, just like a real reply."""


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
    return ""


def _last_user_content(messages: Any) -> Any:
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == "user":
            return message.get("content")
    return ""


def _last_user_text(messages: Any) -> str:
    """What the user typed: with attachments, the text after the app's line naming the files
    (the files come first; files sent without words have none)."""
    content = _last_user_content(messages)
    if isinstance(content, list):
        texts = [
            part["text"]
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        ]
        named = [i for i, text in enumerate(texts) if text.startswith(_ATTACHED)]
        if named:
            texts = texts[named[-1] + 1 :]
        return texts[-1] if texts else ""
    return _text_of(content)


def _attachment_note(messages: Any) -> str:
    """The demo's acknowledgement of the files in the last user message: their names, image
    sizes and PDF page counts, as the app's line naming them says."""
    content = _last_user_content(messages)
    if not isinstance(content, list):
        return ""
    kinds = [part.get("type") for part in content if isinstance(part, Mapping)]
    images = sum(kind in ("image_url", "image") for kind in kinds)
    documents = sum(kind in ("file", "document") for kind in kinds)
    named = next(
        (
            part["text"][len(_ATTACHED) :]
            for part in content
            if isinstance(part, Mapping)
            and isinstance(part.get("text"), str)
            and part["text"].startswith(_ATTACHED)
        ),
        "",
    )
    if named:
        return f"You attached {_quote_long(named)}.\n\n"
    if images or documents:
        return f"You attached {images} image(s) and {documents} document(s).\n\n"
    return ""


def _quote_long(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _NOTE_CHARS else flat[: _NOTE_CHARS - 1].rstrip() + "…"


def _quote(text: str) -> str:
    flat = " ".join(text.split())
    if len(flat) > _QUOTE_CHARS:
        flat = flat[: _QUOTE_CHARS - 1].rstrip() + "…"
    return flat


def _reply_text(user_text: str, attachment_note: str = "") -> str:
    quote = _quote(user_text)
    echo = f"You wrote:\n\n> {quote}\n\n" if quote else "Your message was empty.\n\n"
    return (
        "Hi! This is the **offline demo**: no real model is connected, so this answer is "
        "canned. Set `AIMLAPI_API_KEY` to talk to Claude.\n\n" + echo + attachment_note + _SAMPLE
    )


def _words(text: str) -> list[str]:
    # Each piece keeps its surrounding whitespace so the pieces join back to the exact text.
    return _WORD_RE.findall(text)


def _prompt_tokens(payload: Mapping[str, Any]) -> int:
    messages = payload.get("messages")
    count = len(str(payload.get("system", "")).split())
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, Mapping):
                text = _text_of(message.get("content"))
                count += len(text.split())
                # Images cost about width×height/750 tokens, as Claude counts them.
                count += sum(int(w) * int(h) // 750 for w, h in _IMAGE_SIZE_RE.findall(text))
    return count


def _title(user_text: str) -> str:
    # Markdown and punctuation make poor titles.
    words = [w.strip(".,;:!?\"'()[]{}*_`#>~") for w in user_text.split()[:6]]
    title = " ".join(w for w in words if w)
    return title[:60] or "Offline demo chat"


class _SSEStream(httpx.AsyncByteStream):
    def __init__(self, events: Sequence[bytes], delay: float) -> None:
        self._events = events
        self._delay = delay

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for index, event in enumerate(self._events):
            if index and self._delay > 0:
                await asyncio.sleep(self._delay)
            yield event


class DemoTransport(httpx.AsyncBaseTransport):
    """Simulated gateway: streams a canned Markdown reply in the AIML gateway's exact shape."""

    def __init__(self, *, token_delay: float = 0.02) -> None:
        self._token_delay = token_delay

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method != "POST" or not request.url.path.endswith("/chat/completions"):
            return self._error(404, f"Cannot {request.method} {request.url.path}", request)
        try:
            payload = json.loads(await request.aread())
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            return self._error(400, "Body validation error!", request)

        user_text = _last_user_text(payload.get("messages"))
        if not payload.get("stream"):
            return self._completion(payload, _title(user_text), request)
        return httpx.Response(
            200,
            headers={
                "content-type": "text/event-stream",
                "cache-control": "no-cache",
                "x-inference-id": uuid.uuid4().hex,
            },
            stream=_SSEStream(self._events(payload, user_text), self._token_delay),
            request=request,
        )

    def _events(self, payload: Mapping[str, Any], user_text: str) -> list[bytes]:
        reasoning_words: list[str] = []
        if payload.get("reasoning_effort") or payload.get("thinking"):
            reasoning_words = _words(_REASONING)
        words = _words(_reply_text(user_text, _attachment_note(payload.get("messages"))))
        limit = payload.get("max_tokens")
        finish_reason = "stop"
        if isinstance(limit, int) and not isinstance(limit, bool) and 0 < limit < len(words):
            words, finish_reason = words[:limit], "length"

        prompt_tokens = _prompt_tokens(payload)
        completion_tokens = len(words) + len(reasoning_words)
        usd = round(
            prompt_tokens * _USD_PER_INPUT_TOKEN + completion_tokens * _USD_PER_OUTPUT_TOKEN, 8
        )
        chunks = wire.gateway_chunks(
            words,
            reasoning_pieces=reasoning_words,
            finish_reason=finish_reason,
            usage=wire.usage(
                prompt_tokens, completion_tokens, reasoning_tokens=len(reasoning_words)
            ),
            usd_spent=usd,
            model=str(payload.get("model") or DEMO_MODEL),
            trailing_finish_reason=finish_reason,
        )
        return [wire.sse(chunk) for chunk in chunks]

    def _completion(
        self, payload: Mapping[str, Any], content: str, request: httpx.Request
    ) -> httpx.Response:
        prompt_tokens = _prompt_tokens(payload)
        completion_tokens = len(content.split())
        body = wire.completion_body(
            content,
            usage=wire.usage(prompt_tokens, completion_tokens),
            model=str(payload.get("model") or DEMO_MODEL),
        )
        return _json_response(200, body, request)

    def _error(self, status: int, message: str, request: httpx.Request) -> httpx.Response:
        return _json_response(
            status, wire.error_body(status, message, path=request.url.path), request
        )


def _json_response(status: int, body: object, request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        status,
        content=wire.dumps(body).encode(),
        headers={"content-type": "application/json"},
        request=request,
    )
