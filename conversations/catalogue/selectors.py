"""Reads: which models exist (built-ins, then the gateway's facts, then the operator's file),
which ones a user is offered, and where a turn goes on a given day."""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db.models import Q
from django.utils import timezone

from conversations.gateway.profiles import (
    BUILT_IN,
    DEMO_MODELS,
    KIND_CLAUDE_4,
    ModelFacts,
    ModelProfile,
    TurnSettings,
    apply_facts,
    entries_of,
    facts_from_entry,
    profile_index,
    profile_of_kind,
)
from conversations.models import (
    Conversation,
    GatewayModel,
    Message,
    ModelDialect,
    ModelOffer,
    UserPreferences,
)

logger = logging.getLogger(__name__)

# A chain of replacements longer than this is a loop in someone's data.
MAX_REPLACEMENT_HOPS = 5


def today() -> datetime.date:
    """The date retirement is judged by (tests inject theirs in its place)."""
    return timezone.localdate()


def demo_mode() -> bool:
    return not settings.AIMLAPI_API_KEY


@dataclass(frozen=True, slots=True)
class Catalogue:
    """Every known model in picker order, and each id and alias to its profile."""

    profiles: tuple[ModelProfile, ...]
    by_id: dict[str, ModelProfile]

    def get(self, model_id: str) -> ModelProfile | None:
        return self.by_id.get(model_id)

    def profile(self, model_id: str) -> ModelProfile:
        """The profile of `model_id`; an id nobody described is taken as a Claude 4 model, so
        the controls stay conservative rather than absent."""
        known = self.by_id.get(model_id)
        if known is not None:
            return known
        return profile_of_kind(kind=KIND_CLAUDE_4, id=model_id, display_name=model_id)


def _facts_from_gateway() -> list[ModelFacts]:
    facts = []
    for row in GatewayModel.objects.all():
        facts.append(
            ModelFacts(
                id=row.model_id,
                display_name=row.display_name or None,
                kind=row.kind or None,
                context_window=row.context_window,
                max_output_tokens=row.max_output_tokens,
                input_price_per_mtok=row.input_price_per_mtok,
                output_price_per_mtok=row.output_price_per_mtok,
                deprecated_at=row.deprecated_at,
                shutdown_at=row.shutdown_at,
                replaced_by=row.replaced_by or None,
            )
        )
    return facts


def operator_facts(*, path: str) -> list[ModelFacts]:
    """The operator's CHAT_MODELS_FILE; a missing or malformed file is logged and ignored, so a
    typo never takes the site down (the built-ins still answer)."""
    if not path:
        return []
    try:
        document: Any = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        logger.warning("CHAT_MODELS_FILE %s is unusable (%s); using the built-in models", path, exc)
        return []
    return [f for f in (facts_from_entry(e) for e in entries_of(document)) if f is not None]


def catalogue_current() -> Catalogue:
    """Built-ins (or the demo models), with the gateway's last facts and then the operator's
    laid over them. Reads only the database and a local file: never the network."""
    demo = demo_mode()
    profiles: dict[str, ModelProfile] = {p.id: p for p in (DEMO_MODELS if demo else BUILT_IN)}
    layers: list[list[ModelFacts]] = [] if demo else [_facts_from_gateway()]
    layers.append(operator_facts(path=settings.CHAT_MODELS_FILE))
    for layer in layers:
        index = profile_index(profiles.values())
        for facts in layer:
            known = index.get(facts.id)
            if known is None and facts.kind is None and "claude" not in facts.id.lower():
                # The gateway lists every vendor's models; only Claude (or an id mapped to a
                # kind) belongs in this app's picker.
                continue
            profiles[known.id if known is not None else facts.id] = apply_facts(known, facts)
    ordered = tuple(profiles.values())
    return Catalogue(profiles=ordered, by_id=profile_index(ordered))


def default_model_id(*, catalogue: Catalogue) -> str:
    """CHAT_MODEL, or the first model when it is unknown here (the demo models)."""
    known = catalogue.get(settings.CHAT_MODEL)
    if known is not None:
        return known.id
    return catalogue.profiles[0].id


def models_offered_for_user(
    *, user: User, catalogue: Catalogue, on: datetime.date
) -> list[ModelProfile]:
    """What the picker lists: staff's offers for the user's groups (everything when staff
    made no offers), without retired models."""
    offers = ModelOffer.objects.all()
    profiles = [p for p in catalogue.profiles if not p.retired_on(on)]
    if not offers.exists():
        return profiles
    group_ids = list(user.groups.values_list("id", flat=True))
    offered = set(
        offers.filter(Q(groups__isnull=True) | Q(groups__in=group_ids)).values_list(
            "model_id", flat=True
        )
    )
    return [p for p in profiles if offered.intersection(p.ids)]


def model_for_new_conversation(*, user: User, catalogue: Catalogue) -> str:
    preferences = UserPreferences.objects.filter(user=user).first()
    if preferences is not None and preferences.model:
        offered = models_offered_for_user(user=user, catalogue=catalogue, on=today())
        if any(preferences.model in p.ids for p in offered):
            return preferences.model
    return default_model_id(catalogue=catalogue)


def replacement_for(
    *, profile: ModelProfile, catalogue: Catalogue, on: datetime.date
) -> ModelProfile | None:
    """Where a retired model's turns go: its `replaced_by` (followed while that one is retired
    too), else the operator's CHAT_FALLBACK_MODEL, else the site's model."""
    current = profile
    for _ in range(MAX_REPLACEMENT_HOPS):
        successor_id = current.lifecycle.replaced_by
        if not successor_id:
            break
        current = catalogue.profile(successor_id)
        if not current.retired_on(on):
            return current
    for fallback_id in (settings.CHAT_FALLBACK_MODEL, settings.CHAT_MODEL):
        if fallback_id:
            fallback = catalogue.profile(fallback_id)
            if not fallback.retired_on(on) and fallback.id != profile.id:
                return fallback
    return None


def retired_note(*, retired: ModelProfile, successor: ModelProfile) -> str:
    shutdown = retired.lifecycle.shutdown_at
    when = f"on {shutdown.day} {shutdown:%b %Y}" if shutdown else ""
    return (
        f"{retired.display_name} was retired {when}; this reply is from {successor.display_name}."
    )


@dataclass(frozen=True, slots=True)
class TurnPlan:
    """Where a turn goes and exactly what it sends; `note` says why the model changed."""

    model: str
    params: dict[str, Any]
    note: str = ""
    # What the user set that the replacement does not take, in words (kept on the reply).
    notes: list[str] = field(default_factory=list)
    # The profile of `model`, when the plan was made from the catalogue.
    profile: ModelProfile | None = None


def turn_plan(
    *, settings: TurnSettings, chosen: str, catalogue: Catalogue, on: datetime.date
) -> TurnPlan:
    """A turn on a retired model goes to its replacement, with the user's settings fitted to
    what the replacement takes (refusing the turn would leave the conversation dead)."""
    profile = catalogue.profile(chosen)
    if profile.retired_on(on):
        successor = replacement_for(profile=profile, catalogue=catalogue, on=on)
        if successor is not None:
            return TurnPlan(
                model=successor.id,
                params=settings.fitted(successor).request_params(successor),
                note=retired_note(retired=profile, successor=successor),
                notes=settings.fitting_notes(successor),
                profile=successor,
            )
    return TurnPlan(model=chosen, params=settings.request_params(profile), profile=profile)


@dataclass(frozen=True, slots=True)
class RetirementNotice:
    model: ModelProfile
    shutdown_at: datetime.date
    successor: ModelProfile | None
    retired: bool

    @property
    def text(self) -> str:
        when = f"{self.shutdown_at.day} {self.shutdown_at:%b %Y}"
        if self.retired:
            after = (
                f"; your next reply will come from {self.successor.display_name}"
                if self.successor
                else ""
            )
            return f"{self.model.display_name} was retired on {when}{after}."
        after = (
            f"; from then on replies come from {self.successor.display_name}"
            if self.successor
            else ""
        )
        return f"{self.model.display_name} retires on {when}{after}."


def retirement_notice_for(
    *, model_id: str, catalogue: Catalogue, on: datetime.date
) -> RetirementNotice | None:
    """The page's notice: from CHAT_RETIREMENT_NOTICE_DAYS before a model's shutdown date, and
    after it for a conversation still on the retired model."""
    profile = catalogue.profile(model_id)
    shutdown = profile.lifecycle.shutdown_at
    if shutdown is None:
        return None
    retired = profile.retired_on(on)
    if not retired and not profile.retiring_soon(
        on, notice_days=settings.CHAT_RETIREMENT_NOTICE_DAYS
    ):
        return None
    successor = replacement_for(profile=profile, catalogue=catalogue, on=max(on, shutdown))
    return RetirementNotice(
        model=profile, shutdown_at=shutdown, successor=successor, retired=retired
    )


def retiring_model_ids(*, catalogue: Catalogue, on: datetime.date) -> list[str]:
    """Every id (aliases too) of the models that are retired or within the notice period."""
    days = settings.CHAT_RETIREMENT_NOTICE_DAYS
    return [
        model_id
        for profile in catalogue.profiles
        if profile.retired_on(on) or profile.retiring_soon(on, notice_days=days)
        for model_id in profile.ids
    ]


def replies_mark_model_changes(*, messages: list[Any]) -> list[Any]:
    """Give each reply whose model changed the model's name (`model_label`) for the
    transcript; a reply rendered alone shows the id instead."""
    changed = [m for m in messages if getattr(m, "model_changed", False)]
    if changed:
        current = catalogue_current()
        for message in changed:
            message.model_label = current.profile(message.model).display_name
    return messages


def previous_model_of(*, parent: Message | None) -> str:
    """The model of the reply before a new one on its branch ("" when there is none): the
    parent itself when it is a reply (a continuation), else the reply the user answered."""
    while parent is not None:
        if parent.role == Message.Role.ASSISTANT and parent.model:
            return parent.model
        if parent.role == Message.Role.ASSISTANT:
            return ""
        parent = parent.parent
    return ""


@dataclass(frozen=True, slots=True)
class ModelChoice:
    """What a conversation's picker offers and validates against."""

    catalogue: Catalogue
    offered: list[ModelProfile]
    # The conversation's model (kept selectable even when no longer offered or retired).
    current: str

    @property
    def allowed_ids(self) -> set[str]:
        ids = {model_id for profile in self.offered for model_id in profile.ids}
        if self.current:
            ids.add(self.current)
        return ids

    @property
    def current_profile(self) -> ModelProfile:
        return self.catalogue.profile(self.current)

    def picker(self) -> list[ModelProfile]:
        """The picker's options: the offered models, plus the current one when it is not."""
        if self.current and not any(self.current in p.ids for p in self.offered):
            return [self.current_profile, *self.offered]
        return self.offered


def model_choice_for_user(
    *, user: User, current: str = "", current_catalogue: Catalogue | None = None
) -> ModelChoice:
    """`current_catalogue`: the one the caller has read already (read here when None)."""
    catalogue = current_catalogue or catalogue_current()
    offered = models_offered_for_user(user=user, catalogue=catalogue, on=today())
    if not current:
        current = model_for_new_conversation(user=user, catalogue=catalogue)
    return ModelChoice(catalogue=catalogue, offered=offered, current=current)


def thread_in_context(*, conversation: Conversation, thread: Sequence[Message]) -> list[Message]:
    """The part of a thread upstream sees: from the message the user chose to start from, when
    they left the oldest turns out and that message is on this branch."""
    start = conversation.context_from_id
    if start is None:
        return list(thread)
    for index, message in enumerate(thread):
        if message.id == start:
            return list(thread[index:])
    return list(thread)


def messages_mark_context_start(*, conversation: Conversation, messages: list[Any]) -> None:
    """The transcript's note where upstream's view of the conversation starts."""
    if conversation.context_from_id is None:
        return
    for message in messages:
        if message.id == conversation.context_from_id:
            message.context_starts_here = True


def model_in_service(*, model_id: str) -> str:
    """`model_id`, or its replacement once it is retired: for the app's own small requests
    (titles), which have no reply to carry a note."""
    current = catalogue_current()
    profile = current.profile(model_id)
    if not profile.retired_on(today()):
        return model_id
    successor = replacement_for(profile=profile, catalogue=current, on=today())
    return successor.id if successor is not None else model_id


def dialect_remembered(*, gateway: str, model_id: str) -> object | None:
    """The stored request dialect that worked for ``model_id`` at ``gateway`` (as stored: the
    caller validates it), or None."""
    return (
        ModelDialect.objects.filter(gateway=gateway[:200], model_id=model_id[:100])
        .values_list("dialect", flat=True)
        .first()
    )
