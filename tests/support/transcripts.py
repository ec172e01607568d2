"""Builders for conversations with finished turns, shared by the sharing and admin tests."""

from decimal import Decimal

from conversations.chat.rendering import markdown_to_html
from conversations.models import Conversation, Message, UsageRecord


def add_turn(
    conversation: Conversation, question: str, answer: str, *, reasoning: str = ""
) -> Message:
    """Append a finished user/assistant pair to the branch on screen; returns the reply."""
    question_message = Message.objects.create(
        conversation=conversation,
        parent=conversation.active_leaf,
        role=Message.Role.USER,
        content=question,
    )
    reply = Message.objects.create(
        conversation=conversation,
        parent=question_message,
        role=Message.Role.ASSISTANT,
        content=answer,
        content_html=markdown_to_html(answer),
        reasoning=reasoning,
        model="anthropic/claude-sonnet-4.5",
        prompt_tokens=10,
        completion_tokens=5,
        cost_usd=Decimal("0.000123"),
    )
    conversation.active_leaf = reply
    conversation.save()
    # What the app writes for every reply: its settled line in the usage ledger.
    UsageRecord.objects.create(
        user=conversation.owner,
        username=conversation.owner.get_username(),
        conversation_uuid=conversation.id,
        message_uuid=reply.id,
        model=reply.model,
        prompt_tokens=reply.prompt_tokens,
        completion_tokens=reply.completion_tokens,
        cost_usd=reply.cost_usd,
        status=reply.status,
        started_at=reply.created_at,
        settled_at=reply.created_at,
    )
    return reply
