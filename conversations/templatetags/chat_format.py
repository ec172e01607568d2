from django import template
from django.conf import settings

register = template.Library()


@register.filter
def duration(milliseconds: int | None) -> str:
    """850 ms, 2.3 s, 1 min 5 s: short enough for the line under a reply."""
    if milliseconds is None:
        return ""
    if milliseconds < 1000:
        return f"{milliseconds} ms"
    seconds = milliseconds / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


@register.filter
def http_url(url: object) -> str:
    """The URL if it is http(s), else "": a citation from upstream must never become a
    `javascript:` or `data:` link."""
    text = str(url or "").strip()
    return text if text.lower().startswith(("https://", "http://")) else ""


@register.filter
def content_window(message: object) -> dict[str, object] | None:
    """The first window of a reply too long to show whole (see CHAT_MESSAGE_WINDOW_CHARS), or
    None when it is shown whole. While it streams, the deltas stop at the same size."""
    content = str(getattr(message, "content", "") or "")
    size = settings.CHAT_MESSAGE_WINDOW_CHARS
    if len(content) <= size:
        return None
    return {"text": content[:size], "shown": size, "total": len(content)}
