"""Reads. Every function that takes an id from a client also takes the user it must belong to."""

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import connections
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from conversations.attachments import selectors as attachment_selectors
from conversations.catalogue.payload import turn_request
from conversations.catalogue.selectors import (
    Catalogue,
    messages_mark_context_start,
    replies_mark_model_changes,
    thread_in_context,
)
from conversations.chat.plain_text import markdown_plain
from conversations.gateway.payload import TurnRequest
from conversations.models import (
    Conversation,
    Message,
    MessageFeedback,
)
from conversations.ownership import owned_row_get


def conversation_get_for_user(
    *, conversation_id: uuid.UUID | str, user: User
) -> Conversation | None:
    """The conversation if it exists and belongs to the user, otherwise None (never a hint)."""
    return owned_row_get(
        Conversation.objects.all(), row_id=conversation_id, user=user, owner="owner"
    )


def conversation_list_for_user(*, user: User) -> QuerySet[Conversation]:
    return Conversation.objects.filter(owner=user).order_by("-updated_at")


def conversation_empty_for_user(*, user: User) -> Conversation | None:
    """The user's newest conversation without messages, reused so '/' doesn't pile up blanks
    (never an archived one: the user put it away)."""
    return (
        Conversation.objects.filter(owner=user, messages__isnull=True, archived_at__isnull=True)
        .order_by("-created_at")
        .first()
    )


def thread_path(*, conversation: Conversation) -> list[Message]:
    """Messages from the root to the active leaf, oldest first."""
    if conversation.active_leaf is None:
        return []
    return message_path(message=conversation.active_leaf)


def upstream_context(*, thread: Sequence[Message]) -> list[dict[str, Any]]:
    """The conversation as the model should see it: replies that failed before any text are
    left out, so a retried turn doesn't confuse the model with an empty assistant message.
    A user message with attachments becomes content parts (the files, then its text, if any:
    files may be sent without words)."""
    kept = [
        message
        for message in thread
        if (message.content or message.attachment_count)
        and message.status != Message.Status.STREAMING
    ]
    context = [{"role": message.role, "content": message.content} for message in kept]
    return attachment_selectors.context_with_attachments(messages=kept, context=context).messages


def streaming_reply_get(*, conversation_id: uuid.UUID) -> Message | None:
    return Message.objects.filter(
        conversation_id=conversation_id,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
    ).first()


def message_get_for_user(*, message_id: uuid.UUID | str, user: User) -> Message | None:
    messages = Message.objects.select_related("conversation")
    return owned_row_get(messages, row_id=message_id, user=user, owner="conversation__owner")


def message_path(*, message: Message) -> list[Message]:
    """Messages from the root to `message`, oldest first: the context of a turn."""
    return _ancestors(conversation_id=message.conversation_id, message_id=message.id)


def _ancestors(
    *, conversation_id: uuid.UUID, message_id: uuid.UUID, limit: int | None = None
) -> list[Message]:
    """`message_id` and its ancestors, at most `limit` messages in all, oldest first; nothing
    when the message is not in this conversation (the id may come from a client).

    One recursive statement: it reads only the rows on the path, one primary-key lookup per
    step, and sees one snapshot, so a tree changing under it cannot make it inconsistent. The
    conversation is checked outside the recursion: inside it, PostgreSQL without fresh
    statistics scanned the whole conversation at every step (2,000 messages: 0.8 s).
    """
    if limit is not None and limit < 1:
        return []
    manager = Message.objects
    connection = connections[manager.db]
    quote = connection.ops.quote_name
    meta = Message._meta
    conversation_field = meta.get_field("conversation")
    table = quote(meta.db_table)
    pk = quote(meta.pk.db_column or meta.pk.attname)
    parent = quote(meta.get_field("parent").column)
    conversation = quote(conversation_field.column)
    # Prepared by the fields themselves: SQLite stores UUIDs as 32-character hex, PostgreSQL
    # as uuid, and a raw query gets no conversion of its parameters.
    message_param = meta.pk.get_db_prep_value(message_id, connection)
    conversation_param = conversation_field.get_db_prep_value(conversation_id, connection)
    params: list[Any] = [message_param, conversation_param]
    depth_limit = ""
    if limit is not None:
        depth_limit = "WHERE ancestry.depth + 1 < %s"
        params.append(limit)
    params.append(conversation_param)
    # Only names from the model's own metadata are interpolated; values go in as parameters.
    sql = f"""
        WITH RECURSIVE ancestry (node_id, parent_id, depth) AS (
            SELECT m.{pk}, m.{parent}, 0
            FROM {table} m
            WHERE m.{pk} = %s AND m.{conversation} = %s
            UNION ALL
            SELECT m.{pk}, m.{parent}, ancestry.depth + 1
            FROM {table} m
            JOIN ancestry ON m.{pk} = ancestry.parent_id
            {depth_limit}
        )
        SELECT m.*
        FROM {table} m
        JOIN ancestry ON m.{pk} = ancestry.node_id
        WHERE m.{conversation} = %s
        ORDER BY ancestry.depth DESC
    """
    return list(manager.raw(sql, params))


@dataclass(frozen=True, slots=True)
class ContextTail:
    """What counting the next request's context needs of a branch, from its leaf back: the
    newest reply in upstream's view whose usage the gateway reported after the user last left
    turns out (None when there is none), and the lengths in characters of the messages after
    it, oldest first (of everything upstream sees when there is no such reply)."""

    measured_prompt_tokens: int | None
    measured_completion_tokens: int | None
    measured_length: int
    lengths: list[int]


def context_tail(*, conversation: Conversation) -> ContextTail:
    """One recursive statement that walks back from the leaf only as far as counting needs: to
    the newest measured reply, or to where the user chose upstream's view to start. It reads
    lengths, not text: reading every message of a long branch to count it was most of the
    page's time (2,000 messages: 200 of 275 ms)."""
    if conversation.active_leaf_id is None:
        return ContextTail(None, None, 0, [])
    manager = Message.objects
    connection = connections[manager.db]
    quote = connection.ops.quote_name
    meta = Message._meta
    column = {f.name: quote(f.column) for f in meta.concrete_fields if f.column is not None}
    table = quote(meta.db_table)
    pk, parent, in_conversation = column["id"], column["parent"], column["conversation"]
    measured = f"m.{column['role']} = %s AND m.{column['prompt_tokens']} IS NOT NULL"
    measured_params: list[Any] = [Message.Role.ASSISTANT.value]
    if conversation.context_trimmed_at is not None:
        # A count taken before the user left turns out still includes them.
        measured += f" AND m.{column['created_at']} > %s"
        measured_params.append(
            meta.get_field("created_at").get_db_prep_value(
                conversation.context_trimmed_at, connection
            )
        )
    stop, stop_params = f"({measured})", list(measured_params)
    if conversation.context_from_id is not None:
        stop += f" OR m.{pk} = %s"
        stop_params.append(meta.pk.get_db_prep_value(conversation.context_from_id, connection))
    conversation_param = meta.get_field("conversation").get_db_prep_value(
        conversation.id, connection
    )
    leaf_param = meta.pk.get_db_prep_value(conversation.active_leaf_id, connection)
    # Only names from the model's own metadata are interpolated; values go in as parameters.
    # The conversation is checked outside the recursion, as in `_ancestors`.
    sql = f"""
        WITH RECURSIVE ancestry (node_id, parent_id, depth, stop) AS (
            SELECT m.{pk}, m.{parent}, 0, ({stop})
            FROM {table} m
            WHERE m.{pk} = %s AND m.{in_conversation} = %s
            UNION ALL
            SELECT m.{pk}, m.{parent}, ancestry.depth + 1, ({stop})
            FROM {table} m
            JOIN ancestry ON m.{pk} = ancestry.parent_id
            WHERE NOT ancestry.stop
        )
        SELECT
            LENGTH(m.{column["content"]}),
            CASE WHEN {measured} THEN m.{column["prompt_tokens"]} END,
            m.{column["completion_tokens"]}
        FROM {table} m
        JOIN ancestry ON m.{pk} = ancestry.node_id
        WHERE m.{in_conversation} = %s
        ORDER BY ancestry.depth DESC
    """
    params = [
        *stop_params,
        leaf_param,
        conversation_param,
        *stop_params,
        *measured_params,
        conversation_param,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows: list[tuple[int | None, int | None, int | None]] = cursor.fetchall()
    # Only the oldest row can be a measured reply: the walk stops at the first one.
    if rows and rows[0][1] is not None:
        length, prompt_tokens, completion_tokens = rows[0]
        return ContextTail(prompt_tokens, completion_tokens, length or 0, _lengths(rows[1:]))
    return ContextTail(None, None, 0, _lengths(rows))


def _lengths(rows: Sequence[tuple[int | None, int | None, int | None]]) -> list[int]:
    return [length or 0 for length, _, _ in rows]


def reply_turn(
    *, reply: Message, current_catalogue: Catalogue | None = None
) -> tuple[TurnRequest, uuid.UUID]:
    """The turn for a saved reply, and its conversation's id. Given to the gateway client as is,
    it is built in the dialect that works for the model (negotiated once when refused).

    The parameters are the ones saved on the reply when the turn started, so what is stored is
    exactly what was asked for.
    """
    conversation = reply.conversation
    # From where the user chose to leave the oldest turns out, if they did.
    thread = thread_in_context(conversation=conversation, thread=message_path(message=reply)[:-1])
    context = context_with_continuations(messages=upstream_context(thread=thread))
    turn = turn_request(
        model_id=reply.model or settings.CHAT_MODEL,
        params=reply.request_params,
        messages=context,
        system_prompt=conversation.system_prompt,
        current_catalogue=current_catalogue,
    )
    return turn, conversation.id


def reply_request(*, reply: Message) -> tuple[dict[str, Any], uuid.UUID]:
    """The upstream payload for a saved reply (in the configured dialect), and its
    conversation's id."""
    turn, conversation_id = reply_turn(reply=reply)
    return turn.build(turn.starting_dialect, stream=True).body, conversation_id


# --- Export --------------------------------------------------------------------


def conversation_export_data(*, conversation: Conversation) -> dict[str, Any]:
    """The whole conversation as plain data: every message of every branch, with the ids
    needed to rebuild the tree, and the branch that was on screen."""
    feedback = {
        f.message_id: {"rating": f.rating, "comment": f.comment}
        for f in MessageFeedback.objects.filter(message__conversation=conversation)
    }
    messages = list(conversation.messages.order_by("created_at"))
    attachments = attachment_selectors.attachments_by_message(message_ids=[m.id for m in messages])
    return {
        "id": str(conversation.id),
        "title": conversation.title,
        "created_at": conversation.created_at.isoformat(),
        "updated_at": conversation.updated_at.isoformat(),
        "system_prompt": conversation.system_prompt,
        "active_leaf": str(conversation.active_leaf_id) if conversation.active_leaf_id else None,
        "messages": [
            {
                "id": str(m.id),
                "parent": str(m.parent_id) if m.parent_id else None,
                "role": m.role,
                "content": m.content,
                "reasoning": m.reasoning,
                "status": m.status,
                "finish_reason": m.finish_reason,
                "error": m.error,
                "refusal": m.refusal,
                "citations": m.citations,
                # The owner's thumbs and comment, or None.
                "feedback": feedback.get(m.id),
                "model": m.model,
                "request_params": m.request_params,
                # What the request could not carry as set, and the shape the gateway took.
                "request_notes": m.request_notes,
                "dialect": m.dialect,
                "usage": {
                    "prompt_tokens": m.prompt_tokens,
                    "completion_tokens": m.completion_tokens,
                    "reasoning_tokens": m.reasoning_tokens,
                    "cached_tokens": m.cached_tokens,
                    "cost_usd": str(m.cost_usd) if m.cost_usd is not None else None,
                },
                "time_to_first_token_ms": m.time_to_first_token_ms,
                "duration_ms": m.duration_ms,
                "created_at": m.created_at.isoformat(),
                "attachments": [
                    attachment_selectors.attachment_summary(attachment=attachment)
                    for attachment in attachments.get(m.id, [])
                ],
            }
            for m in messages
        ],
    }


def conversation_export_markdown(*, conversation: Conversation) -> str:
    """The branch on screen as a Markdown document a person can read or paste elsewhere."""
    lines = [f"# {conversation.title}", ""]
    lines.append(f"_Exported {timezone.now():%Y-%m-%d %H:%M} UTC from chatsite._")
    lines.append("")
    if conversation.system_prompt:
        lines += ["## System prompt", "", conversation.system_prompt, ""]
    thread = thread_path(conversation=conversation)
    attachments = attachment_selectors.attachments_by_message(message_ids=[m.id for m in thread])
    for message in thread:
        speaker = "You" if message.role == Message.Role.USER else "Claude"
        lines += [f"## {speaker}", ""]
        if attachments.get(message.id):
            names = ", ".join(f"`{a.filename}`" for a in attachments[message.id])
            lines += [f"_Attached: {names}_", ""]
        if message.reasoning:
            quoted = "\n".join(f"> {line}" for line in message.reasoning.splitlines())
            lines += ["> **Thinking**", ">", quoted, ""]
        lines += [message.content or "_(no text)_", ""]
        if message.status not in (Message.Status.COMPLETE, Message.Status.STREAMING):
            lines += [f"_({message.get_status_display()})_", ""]
    return "\n".join(lines).rstrip() + "\n"


# The workspace.

THREAD_WINDOW = 50
SEARCH_LIMIT = 20
SNIPPET_BEFORE, SNIPPET_AFTER = 40, 100


@dataclass(frozen=True, slots=True)
class Version:
    """Where a message sits among its versions (siblings of the same role), 1-based."""

    index: int
    count: int
    previous_id: uuid.UUID | None
    next_id: uuid.UUID | None


def messages_as_only_versions(*, messages: list[Message]) -> list[Message]:
    """Messages known to be their parent's only child of their role (a turn just started
    under a leaf): version 1 of 1, without asking the database."""
    for message in messages:
        message.version = Version(index=1, count=1, previous_id=None, next_id=None)
        message.user_feedback = None
    attachment_selectors.messages_with_attachments(messages=messages)
    return messages


@dataclass(frozen=True, slots=True)
class ThreadWindow:
    messages: list[Message]  # each carries a `version` attribute
    # The first message shown, when older ones on the path are left for scrolling up.
    older_than: uuid.UUID | None


def context_with_continuations(*, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A continued reply is stored as a chain of assistant messages; the model sees one. A
    trailing assistant message (a continuation's prefill) loses its trailing whitespace, which
    Anthropic refuses there."""
    merged: list[dict[str, Any]] = []
    for message in messages:
        if merged and message["role"] == "assistant" and merged[-1]["role"] == "assistant":
            merged[-1] = {
                "role": "assistant",
                "content": merged[-1]["content"] + message["content"],
            }
        else:
            merged.append(dict(message))
    if merged and merged[-1]["role"] == "assistant":
        merged[-1]["content"] = merged[-1]["content"].rstrip()
    return merged


def _version_of(
    *, message: Message, versions: dict[tuple[uuid.UUID | None, str], list[uuid.UUID]]
) -> Version:
    siblings = versions.get((message.parent_id, message.role)) or [message.id]
    index = siblings.index(message.id) if message.id in siblings else 0
    return Version(
        index=index + 1,
        count=len(siblings),
        previous_id=siblings[index - 1] if index > 0 else None,
        next_id=siblings[index + 1] if index + 1 < len(siblings) else None,
    )


def thread_window(
    *,
    conversation: Conversation,
    before: uuid.UUID | str | None = None,
    size: int = THREAD_WINDOW,
) -> ThreadWindow:
    """The last `size` messages of the branch on screen (or the `size` before `before`), each
    with its versions, so a long conversation renders no more than a window.

    Two queries whatever the conversation's length: the window's path and its versions.
    """
    empty = ThreadWindow(messages=[], older_than=None)
    if conversation.active_leaf_id is None:
        return empty
    if before is None:
        start, excluded = conversation.active_leaf_id, 0
    else:
        # `before` is the oldest message the client shows. The walk starts from it, so it need
        # only belong to this conversation: a tab still showing a branch switched away from
        # elsewhere pages back through that branch rather than getting nothing.
        try:
            start, excluded = uuid.UUID(str(before)), 1
        except ValueError:
            return empty
    # One message more than the window tells whether older ones remain.
    path = _ancestors(conversation_id=conversation.id, message_id=start, limit=excluded + size + 1)
    if excluded:
        if not path:
            return empty
        path.pop()
    has_older = len(path) > size
    messages = messages_with_versions(messages=path[max(0, len(path) - size) :])
    replies_mark_model_changes(messages=messages)
    messages_mark_context_start(conversation=conversation, messages=messages)
    return ThreadWindow(
        messages=messages, older_than=messages[0].id if has_older and messages else None
    )


# How far back a page opened at one message (a search result) may reach in one window.
THREAD_WINDOW_REACH = 500


def thread_window_reaching(*, conversation: Conversation, message_id: uuid.UUID) -> ThreadWindow:
    """The window on screen, reaching back far enough to hold `message_id` when it is on the
    branch shown and no more than THREAD_WINDOW_REACH messages back; otherwise the usual one."""
    leaf = conversation.active_leaf_id
    if leaf is None:
        return thread_window(conversation=conversation)
    path = _ancestors(conversation_id=conversation.id, message_id=leaf, limit=THREAD_WINDOW_REACH)
    ids = [message.id for message in path]
    if message_id not in ids:
        return thread_window(conversation=conversation)
    reach = len(ids) - ids.index(message_id)
    return thread_window(conversation=conversation, size=max(THREAD_WINDOW, reach))


def messages_with_versions(*, messages: list[Message]) -> list[Message]:
    """Give messages (of one conversation) their `version` and the owner's `user_feedback`
    (None when not rated): of a thread window, or rendered outside one (a frame). One query,
    for the siblings of just these messages (every message is among its own siblings, so the
    feedback rides along on a join)."""
    if not messages:
        return messages
    parent_ids = {message.parent_id for message in messages}
    versions: dict[tuple[uuid.UUID | None, str], list[uuid.UUID]] = defaultdict(list)
    # A parent's children are all in its conversation, so siblings are found by parent alone:
    # filtering by the conversation too would have PostgreSQL read the index entries of the
    # whole conversation. Roots have no parent and can only be found by conversation; written
    # as conversation AND (...), which PostgreSQL plans several times faster than an OR with
    # the conversation inside it.
    siblings = Q(parent_id__in=[p for p in parent_ids if p is not None])
    if None in parent_ids:
        siblings = (siblings | Q(parent__isnull=True)) & Q(
            conversation_id=messages[0].conversation_id
        )
    rows = (
        Message.objects.filter(siblings)
        .order_by("created_at")
        .values_list("id", "parent_id", "role", "feedback__rating", "feedback__comment")
    )
    feedback: dict[uuid.UUID, MessageFeedback] = {}
    for message_id, parent_id, role, rating, comment in rows:
        if parent_id in parent_ids:
            versions[(parent_id, role)].append(message_id)
        if rating:
            feedback[message_id] = MessageFeedback(
                message_id=message_id, rating=rating, comment=comment or ""
            )
    for reply in messages:
        reply.user_feedback = feedback.get(reply.id)
    for message in messages:
        message.version = _version_of(message=message, versions=versions)
    attachment_selectors.messages_with_attachments(messages=messages)
    return messages


@dataclass(frozen=True, slots=True)
class SearchHit:
    conversation: Conversation
    snippet: str
    # The message the snippet comes from, so the result can open the page at it.
    message_id: uuid.UUID | None = None


def conversation_search_for_user(
    *,
    user: User,
    query: str,
    limit: int = SEARCH_LIMIT,
    include_archived: bool = False,
) -> list[SearchHit]:
    """The user's own conversations whose title or any message text contains `query`;
    archived ones only when asked for."""
    query = " ".join(query.split())[:200]
    if not query or not user.is_authenticated:
        return []
    owned = Conversation.objects.filter(owner=user)
    if not include_archived:
        owned = owned.filter(archived_at__isnull=True)
    conversations = list(
        owned.filter(Q(title__icontains=query) | Q(messages__content__icontains=query))
        .distinct()
        .order_by("-updated_at")[:limit]
    )
    hits = []
    for conversation in conversations:
        snippet = ""
        message_id = None
        if query.lower() not in conversation.title.lower():
            match = (
                Message.objects.filter(conversation=conversation, content__icontains=query)
                .values_list("id", "content")
                .first()
            )
            if match is not None:
                message_id = match[0]
                snippet = _snippet(markdown_plain(match[1]), query)
        hits.append(SearchHit(conversation=conversation, snippet=snippet, message_id=message_id))
    return hits


def _snippet(text: str, query: str) -> str:
    at = text.lower().find(query.lower())
    if at < 0:
        return " ".join(text[:SNIPPET_AFTER].split())
    start = max(0, at - SNIPPET_BEFORE)
    end = at + len(query) + SNIPPET_AFTER
    text_part = " ".join(text[start:end].split())
    return ("…" if start else "") + text_part + ("…" if end < len(text) else "")


def conversation_sidebar_for_user(
    *, user: User, current_id: uuid.UUID | None, limit: int
) -> list[Conversation]:
    """The sidebar: conversations with at least one message, plus the one on screen (a blank
    'New chat' is listed only while it is open); pinned ones first, most recently pinned on top,
    then the rest by newest activity. Archived conversations are left out, even the one on
    screen (its page says it is archived)."""
    return list(
        Conversation.objects.filter(owner=user, archived_at__isnull=True)
        .filter(Q(active_leaf__isnull=False) | Q(id=current_id))
        .order_by(F("pinned_at").desc(nulls_last=True), "-updated_at")[:limit]
    )


@dataclass(frozen=True, slots=True)
class TitleRequest:
    title: str
    user_text: str
    reply_text: str


def title_request_for(*, conversation_id: uuid.UUID) -> TitleRequest | None:
    """What a title is made from: the first exchange on screen, if its reply completed."""
    conversation = Conversation.objects.filter(id=conversation_id).first()
    if conversation is None or conversation.active_leaf is None:
        return None
    path = message_path(message=conversation.active_leaf)
    if len(path) < 2 or path[1].status != Message.Status.COMPLETE or not path[1].content:
        return None
    return TitleRequest(
        title=conversation.title, user_text=path[0].content, reply_text=path[1].content
    )


# Organising and feedback.

ARCHIVED_LIST_SIZE = 200


def conversation_archived_for_user(
    *, user: User, limit: int = ARCHIVED_LIST_SIZE
) -> list[Conversation]:
    """The user's archived conversations, most recently archived first."""
    return list(
        Conversation.objects.filter(owner=user, archived_at__isnull=False).order_by("-archived_at")[
            :limit
        ]
    )


def messages_with_feedback(*, messages: list[Message]) -> list[Message]:
    """Give each message its `user_feedback` (a MessageFeedback or None), in one query."""
    reply_ids = [m.id for m in messages if m.role == Message.Role.ASSISTANT]
    given = (
        {f.message_id: f for f in MessageFeedback.objects.filter(message_id__in=reply_ids)}
        if reply_ids
        else {}
    )
    for message in messages:
        message.user_feedback = given.get(message.id)
    return messages


def feedback_for_user(*, message_id: uuid.UUID | str, user: User) -> Message | None:
    """The user's own message with its `user_feedback`, or None (never a hint)."""
    message = message_get_for_user(message_id=message_id, user=user)
    if message is None:
        return None
    return messages_with_feedback(messages=[message])[0]
