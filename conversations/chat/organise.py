"""A user's own conversations kept in order: pin, archive (and the archived list), and
feedback on replies. Every id is checked against the signed-in user: anyone else's is a 404."""

import uuid
from typing import Protocol

from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from conversations.chat import selectors, services
from conversations.chat.forms import FeedbackForm, SwitchForm
from conversations.chat.views import render_with_sidebar
from conversations.http import AuthenticatedHttpRequest, found_or_404, owned_conversation_or_404
from conversations.models import Conversation, Message, MessageFeedback
from conversations.realtime import live


class _Switch(Protocol):
    def __call__(
        self, *, conversation_id: uuid.UUID | str, owner: User, on: bool
    ) -> Conversation: ...


def _switch(
    request: AuthenticatedHttpRequest, conversation_id: str, switch: _Switch
) -> HttpResponse:
    """Pin or archive from the form's on/off `state`. Then every open tab re-renders its sidebar
    (and this conversation's controls) over its socket; the answer to this request carries the
    same, for a tab whose socket is down."""
    conversation = owned_conversation_or_404(request, conversation_id)
    form = SwitchForm(request.POST)
    if not form.is_valid():
        return HttpResponse("`state` must be on or off.", status=400)
    conversation = switch(conversation_id=conversation.id, owner=request.user, on=form.is_on)
    live.sidebar_changed_sync(user_id=request.user.pk)
    if not request.htmx:
        # Only the archived list says where to go back to; anything else returns to the
        # conversation.
        if request.POST.get("next") == "archived":
            return redirect("archived")
        return redirect("conversation", conversation_id=conversation.id)
    return render_with_sidebar(request, "chat/_organised.html", {"conversation": conversation})


@require_POST
@login_required
def conversation_pin(request: AuthenticatedHttpRequest, conversation_id: str) -> HttpResponse:
    return _switch(request, conversation_id, services.conversation_pin_set)


@require_POST
@login_required
def conversation_archive(request: AuthenticatedHttpRequest, conversation_id: str) -> HttpResponse:
    return _switch(request, conversation_id, services.conversation_archive_set)


@require_GET
@login_required
def archived(request: AuthenticatedHttpRequest) -> HttpResponse:
    return render(
        request,
        "chat/archived.html",
        {"archived": selectors.conversation_archived_for_user(user=request.user)},
    )


@require_POST
@login_required
def message_feedback(request: AuthenticatedHttpRequest, message_id: str) -> HttpResponse:
    """Rate a reply (or take the rating back) and answer with its feedback controls."""
    message = found_or_404(
        selectors.message_get_for_user(message_id=message_id, user=request.user), what="message"
    )
    form = FeedbackForm(request.POST)
    error = ""
    # Just rated down: the comment box opens to ask what went wrong (on a page load it stays
    # folded unless there is a comment).
    invite_comment = False
    try:
        if not form.is_valid():
            error = "; ".join(str(e) for errors in form.errors.values() for e in errors)
        elif form.cleaned_data["rating"]:
            services.message_feedback_set(
                message_id=message.id,
                owner=request.user,
                rating=form.cleaned_data["rating"],
                comment=form.cleaned_data["comment"],
            )
            invite_comment = form.cleaned_data["rating"] == MessageFeedback.Rating.DOWN
        else:
            services.message_feedback_clear(message_id=message.id, owner=request.user)
    except services.FeedbackRefused as exc:
        error = str(exc)
    except Message.DoesNotExist as exc:
        # Deleted (with its conversation) since it was looked up.
        raise Http404("No such message.") from exc
    if not request.htmx and not request.headers.get("X-Requested-With"):
        return redirect("conversation", conversation_id=message.conversation_id)
    shown = found_or_404(
        selectors.feedback_for_user(message_id=message.id, user=request.user), what="message"
    )
    return render(
        request,
        "chat/_feedback.html",
        {"message": shown, "feedback_error": error, "invite_comment": invite_comment},
        status=400 if error else 200,
    )
