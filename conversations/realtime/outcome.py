"""What the upstream said about a reply besides its text: usage, finish reason, citations,
refusal, timings; turned into the `ReplyOutcome` the final save writes."""

from dataclasses import dataclass, field

from conversations.accounts.limits import UsageEstimate
from conversations.chat import services
from conversations.gateway.events import (
    Citation,
    Event,
    Finished,
    ParameterNotSent,
    Refusal,
    Usage,
)


@dataclass
class UpstreamOutcome:
    usage: Usage | None = None
    finish_reason: str = ""
    citations: list[Citation] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    first_token_at: float | None = None
    # Parameters the request did not carry, in words; kept on the reply.
    notes: list[str] = field(default_factory=list)
    raw_event: str = ""

    def first_text(self, now: float) -> None:
        if self.first_token_at is None:
            self.first_token_at = now

    def record(self, event: Event) -> None:
        if isinstance(event, Usage):
            self.usage = event
        elif isinstance(event, Finished):
            self.finish_reason = event.reason
        elif isinstance(event, Citation):
            self.citations.append(event)
        elif isinstance(event, Refusal):
            self.refusal.append(event.text)
        elif isinstance(event, ParameterNotSent) and event.sentence not in self.notes:
            self.notes.append(event.sentence)

    def outcome(
        self,
        *,
        status: str,
        error: str,
        content: str,
        reasoning: str,
        started_at: float,
        now: float,
        estimate: UsageEstimate | None = None,
    ) -> services.ReplyOutcome:
        usage = self.usage
        prompt_tokens = usage.prompt_tokens if usage else None
        completion_tokens = usage.completion_tokens if usage else None
        if estimate is not None:
            prompt_tokens, completion_tokens = estimate.prompt_tokens, estimate.completion_tokens
        first_token_ms = (
            round((self.first_token_at - started_at) * 1000)
            if self.first_token_at is not None
            else None
        )
        return services.ReplyOutcome(
            status=status,
            content=content,
            reasoning=reasoning,
            finish_reason=self.finish_reason,
            error=error,
            refusal="".join(self.refusal),
            citations=[{"url": c.url, "title": c.title} for c in self.citations],
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            reasoning_tokens=usage.reasoning_tokens if usage else None,
            cached_tokens=usage.cached_tokens if usage else None,
            cost_usd=usage.cost_usd if usage else None,
            usage_estimated=estimate is not None,
            time_to_first_token_ms=first_token_ms,
            duration_ms=round((now - started_at) * 1000),
            request_notes=list(self.notes),
            raw_event=self.raw_event,
        )
