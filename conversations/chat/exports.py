"""A user's own conversation: export as JSON or Markdown, and delete."""

import json
import re

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.views.decorators.http import require_GET

from conversations.chat import selectors
from conversations.http import AuthenticatedHttpRequest, owned_conversation_or_404
from conversations.models import Conversation


def export_filename(*, conversation: Conversation, extension: str) -> str:
    """An ASCII file name from the title (header-safe), ending in a short id to keep it unique."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", conversation.title).strip("-").lower()[:50]
    return f"{slug or 'conversation'}-{str(conversation.id)[:8]}.{extension}"


def json_attachment(*, data: object, filename: str) -> HttpResponse:
    response = HttpResponse(
        json.dumps(data, ensure_ascii=False, indent=2), content_type="application/json"
    )
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def markdown_attachment(*, text: str, filename: str) -> HttpResponse:
    response = HttpResponse(text, content_type="text/markdown; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@require_GET
@login_required
def conversation_export_json(
    request: AuthenticatedHttpRequest, conversation_id: str
) -> HttpResponse:
    conversation = owned_conversation_or_404(request, conversation_id)
    return json_attachment(
        data=selectors.conversation_export_data(conversation=conversation),
        filename=export_filename(conversation=conversation, extension="json"),
    )


@require_GET
@login_required
def conversation_export_markdown(
    request: AuthenticatedHttpRequest, conversation_id: str
) -> HttpResponse:
    conversation = owned_conversation_or_404(request, conversation_id)
    return markdown_attachment(
        text=selectors.conversation_export_markdown(conversation=conversation),
        filename=export_filename(conversation=conversation, extension="md"),
    )
