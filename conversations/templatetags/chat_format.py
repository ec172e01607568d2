from django import template

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
