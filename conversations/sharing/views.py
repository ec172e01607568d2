"""Share links: the owner's dialog and list, and the public page at /s/<token>/."""

from collections.abc import Callable, Mapping
from functools import wraps
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from conversations.attachments.validation import AttachmentRefused
from conversations.http import AuthenticatedHttpRequest, found_or_404, owned_conversation_or_404
from conversations.models import Conversation, ShareLink
from conversations.sharing import selectors as sharing_selectors
from conversations.sharing import services as sharing_services
from conversations.sharing.forms import ShareOptionsForm
from conversations.sharing.selectors import ShareSnapshot

NOTHING_TO_SHARE = "Nothing to share yet: send a message first, then create the link."


def _share_url(request: HttpRequest, link: ShareLink | None) -> str:
    if link is None:
        return ""
    return request.build_absolute_uri(reverse("shared_conversation", args=[link.token]))


def _preview(conversation: Conversation, options: Mapping[str, Any]) -> ShareSnapshot:
    """The snapshot the link would publish with these options (missing ones are off)."""
    return sharing_selectors.share_snapshot_build(
        conversation=conversation,
        include_system_prompt=bool(options.get("include_system_prompt")),
        include_thinking=bool(options.get("include_thinking")),
        include_attachments=bool(options.get("include_attachments")),
    )


def _dialog(
    request: AuthenticatedHttpRequest,
    conversation: Conversation,
    *,
    form: ShareOptionsForm | None = None,
    notice: str = "",
) -> HttpResponse:
    link = sharing_selectors.share_link_live_for_conversation(conversation=conversation)
    form = form or ShareOptionsForm.for_link(link)
    options = form.initial if not form.is_bound else form.cleaned_data
    preview = _preview(conversation, options)
    context = {
        "conversation": conversation,
        "link": link,
        "share_url": _share_url(request, link),
        "form": form,
        "preview": preview,
        "notice": notice,
    }
    template = "sharing/_share_dialog.html" if request.htmx else "sharing/share_page.html"
    return render(request, template, context)


@require_http_methods(["GET", "POST"])
@login_required
def share_dialog(request: AuthenticatedHttpRequest, conversation_id: str) -> HttpResponse:
    """GET: the dialog. POST: create the link, or update the live one under the same URL."""
    conversation = owned_conversation_or_404(request, conversation_id)
    if request.method == "GET":
        return _dialog(request, conversation)
    form = ShareOptionsForm(request.POST)
    if not form.is_valid():
        return _dialog(request, conversation, form=form, notice="Check the options below.")
    if not sharing_selectors.share_snapshot_build(
        conversation=conversation, include_system_prompt=False, include_thinking=False
    ).messages:
        return _dialog(request, conversation, form=form, notice=NOTHING_TO_SHARE)
    _, created = sharing_services.share_link_publish(
        conversation_id=conversation.id, user=request.user, options=form.options()
    )
    if created:
        notice = "Link created. Anyone you give it to sees the messages below."
    else:
        notice = "Link updated: the same URL now shows the conversation as it is now."
    if not request.htmx:
        return redirect("share_dialog", conversation_id=conversation.id)
    return _dialog(request, conversation, notice=notice)


@require_GET
@login_required
def share_preview(request: AuthenticatedHttpRequest, conversation_id: str) -> HttpResponse:
    conversation = owned_conversation_or_404(request, conversation_id)
    form = ShareOptionsForm(request.GET)
    form.is_valid()
    preview = _preview(conversation, form.cleaned_data)
    return render(request, "sharing/_share_preview.html", {"preview": preview})


@require_POST
@login_required
def share_link_revoke(request: AuthenticatedHttpRequest, link_id: str) -> HttpResponse:
    link = found_or_404(
        sharing_selectors.share_link_get_for_user(link_id=link_id, user=request.user), what="link"
    )
    sharing_services.share_link_revoke(link_id=link.id, user=request.user)
    if request.htmx:
        return _dialog(
            request, link.conversation, notice="Link revoked: it answers “not found” from now on."
        )
    return redirect("shared_links")


@require_GET
@login_required
def shared_links(request: AuthenticatedHttpRequest) -> HttpResponse:
    links = sharing_selectors.share_link_list_for_user(user=request.user)
    rows = [{"link": link, "url": _share_url(request, link)} for link in links]
    return render(request, "sharing/links.html", {"rows": rows})


def _public_headers(response: HttpResponse) -> HttpResponse:
    # Not in search engines, no token in any Referer header, and never served from a cache
    # after a revoke.
    response["X-Robots-Tag"] = "noindex, nofollow"
    response["Referrer-Policy"] = "no-referrer"
    response["Cache-Control"] = "no-store"
    return response


def _not_found(request: HttpRequest) -> HttpResponse:
    # One fixed page for unknown, revoked and expired tokens alike, so none can be told apart.
    response = TemplateResponse(request, "sharing/not_found.html", status=404)
    return _public_headers(response)


def _login_redirect(request: HttpRequest, token: str) -> HttpResponse:
    next_url = reverse("shared_conversation", args=[token])
    response = redirect(f"{reverse('login')}?{urlencode({'next': next_url})}")
    return _public_headers(response)


@require_GET
def shared_conversation(request: HttpRequest, token: str) -> HttpResponse:
    link = sharing_selectors.share_link_get_live_by_token(token=token)
    if link is None:
        return _not_found(request)
    if link.visibility == ShareLink.Visibility.SIGNED_IN and not request.user.is_authenticated:
        return _login_redirect(request, token)
    # The owner looking at their own link is not an audience.
    if request.user.id != link.conversation.owner_id:
        sharing_services.share_link_record_view(link=link)
    response = render(request, "sharing/shared.html", {"link": link, "token": token})
    return _public_headers(response)


def csrf_protect_from_no_referrer_page(
    view: Callable[..., HttpResponse],
) -> Callable[..., HttpResponse]:
    """CSRF protection for a form on a page served with Referrer-Policy: no-referrer.

    Under that policy browsers send ``Origin: null`` with the page's own form posts, which
    Django's origin check rejects. Here a null origin is read as this site's origin and the
    CSRF token must still match the visitor's cookie, which no other site can read; any
    real foreign origin is still refused.
    """
    protected = csrf_protect(view)

    @csrf_exempt
    @wraps(view)
    def wrapper(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        if request.META.get("HTTP_ORIGIN") == "null":
            scheme = "https" if request.is_secure() else "http"
            request.META["HTTP_ORIGIN"] = f"{scheme}://{request.get_host()}"
        return protected(request, *args, **kwargs)

    return wrapper


@require_POST
@csrf_protect_from_no_referrer_page
def shared_continue(request: HttpRequest, token: str) -> HttpResponse:
    link = sharing_selectors.share_link_get_live_by_token(token=token)
    if link is None:
        return _not_found(request)
    if not request.user.is_authenticated:
        return _login_redirect(request, token)
    try:
        conversation = sharing_services.conversation_create_from_share(
            link=link, owner=request.user
        )
    except AttachmentRefused as exc:
        context = {"link": link, "token": token, "continue_error": str(exc)}
        return _public_headers(render(request, "sharing/shared.html", context, status=409))
    return redirect("conversation", conversation_id=conversation.id)
