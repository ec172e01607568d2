from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.templatetags.static import static
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from conversations.accounts import limits
from conversations.chat import selectors, services
from conversations.chat.forms import (
    STOP_FIELDS,
    PreferencesForm,
    RenameForm,
    SignupForm,
    TurnSettingsForm,
)
from conversations.chat.frames import SIDEBAR_SIZE
from conversations.models import Conversation
from conversations.realtime import live


@require_GET
@login_required
def home(request: HttpRequest) -> HttpResponse:
    conversation = selectors.conversation_empty_for_user(
        user=request.user
    ) or services.conversation_create(owner=request.user)
    return redirect("conversation", conversation_id=conversation.id)


def _owned(request: HttpRequest, conversation_id: object) -> Conversation:
    conversation = selectors.conversation_get_for_user(
        conversation_id=conversation_id, user=request.user
    )
    if conversation is None:
        raise Http404("No such conversation.")
    return conversation


@require_GET
@login_required
def conversation_detail(request: HttpRequest, conversation_id: str) -> HttpResponse:
    conversation = _owned(request, conversation_id)
    stops = list(conversation.stop_sequences or [])[: len(STOP_FIELDS)]
    settings_form = TurnSettingsForm(
        initial={
            "sampling": conversation.sampling,
            "temperature": conversation.temperature,
            "top_p": conversation.top_p,
            "reasoning_effort": conversation.reasoning_effort,
            "max_tokens": conversation.max_tokens,
            "system_prompt": conversation.system_prompt,
            **dict(zip(STOP_FIELDS, stops, strict=False)),
        }
    )
    return render(
        request,
        "chat/chat.html",
        {
            "conversation": conversation,
            "window": selectors.thread_window(conversation=conversation),
            "conversations": selectors.conversation_sidebar_for_user(
                user=request.user, current_id=conversation.id, limit=SIDEBAR_SIZE
            ),
            "settings_form": settings_form,
            "stop_fields": [settings_form[name] for name in STOP_FIELDS],
            "quota": limits.quota_usage_for_user(user=request.user),
        },
    )


@require_GET
@login_required
def conversation_older(request: HttpRequest, conversation_id: str) -> HttpResponse:
    """Earlier messages of the branch on screen, loaded as the reader scrolls up."""
    conversation = _owned(request, conversation_id)
    window = selectors.thread_window(
        conversation=conversation, before=request.GET.get("before", "")[:64] or None
    )
    return render(request, "chat/_thread.html", {"window": window})


@require_POST
@login_required
def conversation_rename(request: HttpRequest, conversation_id: str) -> HttpResponse:
    conversation = _owned(request, conversation_id)
    form = RenameForm(request.POST)
    if form.is_valid():
        conversation = services.conversation_rename(
            conversation_id=conversation.id, owner=request.user, title=form.cleaned_data["title"]
        )
        live.sidebar_changed_sync(user_id=request.user.pk)
    if not request.htmx:
        return redirect("conversation", conversation_id=conversation.id)
    return render(
        request,
        "chat/_renamed.html",
        {
            "conversation": conversation,
            "form": form,
            "conversations": selectors.conversation_sidebar_for_user(
                user=request.user, current_id=conversation.id, limit=SIDEBAR_SIZE
            ),
        },
    )


@require_http_methods(["GET", "POST"])
@login_required
def conversation_delete(request: HttpRequest, conversation_id: str) -> HttpResponse:
    """GET asks for confirmation (naming the share links that die with it); POST deletes."""
    conversation = _owned(request, conversation_id)
    if request.method == "GET":
        live_links = conversation.share_links.filter(revoked_at__isnull=True).count()
        return render(
            request,
            "sharing/confirm_delete.html",
            {"conversation": conversation, "live_links": live_links},
        )
    live.reply_stop_sync(conversation_id=conversation.id)
    services.conversation_delete(conversation_id=conversation.id, owner=request.user)
    live.sidebar_changed_sync(user_id=request.user.pk)
    return redirect("home")


@require_GET
@login_required
def conversation_search(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "")
    hits = selectors.conversation_search_for_user(user=request.user, query=query)
    return render(
        request,
        "chat/_search_results.html",
        {"hits": hits, "query": query.strip()},
    )


@require_http_methods(["GET", "POST"])
@login_required
def preferences(request: HttpRequest) -> HttpResponse:
    current = selectors.preferences_for_user(user=request.user)
    form = PreferencesForm(
        request.POST or None,
        initial={
            "system_prompt": current.system_prompt,
            "sampling": current.sampling,
            "temperature": current.temperature,
            "top_p": current.top_p,
            "reasoning_effort": current.reasoning_effort,
            "max_tokens": current.max_tokens,
        },
    )
    saved = False
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        services.preferences_update(
            user=request.user,
            system_prompt=data["system_prompt"],
            sampling=data["sampling"],
            temperature=data["temperature"],
            top_p=data["top_p"],
            reasoning_effort=data["reasoning_effort"],
            max_tokens=data["max_tokens"],
        )
        saved = True
    return render(request, "chat/preferences.html", {"form": form, "saved": saved})


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if not settings.CHAT_ALLOW_SIGNUP:
        raise Http404("Sign-up is switched off on this site.")
    if request.user.is_authenticated:
        return redirect("home")
    form = SignupForm(request.POST or None)
    next_url = _signup_next(request)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
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
