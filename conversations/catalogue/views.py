"""The context meter and the two ways on when a conversation outgrows its model's context."""

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django import forms
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from conversations.catalogue import context
from conversations.chat import selectors
from conversations.gateway.errors import GatewayError
from conversations.http import AuthenticatedHttpRequest, found_or_404, owned_conversation_or_404
from conversations.realtime import live, runtime

SUMMARY_MAX_CHARS = 50_000


class _ModelForm(forms.Form):
    model = forms.CharField(required=False, max_length=100)


@require_GET
@login_required
def context_meter(request: AuthenticatedHttpRequest, conversation_id: str) -> HttpResponse:
    conversation = owned_conversation_or_404(request, conversation_id)
    form = _ModelForm(request.GET)
    model = form.cleaned_data["model"] if form.is_valid() else ""
    usage = context.context_usage_for(conversation=conversation, model=model)
    return render(
        request, "chat/_context_meter.html", {"conversation": conversation, "usage": usage}
    )


@require_GET
@login_required
def context_offers(request: AuthenticatedHttpRequest, conversation_id: str) -> HttpResponse:
    conversation = owned_conversation_or_404(request, conversation_id)
    usage = context.context_usage_for(conversation=conversation)
    return render(
        request,
        "chat/_context_offers.html",
        {"conversation": conversation, "reason": context.overflow_reason(usage=usage)},
    )


class _TrimForm(forms.Form):
    message = forms.CharField(required=False, strip=False, max_length=1_000_000)
    max_tokens = forms.IntegerField(min_value=1, max_value=10_000_000)


@require_POST
@login_required
def context_trim(request: AuthenticatedHttpRequest, conversation_id: str) -> HttpResponse:
    conversation = owned_conversation_or_404(request, conversation_id)
    form = _TrimForm(request.POST)
    if not form.is_valid():
        return HttpResponse("Set Max tokens first.", status=400)
    result = context.context_trim(
        conversation_id=conversation.id,
        owner=request.user,
        new_text=form.cleaned_data["message"],
        max_tokens=form.cleaned_data["max_tokens"],
    )
    # Every tab re-renders the transcript, with the note where the model's view now starts.
    async_to_sync(live.thread_changed)(conversation_id=conversation.id)
    conversation.refresh_from_db()
    return render(
        request,
        "chat/_context_trimmed.html",
        {
            "conversation": conversation,
            "result": result,
            "usage": context.context_usage_for(conversation=conversation),
        },
    )


@require_POST
@login_required
async def context_summary(request: AuthenticatedHttpRequest, conversation_id: str) -> HttpResponse:
    """Ask the conversation's model for a summary, for the user to read and edit."""
    user = await request.auser()
    if not user.is_authenticated:  # login_required let only signed-in users in
        raise PermissionDenied
    conversation = found_or_404(
        await database_sync_to_async(selectors.conversation_get_for_user)(
            conversation_id=conversation_id, user=user
        ),
        what="conversation",
    )
    turn = await database_sync_to_async(context.summary_request)(conversation=conversation)
    error, summary = "", ""
    try:
        summary = (await runtime.current().client.complete(turn))[:SUMMARY_MAX_CHARS]
    except GatewayError as exc:
        error = exc.message
    return render(
        request,
        "chat/_context_summary.html",
        {"conversation": conversation, "summary": summary, "error": error},
    )


class _SummaryForm(forms.Form):
    summary = forms.CharField(max_length=SUMMARY_MAX_CHARS)


@require_POST
@login_required
def context_continue(request: AuthenticatedHttpRequest, conversation_id: str) -> HttpResponse:
    conversation = owned_conversation_or_404(request, conversation_id)
    form = _SummaryForm(request.POST)
    if not form.is_valid() or not form.cleaned_data["summary"].strip():
        return HttpResponse("The summary is empty.", status=400)
    created = context.conversation_create_from_summary(
        conversation_id=conversation.id, owner=request.user, summary=form.cleaned_data["summary"]
    )
    response = HttpResponse(status=204)
    response["HX-Redirect"] = reverse("conversation", args=[created.id])
    return response
