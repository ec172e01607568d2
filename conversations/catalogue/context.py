"""How much of the model's context a conversation's next turn uses, and what to do when it
would not fit: continue from a summary in a new conversation, or leave the oldest turns out
(said in the transcript). History is never dropped without the user choosing it."""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from django.contrib.auth.models import User
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone

from conversations.accounts.limits import CHARS_PER_TOKEN_ESTIMATE, files_tokens_estimate
from conversations.attachments.models import Attachment
from conversations.attachments.selectors import attachments_for_user
from conversations.catalogue import selectors as catalogue
from conversations.catalogue.payload import turn_request
from conversations.catalogue.selectors import thread_in_context
from conversations.chat.selectors import context_tail, thread_path
from conversations.gateway.payload import TurnRequest
from conversations.gateway.profiles import ModelProfile
from conversations.models import Conversation, Message

# Room the summary request leaves for the model's answer.
SUMMARY_MAX_TOKENS = 2000
# Of the conversation, what the summary request may quote (the newest part when longer).
SUMMARY_SOURCE_CHARS = 400_000
SUMMARY_INSTRUCTION = (
    "Summarise the conversation below so that it can continue in a new conversation: the "
    "user's goals, the facts and decisions so far, open questions, and anything the user asked "
    "to keep. Write it as notes addressed to the assistant, in the conversation's language."
)
SUMMARY_NOTE = "Summary of an earlier conversation, to continue from:"


def estimate_tokens(text: str) -> int:
    return length_tokens(len(text))


def length_tokens(length: int) -> int:
    """`estimate_tokens` of a text of `length` characters."""
    return math.ceil(length / CHARS_PER_TOKEN_ESTIMATE)


def attachments_tokens(*, attachments: Sequence[Attachment]) -> int:
    """What files add to a request as Claude counts them (images and PDF pages by the same
    estimate as a stopped reply's usage; a text file by its length, as the text it is sent as)."""
    images = sum(a.kind == Attachment.Kind.IMAGE for a in attachments)
    pages = sum(max(1, a.page_count or 0) for a in attachments if a.kind == Attachment.Kind.PDF)
    text_bytes = sum(a.size for a in attachments if a.kind == Attachment.Kind.TEXT)
    return files_tokens_estimate(images=images, pdf_pages=pages) + math.ceil(
        text_bytes / CHARS_PER_TOKEN_ESTIMATE
    )


@dataclass(frozen=True, slots=True)
class ContextUsage:
    # Tokens the next request holds before the new message: measured (the last reply's prompt
    # and completion) where possible, estimated for the rest.
    used: int
    window: int
    max_output: int

    def fits(self, *, new_text: str, max_tokens: int, new_files_tokens: int = 0) -> bool:
        """Claude refuses a request whose prompt plus max_tokens exceeds its window; the new
        message's files are part of that prompt."""
        new = estimate_tokens(new_text) + new_files_tokens
        return self.used + new + max_tokens <= self.window

    @property
    def label(self) -> str:
        return f"{_short(self.used)} of {_short(self.window)}"


def _short(tokens: int) -> str:
    if tokens >= 1_000_000:
        return f"{tokens / 1_000_000:.3g}M"
    if tokens >= 1000:
        return f"{round(tokens / 1000)}k"
    return str(tokens)


def _thread(conversation: Conversation) -> list[Message]:
    return thread_in_context(
        conversation=conversation, thread=thread_path(conversation=conversation)
    )


def context_usage(*, conversation: Conversation, profile: ModelProfile) -> ContextUsage:
    tail = context_tail(conversation=conversation)
    if tail.measured_prompt_tokens is None:
        used = estimate_tokens(conversation.system_prompt)
    else:
        # The gateway's count of the newest reply's request and answer (the system prompt is in
        # it), then an estimate of what came after.
        used = tail.measured_prompt_tokens + (
            tail.measured_completion_tokens
            if tail.measured_completion_tokens is not None
            else length_tokens(tail.measured_length)
        )
    used += sum(length_tokens(length) for length in tail.lengths)
    return ContextUsage(
        used=used, window=profile.context_window, max_output=profile.max_output_tokens
    )


def context_usage_for(
    *,
    conversation: Conversation,
    model: str = "",
    current_catalogue: catalogue.Catalogue | None = None,
) -> ContextUsage:
    """`current_catalogue`: the one the caller has read already (read here when None)."""
    current = current_catalogue or catalogue.catalogue_current()
    chosen = model or conversation.model or catalogue.default_model_id(catalogue=current)
    return context_usage(conversation=conversation, profile=current.profile(chosen))


@dataclass(frozen=True, slots=True)
class TrimResult:
    left_out: int
    kept_from: Message | None


def context_trim(
    *, conversation_id: uuid.UUID, owner: User, new_text: str, max_tokens: int
) -> TrimResult:
    """Leave out the oldest whole turns (a user message and what follows it) until the next
    turn fits, never the newest one; the transcript marks where upstream's view starts."""
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(id=conversation_id, owner=owner)
        current = catalogue.catalogue_current()
        profile = current.profile(
            conversation.model or catalogue.default_model_id(catalogue=current)
        )
        usage = context_usage(conversation=conversation, profile=profile)
        thread = _thread(conversation)
        sizes = [estimate_tokens(m.content) for m in thread]
        estimated = sum(sizes) + estimate_tokens(conversation.system_prompt)
        # The gateway's count beats the estimate: scale the estimate up to it.
        scale = max(1.0, usage.used / estimated) if estimated else 1.0
        excess = usage.used + estimate_tokens(new_text) + max_tokens - usage.window
        starts = [i for i, m in enumerate(thread) if m.role == Message.Role.USER]
        keep_from = 0
        for start in starts[1:]:
            if excess <= 0:
                break
            excess -= round(scale * sum(sizes[keep_from:start]))
            keep_from = start
        if keep_from == 0:
            return TrimResult(left_out=0, kept_from=None)
        kept = thread[keep_from]
        conversation.context_from = kept
        conversation.context_trimmed_at = timezone.now()
        conversation.save(update_fields=["context_from", "context_trimmed_at"])
        full = thread_path(conversation=conversation)
        return TrimResult(left_out=[m.id for m in full].index(kept.id), kept_from=kept)


def summary_request(*, conversation: Conversation) -> TurnRequest:
    """The non-streaming request that asks the conversation's model for a summary of it."""
    lines = [
        f"{'User' if m.role == Message.Role.USER else 'Assistant'}: {m.content}"
        for m in thread_path(conversation=conversation)
        if m.content
    ]
    source = "\n\n".join(lines)[-SUMMARY_SOURCE_CHARS:]
    current = catalogue.catalogue_current()
    chosen = conversation.model or catalogue.default_model_id(catalogue=current)
    return turn_request(
        model_id=current.profile(chosen).id,
        params={"max_tokens": SUMMARY_MAX_TOKENS},
        messages=[{"role": "user", "content": source}],
        system_prompt=SUMMARY_INSTRUCTION,
    )


def conversation_create_from_summary(
    *, conversation_id: uuid.UUID, owner: User, summary: str
) -> Conversation:
    """A new conversation on the same model and settings, starting from the (user-edited)
    summary, kept in its system prompt where the user can read and change it."""
    source = Conversation.objects.get(id=conversation_id, owner=owner)
    system_prompt = f"{source.system_prompt}\n\n" if source.system_prompt.strip() else ""
    return Conversation.objects.create(
        owner=owner,
        title=f"{source.title} (continued)"[: Conversation._meta.get_field("title").max_length],
        **{
            **source.settings_values(),
            "system_prompt": f"{system_prompt}{SUMMARY_NOTE}\n{summary.strip()}",
        },
        stop_sequences=source.stop_sequences,
    )


def overflow_reason(*, usage: ContextUsage) -> str:
    return (
        f"This conversation no longer fits in the model's context ({usage.label} tokens before "
        "your message). Continue in a new conversation from a summary, or leave the oldest "
        "turns out."
    )


def context_offers_needed(
    *,
    conversation: Conversation,
    owner: User,
    new_text: str,
    max_tokens: int,
    model: str,
    attachment_ids: Sequence[uuid.UUID] = (),
    current_catalogue: catalogue.Catalogue | None = None,
) -> ContextUsage | None:
    """The usage when the next turn (its words and the files attached to it) would not fit
    (the user is then offered the two ways on), None when it fits."""
    usage = context_usage_for(
        conversation=conversation, model=model, current_catalogue=current_catalogue
    )
    attached = attachments_for_user(attachment_ids=attachment_ids, user=owner)
    files_tokens = attachments_tokens(attachments=attached)
    if usage.fits(new_text=new_text, max_tokens=max_tokens, new_files_tokens=files_tokens):
        return None
    return usage


def context_offers_frame(*, conversation_id: uuid.UUID, usage: ContextUsage) -> str:
    """The two ways on, swapped into the page in place of the turn that would not fit."""
    html = render_to_string(
        "chat/_context_offers.html",
        {"conversation": {"id": conversation_id}, "reason": overflow_reason(usage=usage)},
    )
    return html.replace(
        '<div id="context-offers"', '<div hx-swap-oob="true" id="context-offers"', 1
    )
