"""A user's own conversation exported as JSON or Markdown (the ZIP export, with the files, is
the attachments' view), and the downloads the exports are sent as."""

import json
import re
from typing import Literal

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET

from conversations.chat import selectors
from conversations.http import AuthenticatedHttpRequest, owned_conversation_or_404
from conversations.models import Conversation


def export_filename(*, conversation: Conversation, extension: str) -> str:
    """An ASCII file name from the title (header-safe), ending in a short id to keep it unique."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", conversation.title).strip("-").lower()[:50]
    return f"{slug or 'conversation'}-{str(conversation.id)[:8]}.{extension}"


def download(content: str, *, content_type: str, filename: str) -> HttpResponse:
    """`content` as a file for the browser to save rather than show."""
    return HttpResponse(
        content,
        content_type=content_type,
        headers={"Content-Disposition": content_disposition_header(True, filename)},
    )


def json_attachment(*, data: object, filename: str) -> HttpResponse:
    return download(
        json.dumps(data, ensure_ascii=False, indent=2),
        content_type="application/json",
        filename=filename,
    )


def markdown_attachment(*, text: str, filename: str) -> HttpResponse:
    return download(text, content_type="text/markdown; charset=utf-8", filename=filename)


@require_GET
@login_required
def conversation_export(
    request: AuthenticatedHttpRequest, conversation_id: str, extension: Literal["json", "md"]
) -> HttpResponse:
    """The URL says the format: `export.json` or `export.md`."""
    conversation = owned_conversation_or_404(request, conversation_id)
    filename = export_filename(conversation=conversation, extension=extension)
    if extension == "json":
        data = selectors.conversation_export_data(conversation=conversation)
        return json_attachment(data=data, filename=filename)
    text = selectors.conversation_export_markdown(conversation=conversation)
    return markdown_attachment(text=text, filename=filename)
