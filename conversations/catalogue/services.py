"""Writes: the gateway's models and deprecations lists into the database (in the background,
never in a turn's way), and the request dialect that worked per model."""

from __future__ import annotations

import datetime
import json
import logging
import threading
from typing import Any

import httpx
from django.conf import settings
from django.core.cache import cache
from django.db import connections, transaction
from django.db.models import Max
from django.utils import timezone

from conversations.catalogue import selectors
from conversations.catalogue.selectors import demo_mode
from conversations.gateway.profiles import (
    ModelFacts,
    entries_of,
    facts_from_entry,
    settings_from_params,
)
from conversations.models import Conversation, GatewayModel, Message, ModelDialect

logger = logging.getLogger(__name__)

MODELS_PATH = "/models?include=pricing,capabilities"
DEPRECATIONS_PATH = "/models/deprecations"
# The lists are small; a body beyond this is not one of them.
MAX_LIST_BYTES = 4 * 1024 * 1024
REFRESH_LEASE_KEY = "chat:models-refresh-lease"


def _fetch_list(*, client: httpx.Client, url: str) -> list[dict[str, Any]] | None:
    """The entries of one list endpoint, or None when it is unreachable or not a list."""
    try:
        with client.stream("GET", url) as response:
            if response.status_code != 200:
                logger.warning("models refresh: %s answered %s", url, response.status_code)
                return None
            body = bytearray()
            for piece in response.iter_bytes():
                body.extend(piece)
                if len(body) > MAX_LIST_BYTES:
                    logger.warning("models refresh: %s is larger than expected", url)
                    return None
        document = json.loads(bytes(body))
    except (httpx.HTTPError, ValueError) as exc:
        logger.warning("models refresh: %s failed (%s)", url, type(exc).__name__)
        return None
    if not isinstance(document, list | dict):
        return None
    entries = entries_of(document)
    if not entries and document not in ([], {"data": []}):
        logger.warning("models refresh: %s is not a models list", url)
        return None
    return [dict(entry) for entry in entries]


def _relevant(facts: ModelFacts) -> bool:
    """The gateway lists every vendor; only Claude models (or ids mapped to a kind) are kept."""
    return facts.kind is not None or "claude" in facts.id.lower()


def catalogue_refresh(*, base_url: str, timeout: float) -> bool:
    """Fetch the models list and the deprecations list and store what they say. Each list
    that cannot be read leaves the stored facts as they were; returns whether both were read."""
    root = base_url.rstrip("/")
    with httpx.Client(timeout=timeout, follow_redirects=False) as client:
        listed = _fetch_list(client=client, url=root + MODELS_PATH)
        deprecations = _fetch_list(client=client, url=root + DEPRECATIONS_PATH)
    now = timezone.now()
    with transaction.atomic():
        if listed is not None:
            models = [f for f in (facts_from_entry(e) for e in listed) if f and _relevant(f)]
            GatewayModel.objects.exclude(model_id__in=[f.id for f in models]).update(listed=False)
            for facts in models:
                GatewayModel.objects.update_or_create(
                    model_id=facts.id,
                    defaults={
                        "display_name": facts.display_name or "",
                        "kind": facts.kind or "",
                        "context_window": facts.context_window,
                        "max_output_tokens": facts.max_output_tokens,
                        "input_price_per_mtok": facts.input_price_per_mtok,
                        "output_price_per_mtok": facts.output_price_per_mtok,
                        "listed": True,
                        "refreshed_at": now,
                    },
                )
        if deprecations is not None:
            for entry in deprecations:
                lifecycle = facts_from_entry(entry)
                if lifecycle is None or not _relevant(lifecycle):
                    continue
                status = entry.get("status")
                GatewayModel.objects.update_or_create(
                    model_id=lifecycle.id,
                    defaults={
                        "status": status[:32] if isinstance(status, str) else "",
                        "deprecated_at": lifecycle.deprecated_at,
                        "shutdown_at": lifecycle.shutdown_at,
                        "replaced_by": lifecycle.replaced_by or "",
                        "refreshed_at": now,
                    },
                )
    return listed is not None and deprecations is not None


def _refresh_and_close(*, base_url: str, timeout: float) -> None:
    try:
        catalogue_refresh(base_url=base_url, timeout=timeout)
    except Exception:
        logger.exception("models refresh failed; the stored and built-in models stay in use")
    finally:
        connections.close_all()


def catalogue_refresh_soon() -> threading.Thread | None:
    """Start a background refresh when the stored facts are older than
    CHAT_MODELS_REFRESH_SECONDS; returns at once (the thread, or None when none was needed).
    A cache lease lets one refresh run at a time, and spaces out attempts at an unreachable
    gateway by the same interval."""
    interval = settings.CHAT_MODELS_REFRESH_SECONDS
    if demo_mode() or interval <= 0:
        return None
    newest = GatewayModel.objects.aggregate(newest=Max("refreshed_at"))["newest"]
    if newest is not None and timezone.now() - newest < datetime.timedelta(seconds=interval):
        return None
    if not cache.add(REFRESH_LEASE_KEY, "1", timeout=interval):
        return None
    thread = threading.Thread(
        target=_refresh_and_close,
        kwargs={
            "base_url": settings.AIMLAPI_BASE_URL,
            "timeout": settings.CHAT_MODELS_FETCH_TIMEOUT,
        },
        name="models-refresh",
        daemon=True,
    )
    thread.start()
    return thread


def dialect_remember(*, gateway: str, model_id: str, dialect: dict[str, Any]) -> None:
    """Keep the request dialect that worked for ``model_id`` at ``gateway``, so every server
    process sends the model's next turn straight in it."""
    ModelDialect.objects.update_or_create(
        gateway=gateway[:200], model_id=model_id[:100], defaults={"dialect": dialect}
    )


def reply_switch_model(*, reply_id: Any, on: datetime.date) -> str | None:
    """The gateway refused the reply's model as retired or unknown: send the reply to the
    model's replacement instead (once), with the same note a dated retirement gives. Returns
    the note, or None when there is nowhere to go (the error then stands)."""
    with transaction.atomic():
        reply = Message.objects.select_for_update().filter(id=reply_id).first()
        if reply is None or reply.model_note:
            return None
        current = selectors.catalogue_current()
        refused = current.profile(reply.model)
        successor = selectors.replacement_for(profile=refused, catalogue=current, on=on)
        if successor is None or successor.id == refused.id:
            return None
        if refused.retired_on(on):
            note = selectors.retired_note(retired=refused, successor=successor)
        else:
            note = (
                f"The gateway no longer offers {refused.display_name}; this reply is from "
                f"{successor.display_name}."
            )
        chosen = settings_from_params(reply.request_params, model=reply.model)
        params = chosen.fitted(successor).request_params(successor)
        if "reasoning_effort" not in reply.request_params:
            # A continuation never thinks; neither does its switched request.
            params.pop("reasoning_effort", None)
        reply.model, reply.request_params, reply.model_note = successor.id, params, note
        reply.request_notes = chosen.fitting_notes(successor)
        reply.model_changed = selectors.previous_model_of(parent=reply.parent) not in (
            "",
            successor.id,
        )
        reply.save(
            update_fields=[
                "model",
                "request_params",
                "model_note",
                "request_notes",
                "model_changed",
                "updated_at",
            ]
        )
        Conversation.objects.filter(id=reply.conversation_id, model=refused.id).update(
            model=successor.id
        )
    return note
