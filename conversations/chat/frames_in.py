"""Frames from the page, parsed once at the socket's edge into typed values.

Everything a frame carries is checked here, before any form, service or query sees it: its
size, that it is a JSON object, the action, the type of every field that action reads, and
that message ids are UUIDs. What passes is safe to hand on; what fails is a `FrameError`
whose text the user sees in the composer. Fields an action does not read (htmx's `HEADERS`,
say) are ignored.
"""

import json
import math
import re
import uuid
from dataclasses import dataclass
from typing import Any, Literal, cast

from django import forms
from django.conf import settings

from conversations.chat.forms import TurnSettingsForm

# Room for the message itself plus the controls and htmx's headers.
FRAME_OVERHEAD_CHARS = 16_384
CLIENT_TOKEN_MAX_CHARS = 64
# The longest id text looked at: a UUID in any of its spellings is shorter.
MESSAGE_ID_MAX_CHARS = 64
NOT_IN_CONVERSATION = "That message is not part of this conversation."
NOT_AN_UPLOAD = "That attachment is not one of your uploads."

# Neither SQLite (UTF-8) nor PostgreSQL text can hold a lone surrogate, and PostgreSQL cannot
# hold NUL: both would fail the save, so they are replaced before anything is written.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

BranchAction = Literal["regenerate", "continue", "edit", "switch"]
BRANCH_ACTIONS: frozenset[str] = frozenset({"regenerate", "continue", "edit", "switch"})


class FrameError(Exception):
    """A frame the socket cannot act on; the message is shown to the user."""


@dataclass(frozen=True, slots=True)
class SendFrame:
    message: str
    # The composer's controls, as form data for `TurnForm`: only those the frame carried.
    controls: dict[str, str]
    client_token: str
    # The user's uploads this message carries (ownership is checked when they are attached).
    attachment_ids: tuple[uuid.UUID, ...] = ()


@dataclass(frozen=True, slots=True)
class StopFrame:
    pass


@dataclass(frozen=True, slots=True)
class RetryFrame:
    message_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class BranchFrame:
    action: BranchAction
    message_id: uuid.UUID
    controls: dict[str, str]
    # Only an edit carries one.
    message: str | None
    # An edit's files the new version keeps; None keeps them all.
    keep_attachments: tuple[uuid.UUID, ...] | None = None


InboundFrame = SendFrame | StopFrame | RetryFrame | BranchFrame


def frame_parse(text_data: str | None) -> InboundFrame:
    """The typed frame in `text_data`, or FrameError saying what is wrong with it."""
    frame = _json_object(text_data)
    action = frame.get("action", "send")
    if not isinstance(action, str):
        raise FrameError("The action must be text.")
    if action == "send":
        return SendFrame(
            message=_message(frame),
            controls=_controls(frame),
            client_token=_client_token(frame),
            attachment_ids=_attachment_ids(frame.get("attachments")) or (),
        )
    if action == "stop":
        return StopFrame()
    if action == "retry":
        return RetryFrame(message_id=_message_id(frame))
    if action in BRANCH_ACTIONS:
        return BranchFrame(
            action=cast(BranchAction, action),
            message_id=_message_id(frame),
            # Paging to another version changes no settings.
            controls={} if action == "switch" else _controls(frame),
            message=_message(frame) if action == "edit" else None,
            keep_attachments=(
                _attachment_ids(frame.get("keep_attachments")) if action == "edit" else None
            ),
        )
    raise FrameError(f"Unknown action {action[:40]!r}.")


def _json_object(text_data: str | None) -> dict[str, Any]:
    if not isinstance(text_data, str):
        raise FrameError("Frames must be text (JSON).")
    if len(text_data) > settings.CHAT_MAX_MESSAGE_CHARS + FRAME_OVERHEAD_CHARS:
        raise FrameError(
            f"That message is too long: the limit is {settings.CHAT_MAX_MESSAGE_CHARS:,} "
            "characters. Nothing was sent."
        )
    try:
        frame = json.loads(text_data)
    # Deep nesting exhausts the decoder's recursion; over-long integers are a ValueError.
    except (ValueError, RecursionError) as exc:
        raise FrameError("The frame is not valid JSON.") from exc
    if not isinstance(frame, dict):
        raise FrameError("The frame must be a JSON object.")
    return frame


def _storable(text: str) -> str:
    return _UNSTORABLE.sub("\ufffd", text)


def _message(frame: dict[str, Any]) -> str:
    message = frame.get("message")
    if not isinstance(message, str):
        raise FrameError("The message must be text.")
    return _storable(message)


def _client_token(frame: dict[str, Any]) -> str:
    token = frame.get("client_token", "")
    if not isinstance(token, str) or len(token) > CLIENT_TOKEN_MAX_CHARS:
        raise FrameError("The frame's client token must be short text.")
    return _storable(token)


def _message_id(frame: dict[str, Any]) -> uuid.UUID:
    value = frame.get("message_id")
    if not isinstance(value, str) or len(value) > MESSAGE_ID_MAX_CHARS:
        raise FrameError(NOT_IN_CONVERSATION)
    try:
        return uuid.UUID(value)
    except ValueError as exc:
        raise FrameError(NOT_IN_CONVERSATION) from exc


def _attachment_ids(value: object) -> tuple[uuid.UUID, ...] | None:
    """Attachment ids: a list of ids, or one comma-separated string (the composer's hidden
    field); None when the frame carries none. Blank entries are skipped: the edit form sends
    an empty field next to its checkboxes so that no box ticked still means "keep none". At
    most a message's worth, each one a UUID."""
    if value is None:
        return None
    if isinstance(value, str):
        items: list[object] = [item for item in value.split(",") if item.strip()]
    elif isinstance(value, list):
        items = [item for item in value if not (isinstance(item, str) and not item.strip())]
    else:
        raise FrameError("The attachments must be a list of ids.")
    limit = settings.CHAT_ATTACHMENT_MAX_PER_MESSAGE
    if len(items) > limit:
        raise FrameError(f"A message can carry at most {limit} attachments.")
    ids: list[uuid.UUID] = []
    for item in items:
        if not isinstance(item, str) or len(item.strip()) > MESSAGE_ID_MAX_CHARS:
            raise FrameError(NOT_AN_UPLOAD)
        try:
            parsed = uuid.UUID(item.strip())
        except ValueError as exc:
            raise FrameError(NOT_AN_UPLOAD) from exc
        if parsed not in ids:
            ids.append(parsed)
    return tuple(ids)


def _finite_number(value: object) -> bool:
    # JSON's NaN and Infinity parse as floats; a bool is an int to Python but not a number here.
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _controls(frame: dict[str, Any]) -> dict[str, str]:
    """The composer's controls the frame carries, as text: numbers for the number fields,
    text for the others; any other type is refused, naming the control."""
    controls: dict[str, str] = {}
    for name, field in TurnSettingsForm.control_fields().items():
        if name not in frame:
            continue
        value = frame[name]
        # FloatField and DecimalField are IntegerFields too.
        numeric = isinstance(field, forms.IntegerField)
        if isinstance(value, str):
            controls[name] = _storable(value)
        elif numeric and _finite_number(value):
            controls[name] = str(value)
        else:
            label = field.label or name.replace("_", " ").capitalize()
            kind = "a number" if numeric else "text"
            raise FrameError(f"{label}: must be {kind}.")
    return controls
