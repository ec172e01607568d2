import uuid
from typing import Any

from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    JsonResponse,
)
from django.shortcuts import redirect, render
from django.templatetags.static import static
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from conversations.accounts import limits
from conversations.accounts import selectors as accounts_selectors
from conversations.accounts import services as accounts_services
from conversations.accounts.backends import client_address
from conversations.catalogue import context
from conversations.catalogue import selectors as catalogue
from conversations.catalogue.services import catalogue_refresh_soon
from conversations.chat import selectors, services
from conversations.chat.exports import download
from conversations.chat.forms import (
    STOP_FIELDS,
    PreferencesForm,
    RenameForm,
    SignupForm,
    TurnSettingsForm,
    settings_of,
)
from conversations.chat.frames import SIDEBAR_SIZE
from conversations.http import AuthenticatedHttpRequest, found_or_404, owned_conversation_or_404
from conversations.models import Conversation, Message
from conversations.realtime import live


@require_GET
@login_required
def home(request: AuthenticatedHttpRequest) -> HttpResponse:
    conversation = selectors.conversation_empty_for_user(
        user=request.user
    ) or services.conversation_create(owner=request.user)
    return redirect("conversation", conversation_id=conversation.id)


@require_GET
@login_required
def conversation_detail(request: AuthenticatedHttpRequest, conversation_id: str) -> HttpResponse:
    conversation = owned_conversation_or_404(request, conversation_id)
    catalogue_refresh_soon()
    choice = catalogue.model_choice_for_user(user=request.user, current=conversation.model)
    stops = list(conversation.stop_sequences or [])[: len(STOP_FIELDS)]
    settings_form = TurnSettingsForm(
        choice=choice,
        initial={
            **conversation.settings_values(),
            "model": choice.current,
            **dict(zip(STOP_FIELDS, stops, strict=False)),
        },
    )
    window = _window_at(conversation, request.GET.get("at", ""))
    last = window.messages[-1] if window.messages else None
    return render_with_sidebar(
        request,
        "chat/chat.html",
        {
            "conversation": conversation,
            "window": window,
            # The socket re-sends the last reply's final state only if the page may lack it.
            "shown_final": (
                last.id
                if last is not None
                and last.role == Message.Role.ASSISTANT
                and last.status != Message.Status.STREAMING
                else None
            ),
            "settings_form": settings_form,
            "stop_fields": [settings_form[name] for name in STOP_FIELDS],
            "quota": limits.quota_usage_for_user(user=request.user),
            "model_choice": choice,
            "model_profiles": {p.id: p.controls() for p in choice.picker()},
            "context_usage": context.context_usage(
                conversation=conversation, profile=choice.current_profile
            ),
            "retirement_notice": catalogue.retirement_notice_for(
                model_id=choice.current, catalogue=choice.catalogue, on=catalogue.today()
            ),
        },
    )


def render_with_sidebar(
    request: AuthenticatedHttpRequest, template: str, context: dict[str, Any]
) -> HttpResponse:
    """A page or partial that carries the sidebar, with `context["conversation"]` current."""
    sidebar = selectors.conversation_sidebar_for_user(
        user=request.user, current_id=context["conversation"].id, limit=SIDEBAR_SIZE
    )
    return render(request, template, {**context, "conversations": sidebar})


def _window_at(conversation: Conversation, at: str) -> selectors.ThreadWindow:
    """The transcript's window; `?at=<message id>` (a search result) reaches back to it."""
    try:
        message_id = uuid.UUID(at) if at and len(at) <= 64 else None
    except ValueError:
        message_id = None
    if message_id is None:
        return selectors.thread_window(conversation=conversation)
    return selectors.thread_window_reaching(conversation=conversation, message_id=message_id)


@require_GET
@login_required
def conversation_older(request: AuthenticatedHttpRequest, conversation_id: str) -> HttpResponse:
    """Earlier messages of the branch on screen, loaded as the reader scrolls up; without
    `before`, the latest window, which the page loads when it was too large for a socket frame."""
    conversation = owned_conversation_or_404(request, conversation_id)
    before = request.GET.get("before", "")
    try:
        before_id = uuid.UUID(before) if before and len(before) <= 64 else None
    except ValueError:
        before_id = None
    if before and before_id is None:
        return HttpResponseBadRequest("`before` must be the id of a message.")
    window = selectors.thread_window(conversation=conversation, before=before_id)
    return render(request, "chat/_thread.html", {"window": window})


@require_GET
@login_required
def message_text(
    request: AuthenticatedHttpRequest, conversation_id: str, message_id: str
) -> HttpResponse:
    """The rest of a reply too long to show whole, one window at a time from `start` (JSON,
    plain text that the page inserts as text), or all of it as a file with `download`."""
    message = found_or_404(
        selectors.message_get_for_user(message_id=message_id, user=request.user), what="message"
    )
    if str(message.conversation_id) != str(conversation_id):
        raise Http404("No such message.")
    if "download" in request.GET:
        return download(
            message.content,
            content_type="text/plain; charset=utf-8",
            filename=f"reply-{message.id}.txt",
        )
    start = request.GET.get("start", "0")
    if not start.isdigit() or len(start) > 12:
        return HttpResponseBadRequest("`start` must be a character offset.")
    begin = min(int(start), len(message.content))
    end = begin + settings.CHAT_MESSAGE_WINDOW_CHARS
    return JsonResponse(
        {
            "text": message.content[begin:end],
            "shown": min(end, len(message.content)),
            "total": len(message.content),
        }
    )


@require_POST
@login_required
def conversation_rename(request: AuthenticatedHttpRequest, conversation_id: str) -> HttpResponse:
    conversation = owned_conversation_or_404(request, conversation_id)
    form = RenameForm(request.POST)
    if form.is_valid():
        conversation = services.conversation_rename(
            conversation_id=conversation.id, owner=request.user, title=form.cleaned_data["title"]
        )
        live.sidebar_changed_sync(user_id=request.user.pk)
    if not request.htmx:
        return redirect("conversation", conversation_id=conversation.id)
    return render_with_sidebar(
        request, "chat/_renamed.html", {"conversation": conversation, "form": form}
    )


@require_POST
@login_required
def conversation_delete(request: AuthenticatedHttpRequest, conversation_id: str) -> HttpResponse:
    """The chat page's Delete dialog is the one place that asks; this only deletes."""
    conversation = owned_conversation_or_404(request, conversation_id)
    live.reply_stop_sync(conversation_id=conversation.id)
    services.conversation_delete(conversation_id=conversation.id, owner=request.user)
    live.sidebar_changed_sync(user_id=request.user.pk)
    return redirect("home")


@require_GET
@login_required
def conversation_search(request: AuthenticatedHttpRequest) -> HttpResponse:
    # PostgreSQL text cannot hold NUL: a query with one would fail rather than find nothing.
    query = request.GET.get("q", "").replace("\x00", "")
    include_archived = request.GET.get("archived") == "1"
    hits = selectors.conversation_search_for_user(
        user=request.user, query=query, include_archived=include_archived
    )
    return render(
        request,
        "chat/_search_results.html",
        {
            "hits": [hit for hit in hits if hit.conversation.archived_at is None],
            "archived_hits": [hit for hit in hits if hit.conversation.archived_at is not None],
            "query": query.strip(),
            "include_archived": include_archived,
        },
    )


@require_http_methods(["GET", "POST"])
@login_required
def preferences(request: AuthenticatedHttpRequest) -> HttpResponse:
    current = accounts_selectors.preferences_for_user(user=request.user)
    choice = catalogue.model_choice_for_user(user=request.user)
    # Ids as on the chat page, so the same controls script follows the chosen model here too.
    form = PreferencesForm(
        request.POST or None, choice=choice, initial=current.settings_values(), auto_id="%s"
    )
    chosen = str(form["model"].value() or "")
    profile = choice.catalogue.profile(chosen if chosen in choice.allowed_ids else choice.current)
    saved = False
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        accounts_services.preferences_update(
            user=request.user, settings=settings_of(data, system_prompt=data["system_prompt"])
        )
        saved = True
    return render(
        request,
        "chat/preferences.html",
        {
            "form": form,
            "saved": saved,
            "profile": profile,
            "model_profiles": {p.id: p.controls() for p in choice.picker()},
            "system_prompt_read": accounts_selectors.system_prompt_last_read(user=request.user),
        },
    )


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if not settings.CHAT_ALLOW_SIGNUP:
        raise Http404("Sign-up is switched off on this site.")
    if request.user.is_authenticated:
        return redirect("home")
    form = SignupForm(request.POST or None)
    address = client_address(request)
    next_url = _signup_next(request)
    if request.method == "POST" and (wait := limits.signup_wait_for(address=address)):
        form.is_valid()
        form.add_error(
            None,
            "Too many accounts were created from your network recently. Try again in "
            f"{limits.lock_wait_text(wait)}.",
        )
        return render(
            request, "registration/signup.html", {"form": form, "next": next_url}, status=429
        )
    if request.method == "POST" and form.is_valid():
        user = form.save()
        limits.signup_record(address=address)
        login(request, user, backend=settings.AUTHENTICATION_BACKENDS[0])
        return redirect(next_url or "home")
    return render(request, "registration/signup.html", {"form": form, "next": next_url})


def _signup_next(request: HttpRequest) -> str:
    """Where sign-up should land (the shared conversation the visitor came from), if it is a
    page of this site; the same rule Django's sign-in applies to its `next`."""
    next_url = str(request.POST.get("next") or request.GET.get("next") or "")[:2000]
    if url_has_allowed_host_and_scheme(
        next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return next_url
    return ""


@require_GET
def favicon(request: HttpRequest) -> HttpResponse:
    # Browsers ask for /favicon.ico whatever the page links; answer rather than log a 404.
    return redirect(static("favicon.svg"), permanent=True)
