"""Small builders for conversation trees, through the same services the app uses."""

from typing import Any

from conversations.catalogue.selectors import Catalogue, ModelChoice
from conversations.chat import services
from conversations.gateway.profiles import BUILT_IN, profile_index
from conversations.models import Conversation, Message

MODEL = "anthropic/claude-sonnet-4.5"

# The turn controls as the page's form posts them, at their defaults.
CONTROLS = {
    "sampling": "default",
    "temperature": "1",
    "top_p": "1",
    "reasoning_effort": "off",
    "max_tokens": "1000",
}


def turn_settings(**overrides: Any) -> services.TurnSettings:
    values: dict[str, Any] = {
        "sampling": "default",
        "temperature": 1.0,
        "top_p": 1.0,
        "reasoning_effort": "off",
        "max_tokens": 1000,
    }
    values.update(overrides)
    return services.TurnSettings(**values)


def builtin_choice(current: str = MODEL) -> ModelChoice:
    """The picker as it is with the built-in profiles only, every one offered."""
    catalogue = Catalogue(profiles=BUILT_IN, by_id=profile_index(BUILT_IN))
    return ModelChoice(catalogue=catalogue, offered=list(BUILT_IN), current=current)


def finish(reply: Message, content: str, **outcome: Any) -> Message:
    values: dict[str, Any] = {"status": Message.Status.COMPLETE, "finish_reason": "stop"}
    values.update(outcome)
    services.reply_finish(
        message_id=reply.id, outcome=services.ReplyOutcome(content=content, **values)
    )
    reply.refresh_from_db()
    return reply


def exchange(
    conversation: Conversation, question: str, answer: str, **outcome: Any
) -> tuple[Message, Message]:
    """A user message and its finished reply, at the end of the branch on screen."""
    started = services.turn_start(
        conversation_id=conversation.id,
        owner=conversation.owner,
        content=question,
        settings=turn_settings(),
        model=MODEL,
    )
    asked, reply = started.user_message, started.reply
    return asked, finish(reply, answer, **outcome)


def regenerated(conversation: Conversation, reply: Message, content: str) -> Message:
    """A finished new version of `reply`, now the branch on screen."""
    return finish(
        services.reply_redo(
            how=services.Redo.REGENERATE,
            conversation_id=conversation.id,
            owner=conversation.owner,
            reply_id=reply.id,
            settings=turn_settings(),
            model=MODEL,
        ),
        content,
    )


def turn_with_attachments(
    conversation: Conversation, text: str, attachments: list[Any], *, model: str = MODEL
) -> services.StartedTurn:
    """A turn whose user message carries these uploads, saved the way the socket saves one."""
    return services.turn_start(
        conversation_id=conversation.id,
        owner=conversation.owner,
        content=text,
        settings=turn_settings(model=model),
        model=model,
        attachment_ids=[a.id for a in attachments],
    )
