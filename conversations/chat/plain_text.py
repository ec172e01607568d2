"""Markdown reduced to the words a reader sees, for one-line excerpts (search snippets)."""

import re

_FENCE = re.compile(r"^\s*(```|~~~).*$", re.MULTILINE)
_IMAGE_OR_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_LINE_MARKERS = re.compile(r"^\s{0,3}(?:#{1,6}\s+|>\s?|[-*+]\s+|\d+[.)]\s+|\|)", re.MULTILINE)
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(?:\|\s*:?-{3,}:?\s*)*\|?\s*$", re.MULTILINE)
_EMPHASIS = re.compile(r"(\*{1,3}|~~|`+)(?=\S)(.+?)(?<=\S)\1")
# Underscores only at word edges, so snake_case_names keep theirs.
_UNDERSCORE_EMPHASIS = re.compile(r"(?<!\w)(_{1,3})(?=\S)(.+?)(?<=\S)\1(?!\w)")
_PIPES = re.compile(r"\s*\|\s*")


def markdown_plain(text: str) -> str:
    """The text without Markdown syntax: code fences, emphasis, links, headings, quotes, list
    and table markers go; their words stay."""
    text = _FENCE.sub("", text)
    text = _TABLE_RULE.sub("", text)
    text = _IMAGE_OR_LINK.sub(r"\1", text)
    text = _LINE_MARKERS.sub("", text)
    for _ in range(2):  # nested emphasis (**bold _and italic_**)
        text = _UNDERSCORE_EMPHASIS.sub(r"\2", _EMPHASIS.sub(r"\2", text))
    text = _PIPES.sub(" ", text)
    return " ".join(text.split())
