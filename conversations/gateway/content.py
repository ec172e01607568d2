"""Message content as the app holds it, and as each request dialect spells it.

A user message is either plain text or a list of parts. The parts are built once from what the
user sent (text, stored attachments) and written out per request in the dialect of the model
the turn goes to: OpenAI-style (`image_url` data URLs, `file` parts) or Anthropic-style
(`image` / `document` blocks with a base64 `source`).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

IMAGE_MEDIA_TYPES: Final = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
PDF_MEDIA_TYPE: Final = "application/pdf"


class RequestStyle(StrEnum):
    """The request dialect: where the system prompt, reasoning and content parts go."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str
    # Set for a text file the user attached: the model is told which file the text came from.
    filename: str = ""


@dataclass(frozen=True, slots=True)
class ImagePart:
    media_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class DocumentPart:
    """A PDF."""

    data: bytes
    filename: str
    media_type: str = PDF_MEDIA_TYPE


ContentPart = TextPart | ImagePart | DocumentPart
# What a message's `content` may be in the app's own form.
Content = str | Sequence[ContentPart]


def _text_of(part: TextPart) -> str:
    if not part.filename:
        return part.text
    # The name is the user's: escaped, so it cannot close the wrapper or forge another one.
    return f'<file name="{html.escape(part.filename, quote=True)}">\n{part.text}\n</file>'


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def part_to_wire(part: ContentPart, style: RequestStyle) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": _text_of(part)}
    if isinstance(part, ImagePart):
        if style is RequestStyle.ANTHROPIC:
            return {
                "type": "image",
                "source": {
                    "type": "base64",
                    "media_type": part.media_type,
                    "data": _b64(part.data),
                },
            }
        return {
            "type": "image_url",
            "image_url": {
                "url": f"data:{part.media_type};base64,{_b64(part.data)}",
                "detail": "auto",
            },
        }
    if style is RequestStyle.ANTHROPIC:
        return {
            "type": "document",
            "source": {"type": "base64", "media_type": part.media_type, "data": _b64(part.data)},
            "title": part.filename,
        }
    return {"type": "file", "file": {"file_data": _b64(part.data), "filename": part.filename}}


def content_to_wire(content: Content, style: RequestStyle) -> str | list[dict[str, Any]]:
    """Plain text stays a string (the form every gateway takes); parts become a list."""
    if isinstance(content, str):
        return content
    return [part_to_wire(part, style) for part in content]


def message_to_wire(message: Mapping[str, Any], style: RequestStyle) -> dict[str, Any]:
    return {"role": message["role"], "content": content_to_wire(message["content"], style)}
