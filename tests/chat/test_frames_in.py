"""Frames from the page are parsed and checked in one place: every bad frame is answered with
an error frame, the socket stays open, and nothing is written or sent upstream."""

import json
import logging
import uuid
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from conversations.chat import frames_in
from conversations.chat.forms import TurnSettingsForm
from conversations.chat.services import conversation_create
from conversations.models import Conversation, Message
from conversations.realtime import generation
from tests.support.factories import exchange
from tests.support.sockets import (
    COMPLETE,
    RECEIVE_TIMEOUT,
    SEND,
    communicator_for,
    receive_until,
    wait_generations,
)
from tests.support.strategies import JSON_VALUES
from tests.support.upstream_server import FakeUpstream

CONTROLS = {k: v for k, v in SEND.items() if k not in ("action", "message")}
NOT_UUIDS = ["not-a-uuid", "1", "", " ", "' OR 1=1 --", "0" * 33, "g" * 32, "\x00", "x" * 5000]
HUGE = "h" * 200_000
# Wrong in type (or hostile in value) for any field a frame may carry.
WRONG_VALUES: list[Any] = [
    None,
    True,
    False,
    -1,
    1.5e308,
    10**40,
    [],
    ["x"],
    {},
    {"a": {"b": [1, {"c": None}]}},
    HUGE,
]


# The parser on its own.


def test_parse_gives_typed_frames() -> None:
    message_id = uuid.uuid4()
    frame = frames_in.frame_parse(
        json.dumps({**SEND, "client_token": "t1", "HEADERS": {"HX-Request": "true"}})
    )
    assert isinstance(frame, frames_in.SendFrame)
    assert frame.message == "Hello there"
    assert frame.client_token == "t1"
    assert frame.controls == {k: str(v) for k, v in CONTROLS.items()}

    edit = frames_in.frame_parse(
        json.dumps({**CONTROLS, "action": "edit", "message_id": str(message_id), "message": "m"})
    )
    assert isinstance(edit, frames_in.BranchFrame)
    assert edit.message_id == message_id and edit.message == "m"

    assert edit.keep_attachments is None

    assert isinstance(frames_in.frame_parse('{"action": "stop"}'), frames_in.StopFrame)
    retry = frames_in.frame_parse(json.dumps({"action": "retry", "message_id": str(message_id)}))
    assert retry == frames_in.RetryFrame(message_id=message_id)


def _edit_keeping(keep: Any) -> frames_in.BranchFrame:
    raw = {"action": "edit", "message_id": str(uuid.uuid4()), "message": "m"}
    frame = frames_in.frame_parse(json.dumps({**raw, "keep_attachments": keep}))
    assert isinstance(frame, frames_in.BranchFrame)
    return frame


def test_edit_form_kept_files_parse_as_the_ticked_ids() -> None:
    # The edit form sends an empty field beside its checkboxes: htmx gives "" with none ticked
    # and a list with the empty field first otherwise.
    first, second = uuid.uuid4(), uuid.uuid4()
    assert _edit_keeping("").keep_attachments == ()
    assert _edit_keeping(["", str(first)]).keep_attachments == (first,)
    assert _edit_keeping(["", str(first), str(second)]).keep_attachments == (first, second)
    assert _edit_keeping([str(second), " "]).keep_attachments == (second,)


@pytest.mark.parametrize("keep", [["", "x"], ["", 1], [None], "x,", ["", []]])
def test_edit_kept_files_that_are_not_ids_are_refused(keep: Any) -> None:
    with pytest.raises(frames_in.FrameError):
        _edit_keeping(keep)


@pytest.mark.parametrize("message_id", [*NOT_UUIDS, *WRONG_VALUES])
@pytest.mark.parametrize("action", ["retry", "regenerate", "continue", "edit", "switch"])
def test_parse_refuses_ids_that_are_not_uuids(action: str, message_id: Any) -> None:
    raw = json.dumps({**CONTROLS, "action": action, "message": "m", "message_id": message_id})
    with pytest.raises(frames_in.FrameError):
        frames_in.frame_parse(raw)


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "",
        "[" * 50_000,
        '{"a":' * 30_000,
        "null",
        "[]",
        '"text"',
        "1e999",
        "{" + "9" * 5000 + "}",
        '{"action": ["send"]}',
        '{"action": "__init__"}',
        '{"message": "x", "temperature": NaN}',
    ],
)
def test_parse_refuses_frames_that_are_not_well_formed_objects(raw: str | None) -> None:
    with pytest.raises(frames_in.FrameError):
        frames_in.frame_parse(raw)


def test_lone_surrogates_and_nul_are_replaced_in_every_string() -> None:
    raw = json.dumps({**SEND, "message": "a\ud83db\x00c", "system_prompt": "\udc00"})
    frame = frames_in.frame_parse(raw)
    assert isinstance(frame, frames_in.SendFrame)
    assert frame.message == "a\ufffdb\ufffdc"
    assert frame.controls["system_prompt"] == "\ufffd"
    # A pair escaped in JSON is one character, kept as it is.
    assert frames_in.frame_parse(json.dumps({**SEND, "message": "\U0001f600"})).message == "😀"


# Through the socket.


async def _conversation_with_stopped_reply(user: Any) -> tuple[Conversation, Message, Message]:
    conversation = await database_sync_to_async(conversation_create)(owner=user)
    asked, reply = await database_sync_to_async(exchange)(
        conversation, "Hi", "Partial", status=Message.Status.STOPPED
    )
    return conversation, asked, reply


def _valid_frames(asked: Message, reply: Message) -> dict[str, dict[str, Any]]:
    """One frame per action that the app would act on; the test spoils one field at a time."""
    return {
        "send": {**SEND, "client_token": "tok"},
        "retry": {"action": "retry", "message_id": str(reply.id)},
        "regenerate": {**CONTROLS, "action": "regenerate", "message_id": str(reply.id)},
        "continue": {**CONTROLS, "action": "continue", "message_id": str(reply.id)},
        "edit": {**CONTROLS, "action": "edit", "message_id": str(asked.id), "message": "Again"},
        "switch": {"action": "switch", "message_id": str(reply.id)},
    }


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("action", ["retry", "regenerate", "continue", "edit", "switch"])
async def test_non_uuid_message_id_answers_an_error_and_keeps_the_socket(
    upstream: FakeUpstream, user: Any, action: str, caplog: pytest.LogCaptureFixture
) -> None:
    conversation, asked, reply = await _conversation_with_stopped_reply(user)
    comm = communicator_for(user, conversation)
    assert (await comm.connect(timeout=RECEIVE_TIMEOUT))[0]
    await receive_until(comm, 'hx-swap-oob="true"')

    for bad in NOT_UUIDS:
        frame = {**_valid_frames(asked, reply)[action], "message_id": bad}
        await comm.send_to(text_data=json.dumps(frame))
        answer = await receive_until(comm, "composer-error")
        assert "not part of this conversation" in answer, (bad, answer)

    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert upstream.requests == []
    await comm.send_to(text_data=json.dumps({**SEND, "message": "Still here?"}))
    await receive_until(comm, COMPLETE)
    await wait_generations()
    await comm.disconnect(timeout=RECEIVE_TIMEOUT)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_every_action_with_every_wrong_value_of_every_field_answers_an_error(
    upstream: FakeUpstream, user: Any, make_user: Any, caplog: pytest.LogCaptureFixture
) -> None:
    conversation, asked, reply = await _conversation_with_stopped_reply(user)
    bob = await database_sync_to_async(make_user)("bob")
    _, foreign_asked, foreign_reply = await _conversation_with_stopped_reply(bob)
    before = await Message.objects.filter(conversation=conversation).acount()
    comm = communicator_for(user, conversation)
    assert (await comm.connect(timeout=RECEIVE_TIMEOUT))[0]
    await receive_until(comm, 'hx-swap-oob="true"')

    answered = 0
    for action, valid in _valid_frames(asked, reply).items():
        reads_controls = action not in ("retry", "switch")
        for field in [*valid, *(TurnSettingsForm.control_fields() if reads_controls else ())]:
            if field == "action":
                continue
            values = list(WRONG_VALUES)
            if field == "message_id":
                values += [*NOT_UUIDS, str(foreign_asked.id), str(foreign_reply.id)]
            for value in values:
                await comm.send_to(text_data=json.dumps({**valid, field: value}))
                answer = await receive_until(comm, "composer-error")
                assert 'id="composer-error"' in answer
                assert "composer-ack" not in answer, (action, field, value)
                answered += 1

    assert answered > 500
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert await Message.objects.filter(conversation=conversation).acount() == before
    assert upstream.requests == []
    await comm.send_to(text_data=json.dumps({**SEND, "message": "Still here?"}))
    await receive_until(comm, COMPLETE)
    await wait_generations()
    await comm.disconnect(timeout=RECEIVE_TIMEOUT)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_deeply_nested_json_answers_an_error_and_keeps_the_socket(
    upstream: FakeUpstream, user: Any
) -> None:
    conversation = await database_sync_to_async(conversation_create)(owner=user)
    comm = communicator_for(user, conversation)
    assert (await comm.connect(timeout=RECEIVE_TIMEOUT))[0]

    await comm.send_to(text_data="[" * 50_000)
    assert "not valid JSON" in await receive_until(comm, "composer-error")
    await comm.send_to(text_data=json.dumps(SEND))
    await receive_until(comm, COMPLETE)
    await wait_generations()
    await comm.disconnect(timeout=RECEIVE_TIMEOUT)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_nul_and_lone_surrogates_in_a_message_are_saved_replaced(
    upstream: FakeUpstream, user: Any
) -> None:
    conversation = await database_sync_to_async(conversation_create)(owner=user)
    comm = communicator_for(user, conversation)
    assert (await comm.connect(timeout=RECEIVE_TIMEOUT))[0]

    await comm.send_to(text_data=json.dumps({**SEND, "message": "a\x00b\ud800c"}))
    await receive_until(comm, COMPLETE)
    await wait_generations()

    asked = await Message.objects.aget(conversation=conversation, role=Message.Role.USER)
    assert asked.content == "a\ufffdb\ufffdc"
    await comm.disconnect(timeout=RECEIVE_TIMEOUT)


# Fuzzing: every action, ids of every shape, nested values in every field.

UUID_LIKE = (
    st.uuids().map(str)
    | st.uuids().map(lambda u: u.hex)
    | st.uuids().map(lambda u: str(u).upper())
    | st.text(alphabet="0123456789abcdef-", max_size=40)
    | st.text(max_size=40)
)
ANY_ACTION = st.sampled_from(
    ["send", "stop", "retry", "regenerate", "continue", "edit", "switch", "dance", ""]
)
FIELD_NAMES = st.sampled_from(
    ["message", "message_id", "client_token", *TurnSettingsForm.control_fields(), "HEADERS"]
)
FIELD_VALUES = JSON_VALUES | UUID_LIKE | st.just(HUGE[:120_000])
HOSTILE_FRAMES = st.fixed_dictionaries(
    {"action": ANY_ACTION, "message_id": UUID_LIKE | JSON_VALUES}
).flatmap(
    lambda base: st.dictionaries(FIELD_NAMES, FIELD_VALUES, max_size=5).map(
        lambda extra: {**CONTROLS, "message": "m", **base, **extra}
    )
)


@pytest.mark.django_db(transaction=True)
@hypothesis_settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(frames=st.lists(HOSTILE_FRAMES, min_size=1, max_size=5))
def test_fuzzed_ids_and_nested_values_never_break_the_socket(
    upstream: FakeUpstream, user: Any, frames: list[dict[str, Any]]
) -> None:
    async def run() -> None:
        conversation = await database_sync_to_async(conversation_create)(owner=user)
        comm = communicator_for(user, conversation)
        assert (await comm.connect(timeout=RECEIVE_TIMEOUT))[0]
        for index, frame in enumerate(frames):
            await comm.send_to(text_data=json.dumps(frame))
            await comm.send_to(text_data=json.dumps({"action": f"sentinel-{index}"}))
            await receive_until(comm, f"sentinel-{index}")
        await wait_generations()
        await comm.disconnect(timeout=RECEIVE_TIMEOUT)
        replies = [
            m
            async for m in Message.objects.filter(
                conversation=conversation, role=Message.Role.ASSISTANT
            )
        ]
        assert all(r.status != Message.Status.STREAMING for r in replies)

    generation._client = None
    async_to_sync(run)()
