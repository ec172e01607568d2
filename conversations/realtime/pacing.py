"""The reply's text as it streams, and how often it goes out.

Tokens are coalesced: what arrived since the last flush waits in `pending`, and one flush turns
it into one offset-stamped delta. Under load the process sends fewer, fuller frames rather than
falling behind (bench/REPORT.md).
"""

from dataclasses import dataclass, field

from django.conf import settings

# The render loop never spins faster than this, whatever CHAT_RENDER_INTERVAL says.
MIN_RENDER_PAUSE = 0.02


@dataclass(frozen=True, slots=True)
class Delta:
    offset: int
    text: str
    reasoning_offset: int
    reasoning: str


@dataclass
class StreamText:
    """Content and reasoning: what the viewers were sent, and what waits for the next flush."""

    content: list[str] = field(default_factory=list)
    content_length: int = 0
    reasoning: list[str] = field(default_factory=list)
    reasoning_length: int = 0
    pending_content: list[str] = field(default_factory=list)
    pending_reasoning: list[str] = field(default_factory=list)

    def has_pending(self) -> bool:
        return bool(self.pending_content or self.pending_reasoning)

    def take_pending(self) -> Delta | None:
        """Move the pending text into the sent text; the delta that carries it."""
        if not self.has_pending():
            return None
        text = "".join(self.pending_content)
        reasoning = "".join(self.pending_reasoning)
        self.pending_content.clear()
        self.pending_reasoning.clear()
        delta = Delta(self.content_length, text, self.reasoning_length, reasoning)
        if text:
            self.content.append(text)
            self.content_length += len(text)
        if reasoning:
            self.reasoning.append(reasoning)
            self.reasoning_length += len(reasoning)
        return delta

    def lengths(self) -> tuple[int, int]:
        return self.content_length, self.reasoning_length

    def content_text(self) -> str:
        return "".join(self.content)

    def reasoning_text(self) -> str:
        return "".join(self.reasoning)


def flush_pause(*, streaming: int) -> float:
    """The flush interval, stretched under load: the process sends at most
    CHAT_FRAMES_PER_SECOND deltas a second across all its `streaming` replies, up to
    CHAT_FLUSH_INTERVAL_MAX apart. Each frame costs the same whatever it carries, so with
    hundreds of replies streaming, fewer and fuller frames keep every one of them flowing."""
    interval: float = settings.CHAT_FLUSH_INTERVAL
    return min(
        max(interval, streaming / settings.CHAT_FRAMES_PER_SECOND),
        max(interval, settings.CHAT_FLUSH_INTERVAL_MAX),
    )


def render_pause(*, last_render: float, streaming: int) -> float:
    """A slow render (a long reply) stretches the interval rather than hog a thread, and so
    does load: the process renders at most CHAT_RENDERS_PER_SECOND times a second across all
    its replies, so with many streaming each one's Markdown comes round less often (their text
    still streams at full rate)."""
    return max(
        settings.CHAT_RENDER_INTERVAL,
        MIN_RENDER_PAUSE,
        2 * last_render,
        streaming / settings.CHAT_RENDERS_PER_SECOND,
    )


class CheckpointClock:
    """When the partial reply is next due in the database (every CHAT_CHECKPOINT_INTERVAL),
    and how much of it the last checkpoint held."""

    def __init__(self, *, interval: float) -> None:
        self.interval = interval
        self.last = 0.0
        # (content, reasoning) lengths at the last checkpoint.
        self.saved = (0, 0)

    def reset(self, now: float) -> None:
        self.last = now

    def is_due(self, now: float) -> bool:
        return now - self.last >= self.interval

    def due_in(self, now: float) -> float:
        return self.last + self.interval - now

    def taken(self, now: float, lengths: tuple[int, int]) -> None:
        self.last, self.saved = now, lengths
