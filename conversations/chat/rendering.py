"""Turn chat text (user input and model replies) into HTML that is safe to insert into the page.

Security model
--------------
Model output is untrusted: a prompt-injected reply can contain anything a user could type.
Three independent layers keep it inert:

1. markdown-it runs with ``html=False``, so raw HTML in the source is emitted as escaped text
   and its own link validator refuses ``javascript:``/``vbscript:``/``file:``/``data:`` URLs.
2. The rendered document is passed through an nh3 (ammonia) allowlist: only structural tags,
   ``href``/``title`` on links, ``start`` on ordered lists and a fixed set of alignment classes
   on table cells survive; URLs must be absolute http/https/mailto. No ``id``, ``style``,
   ``on*``, ``hx-*``, ``ws-*`` or ``data-*`` attribute can get through, which matters because
   the page runs htmx and any surviving ``hx-*`` attribute would be live.
3. Code blocks need a ``<button>`` that the allowlist (rightly) forbids. So each fence is
   highlighted and sanitised on its own, the document carries an unguessable per-call
   placeholder instead, and the fixed trusted wrapper is substituted only after the document
   has been sanitised. The only interpolated value in that wrapper is a language label
   restricted to ``[A-Za-z0-9_+-]{0,30}``.

Images are never emitted: ``<img>`` in a chat transcript is a tracking-pixel / data-URL vector,
so Markdown images are rendered as a plain link to the image instead.

The streaming/plain-text path (:func:`plain_text_to_html`) only escapes; the message container
is expected to use ``white-space: pre-wrap`` so newlines display without ``<br>``.
"""

from __future__ import annotations

import functools
import html
import itertools
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import nh3
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexer import Lexer
from pygments.lexers import find_lexer_class_by_name
from pygments.styles import get_style_by_name
from pygments.token import STANDARD_TYPES
from pygments.util import ClassNotFound

__all__ = [
    "MarkdownUpdate",
    "StreamingMarkdown",
    "markdown_to_html",
    "plain_text_to_html",
    "pygments_css",
    "write_pygments_css",
]

HIGHLIGHT_CSS_CLASS = "hl"
LIGHT_STYLE = "default"
DARK_STYLE = "github-dark"

# Pygments is the slowest stage per character, so each render gets a highlighting budget; once
# it is spent, remaining blocks are shown as plain escaped text. The per-block charge bounds the
# fixed per-call overhead when a reply holds thousands of tiny blocks.
HIGHLIGHT_BUDGET_CHARS = 60_000
HIGHLIGHT_BLOCK_COST = 256

_LANG_RE = re.compile(r"[A-Za-z0-9_+-]{0,30}")
_ALIGN_CLASSES: Final[Mapping[str, str]] = {
    "text-align:left": "align-left",
    "text-align:center": "align-center",
    "text-align:right": "align-right",
}

_DOC_TAGS: Final = frozenset(
    {
        "p",
        "br",
        "hr",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "strong",
        "em",
        "del",
        "s",
        "code",
        "blockquote",
        "ul",
        "ol",
        "li",
        "a",
        "table",
        "thead",
        "tbody",
        "tr",
        "th",
        "td",
    }
)

# Relative URLs are denied rather than passed through: they would resolve against this app's
# origin (e.g. a model-written link to a state-changing admin URL) and cover "//evil" tricks.
_DOC_CLEANER = nh3.Cleaner(
    tags=_DOC_TAGS,
    clean_content_tags={"script", "style"},
    attributes={"a": {"href", "title"}, "ol": {"start"}},
    allowed_classes={"th": set(_ALIGN_CLASSES.values()), "td": set(_ALIGN_CLASSES.values())},
    url_schemes={"http", "https", "mailto"},
    url_relative="deny",
    link_rel="noopener noreferrer",
    set_tag_attribute_values={"a": {"target": "_blank"}},
    strip_comments=True,
)

# Pygments output is already escaped, but its class names come from lexer token types; pinning
# them to the standard set keeps the code fragment's attack surface to span+class.
_PYGMENTS_CLASSES: Final = frozenset(cls for cls in STANDARD_TYPES.values() if cls)
_CODE_CLEANER = nh3.Cleaner(
    tags={"span"},
    attributes={},
    allowed_classes={"span": _PYGMENTS_CLASSES},
    link_rel=None,
    strip_comments=True,
)

# nowrap: the <pre><code> wrapper is ours so the language class and structure stay uniform
# between highlighted and unhighlighted blocks.
_FORMATTER = HtmlFormatter(nowrap=True, cssclass=HIGHLIGHT_CSS_CLASS)


@functools.lru_cache(maxsize=256)
def _lexer_class_for(lang: str) -> type[Lexer] | None:
    # Only an exact alias lookup: guessing is slow and makes output depend on content heuristics.
    if not lang:
        return None
    try:
        return find_lexer_class_by_name(lang)
    except ClassNotFound:
        return None


def _lexer_for(lang: str) -> Lexer | None:
    lexer_class = _lexer_class_for(lang.lower())
    # A fresh instance per block because rendering may run in several threads at once and not
    # every lexer is guaranteed stateless; stripnl=False keeps leading blank lines as written.
    return lexer_class(stripnl=False, ensurenl=True) if lexer_class else None


def _language_label(info: str) -> str:
    words = info.split(maxsplit=1)
    lang = words[0] if words else ""
    return lang if _LANG_RE.fullmatch(lang) else ""


def _code_inner_html(code: str, lang: str, env: EnvType) -> str:
    lexer = _lexer_for(lang)
    cost = len(code) + HIGHLIGHT_BLOCK_COST
    if lexer is None or cost > env["highlight_budget"]:
        return html.escape(code, quote=False)
    env["highlight_budget"] -= cost
    return _CODE_CLEANER.clean(highlight(code, lexer, _FORMATTER))


def _codeblock_html(code: str, lang: str, env: EnvType) -> str:
    # lang is already restricted to [A-Za-z0-9_+-]; escaping is belt and braces.
    label = html.escape(lang, quote=True)
    code_class = f' class="language-{label}"' if label else ""
    return (
        '<div class="codeblock">'
        '<div class="codeblock-bar">'
        f'<span class="codeblock-lang">{label}</span>'
        '<button type="button" class="copy-code" aria-label="Copy code">Copy</button>'
        "</div>"
        f'<pre class="{HIGHLIGHT_CSS_CLASS}"><code{code_class}>'
        f"{_code_inner_html(code, lang, env)}"
        "</code></pre>"
        "</div>"
    )


class _ChatRenderer(RendererHTML):
    """Renderer whose output is shaped for the sanitiser and the code-block placeholders."""

    def fence(self, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
        token = tokens[idx]
        return self._code_placeholder(token.content, _language_label(token.info), env)

    def code_block(
        self, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
    ) -> str:
        return self._code_placeholder(tokens[idx].content, "", env)

    @staticmethod
    def _code_placeholder(code: str, lang: str, env: EnvType) -> str:
        blocks: list[str] = env["codeblocks"]
        blocks.append(_codeblock_html(code, lang, env))
        # Bare text at block level: nh3 keeps it verbatim and it cannot collide with user text
        # because the nonce is fresh per call.
        return f"{env['nonce']}x{len(blocks) - 1}x\n"

    def th_open(self, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
        return self._cell_open(tokens, idx, options, env)

    def td_open(self, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
        return self._cell_open(tokens, idx, options, env)

    def _cell_open(
        self, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
    ) -> str:
        # style attributes are banned outright, so alignment travels as a fixed class instead.
        token = tokens[idx]
        style = token.attrs.pop("style", None)
        align_class = _ALIGN_CLASSES.get(str(style)) if style is not None else None
        if align_class:
            token.attrSet("class", align_class)
        return self.renderToken(tokens, idx, options, env)

    def link_open(
        self, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
    ) -> str:
        env["link_depth"] = env.get("link_depth", 0) + 1
        return self.renderToken(tokens, idx, options, env)

    def link_close(
        self, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
    ) -> str:
        env["link_depth"] = max(0, env.get("link_depth", 0) - 1)
        return self.renderToken(tokens, idx, options, env)

    def image(self, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
        token = tokens[idx]
        alt = self.renderInlineAsText(token.children or [], options, env)
        src = str(token.attrGet("src") or "")
        text = escapeHtml(alt or src or "image")
        # An anchor inside an anchor would be split apart by the HTML parser; inside a link the
        # link itself already goes somewhere, so the image degrades to its alt text.
        if env.get("link_depth", 0) > 0 or not src:
            return text
        title = token.attrGet("title")
        title_attr = f' title="{escapeHtml(str(title))}"' if title else ""
        return f'<a href="{escapeHtml(src)}"{title_attr}>{text}</a>'


def _build_markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "typographer": False}, renderer_cls=_ChatRenderer)
    md.enable(["table", "strikethrough"])
    return md


_MD = _build_markdown()


def _new_env(nonce: str, highlight_budget: int) -> dict[str, Any]:
    return {
        "codeblocks": [],
        "nonce": nonce,
        "link_depth": 0,
        "highlight_budget": highlight_budget,
    }


def _tokens_to_html(tokens: Sequence[Token], env: EnvType) -> str:
    """Render, sanitise and put the trusted code-block wrappers in place. The placeholders of
    one call are consumed by it, so env can carry on to the next slice of the same document
    (only the highlighting budget is shared, in document order)."""
    rendered = _MD.renderer.render(tokens, _MD.options, env)
    cleaned = _DOC_CLEANER.clean(rendered)
    blocks: list[str] = env["codeblocks"]
    env["codeblocks"] = []
    if not blocks:
        return cleaned
    nonce = env["nonce"]

    def substitute(match: re.Match[str]) -> str:
        index = int(match.group(1))
        return blocks[index] if index < len(blocks) else ""

    return re.sub(rf"{nonce}x(\d+)x", substitute, cleaned)


def _fresh_nonce() -> str:
    return "cb" + secrets.token_hex(12)


def markdown_to_html(text: str) -> str:
    """Model/user Markdown → sanitised HTML safe to insert into the page.

    Fenced and indented code blocks become::

        <div class="codeblock"><div class="codeblock-bar"><span class="codeblock-lang">python</span>
        <button type="button" class="copy-code" aria-label="Copy code">Copy</button></div>
        <pre class="hl"><code class="language-python">…pygments spans…</code></pre></div>

    (without the line breaks). Math such as ``$x^2$`` is not interpreted and passes through as
    whatever CommonMark makes of it.
    """
    env = _new_env(_fresh_nonce(), HIGHLIGHT_BUDGET_CHARS)
    return _tokens_to_html(_MD.parse(text, env), env)


# markdown-it's own line splitting (its "normalize" core rule), so line numbers in token maps
# can be turned back into offsets in the text as written.
_LINE_BREAK = re.compile(r"\r\n?|\n")


class StreamingMarkdown:
    """The Markdown of one reply while it streams, re-rendering only what may still change.

    ``render(text)`` is called with the reply so far, each call with a longer text. Top-level
    blocks that no later text can change are rendered once and kept as sanitised HTML; each
    call parses and renders only the rest (in practice the last, unfinished block), so the cost
    of a call does not grow with the reply. Every call returns exactly what
    :func:`markdown_to_html` returns for the same text, byte for byte.

    A block is final once a later top-level block starts on a complete line at column 0 after
    a blank line: CommonMark closes every open container there, except a list when that line
    continues it, and then the parser does not show a new block at that line. Link reference
    definitions are the one thing that reaches backwards (a definition lower down changes a
    link higher up), so a reply that has any is rendered whole every time. A text that does not
    continue the previous one starts over.

    One object per reply; calls must not overlap (they may run in a worker thread).
    """

    def __init__(self) -> None:
        self._start_over()

    def _start_over(self) -> None:
        self._nonce = _fresh_nonce()
        self._final_text = ""
        self._final_html: list[str] = []
        self._budget_left = HIGHLIGHT_BUDGET_CHARS
        self._whole_every_time = False

    @property
    def final_length(self) -> int:
        """How much of the text is rendered for good (for tests and the benchmark)."""
        return len(self._final_text)

    def render(self, text: str) -> str:
        """The whole HTML of `text`, as :func:`markdown_to_html` would give it."""
        update = self.update(text)
        if self._whole_every_time:
            return update.unfinished
        return "".join(self._final_html) + update.unfinished

    def update(self, text: str) -> MarkdownUpdate:
        """What changed since the previous call, so a page can keep the finished blocks it
        already shows and replace only the rest: append `finished`, then replace what follows
        it with `unfinished` (after clearing everything first when `restart` is set)."""
        if self._whole_every_time:
            return MarkdownUpdate(finished="", unfinished=markdown_to_html(text), restart=True)
        restart = not text.startswith(self._final_text)
        if restart:
            self._start_over()
        start = len(self._final_text)
        rest = text[start:]
        env = _new_env(self._nonce, self._budget_left)
        tokens = _MD.parse(rest, env)
        if env.get("references"):
            self._whole_every_time = True
            return MarkdownUpdate(finished="", unfinished=markdown_to_html(text), restart=True)
        finished = ""
        split = _last_final_boundary(rest, tokens)
        if split is not None:
            token_index, offset = split
            finished = _tokens_to_html(tokens[:token_index], env)
            self._final_html.append(finished)
            self._final_text = text[: start + offset]
            self._budget_left = env["highlight_budget"]
            tokens = tokens[token_index:]
        return MarkdownUpdate(
            finished=finished, unfinished=_tokens_to_html(tokens, env), restart=restart
        )


@dataclass(frozen=True, slots=True)
class MarkdownUpdate:
    """One step of a streaming reply's HTML: see :meth:`StreamingMarkdown.update`."""

    finished: str
    unfinished: str
    restart: bool


def _last_final_boundary(text: str, tokens: Sequence[Token]) -> tuple[int, int] | None:
    """The last top-level block start in ``text`` before which nothing can change any more,
    as (index of its first token, offset of its line), or None."""
    starts = [
        (index, token.map[0])
        for index, token in enumerate(tokens)
        if token.level == 0 and token.nesting >= 0 and token.map is not None
    ]
    if len(starts) < 2:
        return None
    line_starts = [0] + [match.end() for match in _LINE_BREAK.finditer(text)]
    line_starts.append(len(text))
    # The last line may still be being written.
    complete_lines = len(line_starts) - 2
    for (previous_index, _), (index, line) in reversed(list(itertools.pairwise(starts))):
        line_text = text[line_starts[line] : line_starts[line + 1]]
        before = text[line_starts[line - 1] : line_starts[line]]
        if line_text[:1] in ("", " ", "\t", "\r", "\n") or before.strip(" \t\r\n"):
            continue
        # Only a list reaches past a blank line to a line at column 0, when that line is one of
        # its items; once the line is complete the parser has decided, and it says a new block.
        if line >= complete_lines and tokens[previous_index].type in _LIST_OPENINGS:
            continue
        return index, line_starts[line]
    return None


_LIST_OPENINGS = frozenset({"bullet_list_open", "ordered_list_open"})


def plain_text_to_html(text: str) -> str:
    """Escape text for display while a reply streams, and for user messages.

    Only escapes (``& < > " '``); newlines are left as-is because the message container is
    styled ``white-space: pre-wrap``, which keeps streamed chunks cheap to append.
    """
    return html.escape(text.replace("\x00", "\ufffd"), quote=True)


def _style_block(style_name: str, selectors: list[str]) -> str:
    formatter = HtmlFormatter(style=get_style_by_name(style_name), cssclass=HIGHLIGHT_CSS_CLASS)
    # Not get_style_defs(): it adds a bare `pre { line-height }` rule for line numbers, which
    # would restyle every <pre> on the page. These two are untyped in types-Pygments.
    lines = formatter.get_background_style_defs(selectors)  # type: ignore[no-untyped-call]
    lines += formatter.get_token_style_defs(selectors)  # type: ignore[no-untyped-call]
    return "\n".join(lines)


def _indent(block: str) -> str:
    return "\n".join(f"  {line}" for line in block.splitlines())


def pygments_css() -> str:
    """Stylesheet text for highlighted code in both themes.

    The three scopes are mutually exclusive so one theme's rules for a token type the other
    theme leaves unstyled never leak across: explicit ``data-theme`` on ``<html>`` wins, and
    without it the OS preference decides.
    """
    hl = f".{HIGHLIGHT_CSS_CLASS}"
    light_explicit = _style_block(LIGHT_STYLE, [f"[data-theme=light] {hl}"])
    light_auto = _style_block(LIGHT_STYLE, [f":root:not([data-theme=dark]) {hl}"])
    dark_explicit = _style_block(DARK_STYLE, [f"[data-theme=dark] {hl}"])
    dark_auto = _style_block(DARK_STYLE, [f":root:not([data-theme=light]) {hl}"])
    return (
        "/* Generated by conversations.chat.rendering.write_pygments_css(); do not edit. */\n"
        f"/* Light: Pygments '{LIGHT_STYLE}'. Dark: Pygments '{DARK_STYLE}'. */\n\n"
        f"{light_explicit}\n\n"
        "@media not all and (prefers-color-scheme: dark) {\n"
        f"{_indent(light_auto)}\n"
        "}\n\n"
        f"{dark_explicit}\n\n"
        "@media (prefers-color-scheme: dark) {\n"
        f"{_indent(dark_auto)}\n"
        "}\n"
    )


def write_pygments_css(path: Path) -> None:
    """(Re)generate the highlighting stylesheet, e.g. ``static/css/pygments.css``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(pygments_css(), encoding="utf-8")
