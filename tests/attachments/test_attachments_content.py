"""Content parts in both dialects, and the offline demo's acknowledgement of attachments."""

import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from conversations.gateway.client import UpstreamClient
from conversations.gateway.content import (
    DocumentPart,
    ImagePart,
    RequestStyle,
    TextPart,
    content_to_wire,
    message_to_wire,
)
from conversations.gateway.demo import DemoTransport
from conversations.gateway.dialect import Dialect
from conversations.gateway.events import ContentDelta, Usage
from conversations.gateway.payload import TurnOptions, TurnRequest, build_payload
from conversations.gateway.profiles import DEMO_MODELS, SONNET_4_5

PNG = b"\x89PNG\r\n\x1a\nfake"
PDF = b"%PDF-1.7 fake"


def test_plain_text_stays_a_string_in_both_dialects() -> None:
    for style in RequestStyle:
        assert content_to_wire("hello", style) == "hello"


def test_parts_in_the_openai_dialect() -> None:
    wire = content_to_wire(
        [ImagePart("image/png", PNG), DocumentPart(PDF, "r.pdf"), TextPart("hi")],
        RequestStyle.OPENAI,
    )
    assert wire[0] == {
        "type": "image_url",
        "image_url": {
            "url": "data:image/png;base64," + base64.b64encode(PNG).decode(),
            "detail": "auto",
        },
    }
    assert wire[1] == {
        "type": "file",
        "file": {"file_data": base64.b64encode(PDF).decode(), "filename": "r.pdf"},
    }
    assert wire[2] == {"type": "text", "text": "hi"}


def test_parts_in_the_anthropic_dialect() -> None:
    wire = content_to_wire(
        [ImagePart("image/webp", PNG), DocumentPart(PDF, "r.pdf")], RequestStyle.ANTHROPIC
    )
    assert wire[0] == {
        "type": "image",
        "source": {
            "type": "base64",
            "media_type": "image/webp",
            "data": base64.b64encode(PNG).decode(),
        },
    }
    assert wire[1]["type"] == "document"
    assert wire[1]["source"] == {
        "type": "base64",
        "media_type": "application/pdf",
        "data": base64.b64encode(PDF).decode(),
    }
    assert wire[1]["title"] == "r.pdf"


def test_a_text_file_name_cannot_break_out_of_its_wrapper() -> None:
    [part] = content_to_wire(
        [TextPart("secret", filename='a"><file name="b.txt')], RequestStyle.OPENAI
    )
    assert part["text"] == '<file name="a&quot;&gt;&lt;file name=&quot;b.txt">\nsecret\n</file>'


def test_build_payload_writes_each_message_in_the_dialect() -> None:
    messages = [
        {"role": "user", "content": [ImagePart("image/png", PNG), TextPart("What is it?")]},
        {"role": "assistant", "content": "A PNG."},
        {"role": "user", "content": "Thanks"},
    ]
    for style, kind in ((RequestStyle.OPENAI, "image_url"), (RequestStyle.ANTHROPIC, "image")):
        payload = build_payload(
            profile=SONNET_4_5,
            options=TurnOptions(model="m", max_tokens=100),
            messages=messages,
            dialect=Dialect.of(style),
        ).body
        assert [
            m["content"] if isinstance(m["content"], str) else m["content"][0]["type"]
            for m in payload["messages"]
        ] == [kind, "A PNG.", "Thanks"]
        assert message_to_wire(messages[1], style) == {"role": "assistant", "content": "A PNG."}


@pytest_asyncio.fixture
async def demo() -> AsyncIterator[UpstreamClient]:
    client = UpstreamClient(
        base_url="http://demo.invalid/v1", api_key="demo", transport=DemoTransport(token_delay=0)
    )
    yield client
    await client.aclose()


@pytest.mark.asyncio
@pytest.mark.parametrize("style", list(RequestStyle))
async def test_demo_acknowledges_attachments(demo: UpstreamClient, style: RequestStyle) -> None:
    content: list[Any] = [
        ImagePart("image/png", PNG),
        DocumentPart(PDF, "report.pdf"),
        TextPart("Attached files: cat.png (image, 1500×750 px); report.pdf (PDF, 12 pages)"),
        TextPart("What do you see?"),
    ]
    turn = TurnRequest(
        profile=DEMO_MODELS[0],
        options=TurnOptions(model="demo/claude-like", max_tokens=4000),
        messages=[{"role": "user", "content": content}],
        dialect=Dialect.of(style),
    )
    events = [event async for event in demo.stream_chat(turn)]
    text = "".join(e.text for e in events if isinstance(e, ContentDelta))
    assert "> What do you see?" in text
    assert "You attached cat.png (image, 1500×750 px); report.pdf (PDF, 12 pages)." in text
    [usage] = [e for e in events if isinstance(e, Usage)]
    # The image counts as Claude would count it: width × height / 750 tokens.
    assert usage.prompt_tokens is not None and usage.prompt_tokens >= 1500


@pytest.mark.parametrize("style", list(RequestStyle))
def test_a_stopped_replys_estimate_counts_files_as_claude_does_not_by_base64(
    style: RequestStyle,
) -> None:
    from conversations.accounts import limits

    image = ImagePart("image/png", b"\x89PNG" + bytes(1_000_000))
    document = DocumentPart(b"%PDF-1.7" + bytes(500_000), "r.pdf")
    named = "Attached files: cat.png (image, 1568×1568 px); r.pdf (PDF, 3 pages)"
    body = build_payload(
        profile=SONNET_4_5,
        options=TurnOptions(model="m", max_tokens=100),
        messages=[{"role": "user", "content": [image, document, TextPart(named), TextPart("Hi")]}],
        dialect=Dialect.of(style),
    ).body

    estimate = limits.usage_estimate(payload=body, written="")

    # One image, three PDF pages, and the words; the base64 alone would be 400,000+ tokens.
    expected = limits.IMAGE_TOKENS_ESTIMATE + 3 * limits.PDF_PAGE_TOKENS_ESTIMATE
    assert expected < estimate.prompt_tokens < expected + 50
