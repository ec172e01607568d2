from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from conversations import limits, selectors, services
from conversations.forms import SignupForm, TurnSettingsForm


@require_GET
@login_required
def home(request: HttpRequest) -> HttpResponse:
    conversation = selectors.conversation_empty_for_user(
        user=request.user
    ) or services.conversation_create(owner=request.user)
    return redirect("conversation", conversation_id=conversation.id)


@require_GET
@login_required
def conversation_detail(request: HttpRequest, conversation_id: str) -> HttpResponse:
    conversation = selectors.conversation_get_for_user(
        conversation_id=conversation_id, user=request.user
    )
    if conversation is None:
        raise Http404("No such conversation.")
    settings_form = TurnSettingsForm(
        initial={
            "sampling": conversation.sampling,
            "temperature": conversation.temperature,
            "top_p": conversation.top_p,
            "reasoning_effort": conversation.reasoning_effort,
            "max_tokens": conversation.max_tokens,
        }
    )
    return render(
        request,
        "conversations/chat.html",
        {
            "conversation": conversation,
            "thread": selectors.thread_path(conversation=conversation),
            "conversations": selectors.conversation_list_for_user(user=request.user)[:100],
            "settings_form": settings_form,
            "quota": limits.quota_usage_for_user(user=request.user),
        },
    )


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if not settings.CHAT_ALLOW_SIGNUP:
        raise Http404("Sign-up is switched off on this site.")
    if request.user.is_authenticated:
        return redirect("home")
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("home")
    return render(request, "registration/signup.html", {"form": form})
