"""Model-written conversation titles: one small non-streaming request after the first exchange.

Best effort by design: any failure leaves the title as it was and never touches the reply.
"""

import asyncio
import logging
import re
import uuid

from channels.db import database_sync_to_async
from django.conf import settings

from conversations.catalogue.selectors import model_in_service
from conversations.chat import selectors, services
from conversations.gateway.content import RequestStyle
from conversations.gateway.dialect import Dialect
from conversations.gateway.errors import GatewayError
from conversations.gateway.payload import TurnOptions, TurnRequest, profile_for
from conversations.realtime import live, runtime

logger = logging.getLogger(__name__)

TITLE_MAX_TOKENS = 30
TITLE_MAX_CHARS = 80
EXCERPT_CHARS = 1500
TITLE_INSTRUCTION = (
    "You name conversations. The user's message is the start of a conversation: what the user "
    "wrote, a line with ---, then the assistant's reply. Answer with a short title for it (at "
    "most six words) and nothing else: no quotes, no punctuation at the end."
)


# A thematic break ("---", the separator the title request itself uses) ends the title.
_SEPARATOR = re.compile(r"(?:^|\s)(?:-{3,}|\*{3,}|_{3,})(?:\s|$)")
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
# Emphasis and code markers, but not the underscores inside names like AIMLAPI_API_KEY.
_MARKUP = re.compile(r"[*`~#]+|(?<!\w)_+|_+(?!\w)")


def title_clean(text: str) -> str:
    """The first line of the model's answer as plain text: no quotes, Markdown, separator or
    trailing full stop or colon."""
    line = next((line for line in text.strip().splitlines() if line.strip()), "")
    line = _SEPARATOR.split(line, maxsplit=1)[0]
    line = _MARKUP.sub("", _LINK.sub(r"\1", line))
    line = line.strip().strip("\"'“”‘’>").strip()
    if line.lower().startswith("title:"):
        line = line[len("title:") :].strip().strip("\"'“”‘’")
    line = " ".join(line.split()).rstrip(".:")
    if len(line) > TITLE_MAX_CHARS:
        line = line[: TITLE_MAX_CHARS - 1].rstrip() + "…"
    return line


async def title_generate(*, conversation_id: uuid.UUID, owner_id: int) -> bool:
    """Ask the model for a title; True if one was saved."""
    request = await database_sync_to_async(selectors.title_request_for)(
        conversation_id=conversation_id
    )
    if request is None or not services.title_is_provisional(
        title=request.title, first_message=request.user_text
    ):
        return False
    # The user's own words come first, so even the offline demo model titles from them.
    excerpt = f"{request.user_text[:EXCERPT_CHARS]}\n---\n{request.reply_text[:EXCERPT_CHARS]}"
    model = await database_sync_to_async(model_in_service)(model_id=settings.CHAT_MODEL)
    turn = TurnRequest(
        profile=profile_for(model),
        options=TurnOptions(model=model, max_tokens=TITLE_MAX_TOKENS),
        messages=[{"role": "user", "content": excerpt}],
        system_prompt=TITLE_INSTRUCTION,
        dialect=Dialect.of(RequestStyle(settings.CHAT_REQUEST_STYLE)),
    )
    try:
        title = title_clean(await runtime.current().client.complete(turn))
    except GatewayError as exc:
        logger.info("no title for conversation %s: %s", conversation_id, exc.message)
        return False
    if not title:
        return False
    saved = await database_sync_to_async(services.conversation_title_generated_set)(
        conversation_id=conversation_id, title=title, first_message=request.user_text
    )
    if saved:
        await live.sidebar_changed(user_id=owner_id)
    return saved


def title_schedule(
    *, conversation_id: uuid.UUID, owner_id: int, after: asyncio.Task[None] | None
) -> None:
    """Generate a title once the first reply (`after`) has finished, in the background."""

    async def run() -> None:
        try:
            if after is not None:
                await asyncio.shield(after)
            await title_generate(conversation_id=conversation_id, owner_id=owner_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("title generation failed for conversation %s", conversation_id)

    runtime.current().spawn(run(), name=f"title-{conversation_id}")
